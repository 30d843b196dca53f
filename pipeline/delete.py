"""`segment-loops delete`: contacts -> deleted from Loops, as a user-deletion request asks.

The pipeline, step by step:
  1. ReadDeletions     the --input files (local, gs://, s3://; gzip by the .gz suffix), line
                       by line: a userId, an email (a line with an @) or a Segment delete
                       message as JSON -> a contact deletion (failures: read, parse)
  2. OncePerContact    a contact named more than once is deleted once, at its latest
                       deletion's time
  3. WriteToLoops      POST /v1/contacts/delete with exactly one of userId or email, a
                       string, as Loops documents it; under the rate limit, retried like
                       every request; a 404 (no such contact) counts as already gone, not
                       as a failure (failures: deliver); with --dry_run, JSON lines instead
  4. WriteFailures     every failure record, into one Avro sink

A deletion is dated by when this command starts, or by a delete message's own
time. With --state, each deletion Loops confirms (deleted, or already gone)
is recorded as a tombstone (transforms/state/facts.py): a backfill with that
state then sends none of the contact's data from before the deletion, and
what arrives after it as for a new contact. Without --state a later backfill
of the archive would create the contact again, and the summary says so.

Counters: `delete/lines` = `delete/blank_lines` + `delete/invalid` +
`delete/duplicates` + `delete/requests`; `delete/<reason>` per reason a
line is invalid (transforms/segment/deletions.py); then the writers' `deliver/...`,
where `deliver/already_gone` is the deletions Loops found nothing for.
"""
import argparse
import sys
import time
from dataclasses import dataclass, replace
from typing import Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import lifecycle
from pipeline import state as sync
from pipeline import summary as run_summary
from pipeline.loops_options import (add_loops_options, connect_to_loops,
                                    require_secret_on_remote_runner)
from pipeline.options import (DEFAULT_BATCH_RUNNER, UsageError, job_parser, parse_job_args,
                              require_cloud_paths, runs_locally, set_default_runner)
from pipeline.selection import check_inputs_match
from pipeline.writable import require_writable
from transforms.core.metrics import BundleCounts
from transforms.core.records import ContactSequence, failure_record
from transforms.core.sinks import WriteDryRun, WriteFailures
from transforms.delivery.write import WriteToLoops, raise_if_key_rejected
from transforms.loops.connection import LoopsConnection
from transforms.segment.deletions import deletion_of_line
from transforms.segment.parse import Rejected, event_text
from transforms.segment.read import Unreadable, read_archive_file
from transforms.state.recorder import StateRecorder

DEFAULT_DEAD_LETTER = 'dead-letter-delete/'
DELETE_KEYS = {
    'read': 'delete/lines',
    'blank': 'delete/blank_lines',
    'invalid': 'delete/invalid',
    'duplicates': 'delete/duplicates',
    'deletions': 'delete/requests',
    'files': 'delete/files',
    'files_unreadable': 'read/unreadable_files',
}
# deletions == deleted + deleted_already_gone + delete_failed, when sent.
SENT_KEYS = {
    'deleted': 'deliver/delivered',
    'deleted_already_gone': 'deliver/already_gone',
    'delete_failed': 'deliver/failed',
    'retries': 'deliver/retries',
    'rate_limited': 'deliver/rate_limited',
}
DETAIL_PREFIXES = ('delete/', 'deliver/failed_', 'dead_letter/')


@dataclass(frozen=True)
class DeleteJob:
    """What one delete run does, validated before anything runs."""
    patterns: tuple
    now_ms: int
    dry_run: Optional[str]
    dead_letter: str
    summary_path: Optional[str]
    loops: Optional[LoopsConnection]
    state: Optional[str] = None
    recorder: Optional[StateRecorder] = None
    failures_ok: frozenset = frozenset()   # failure reasons the exit status accepts


def delete_parser() -> argparse.ArgumentParser:
    parser = job_parser('segment-loops delete', __doc__.split('\n\n')[0])
    group = parser.add_argument_group('input')
    group.add_argument(
        '--input', action='append', default=None, metavar='PATTERN',
        help='Files of the contacts to delete (repeatable): local paths, gs:// or s3://, with '
             'wildcards; .gz files are read through gzip. One a line: a userId, an email (a '
             'line with an @), or a Segment delete message as JSON ({"type": "delete", '
             '"userId": ...}). Blank lines are skipped.')
    group = parser.add_argument_group('outputs')
    group.add_argument(
        '--dry_run', default=None, metavar='PREFIX',
        help='Send nothing: write every deletion request that would be sent as JSON lines to '
             'files starting with PREFIX.')
    group.add_argument(
        '--dead_letter', default=DEFAULT_DEAD_LETTER, metavar='PREFIX',
        help='Failure records (schemas/failure.avsc) as Avro files under PREFIX: lines that '
             'name no contact, deletions Loops refused or that ran out of retries. Default: '
             f'{DEFAULT_DEAD_LETTER} (apart from a backfill\'s, which it would replace).')
    group.add_argument(
        '--summary', default=None, metavar='PATH',
        help='Write the run\'s counts as a JSON object to PATH (also printed as a table).')
    add_loops_options(parser)
    sync.add_state_options(parser, state_help=(
        'The sync state of the backfills (and streams) that send these contacts: each '
        'deletion Loops confirms is recorded there (a tombstone, digests only), so that a '
        'backfill with it never sends their data from before the deletion. Default: none (a '
        'later backfill would create them again).'))
    sync.add_lease_options(parser)
    lifecycle.add_failure_options(parser)
    return parser


def job_from_args(args, options: PipelineOptions, now_ms: Optional[int] = None) -> DeleteJob:
    """Validates what the user asked for; raises UsageError with what to fix."""
    if not args.input:
        raise UsageError('--input is required (a file of userIds or emails, one a line)')
    require_cloud_paths(options, {'--dead_letter': args.dead_letter, '--dry_run': args.dry_run})
    FileSystems.set_options(options)
    check_inputs_match(tuple(args.input))
    recorder = sync.recorder_from_args(args, options)
    if not args.dry_run:
        require_secret_on_remote_runner(args, options)
    return DeleteJob(
        patterns=tuple(args.input),
        now_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        dry_run=args.dry_run,
        dead_letter=args.dead_letter,
        summary_path=args.summary,
        loops=None if args.dry_run else connect_to_loops(args),
        state=args.state,
        # A dry run sends nothing, so it has nothing to record.
        recorder=None if args.dry_run else recorder,
        failures_ok=lifecycle.parse_failures_ok(args.failures_ok))


class _ReadDeletionFile(beam.DoFn):
    """path -> a LoopsRequest (a contact deletion) per line that names one;
    failure records tagged FAILED: of each line that does not (stage parse),
    of a file that cannot be read (further; stage read)."""
    FAILED = 'failed'

    def __init__(self, now_ms: int):
        self._now_ms = now_ms

    def setup(self):
        self._counts = BundleCounts()

    def process(self, path: str):
        self._counts['delete/files'] += 1
        for chunk in read_archive_file(path):
            if type(chunk) is Unreadable:
                self._counts['read/unreadable_files'] += 1
                yield beam.pvalue.TaggedOutput(self.FAILED, chunk.failure)
                continue
            for raw in chunk.events():
                self._counts['delete/lines'] += 1
                try:
                    deletion = deletion_of_line(raw.data, raw.where, self._now_ms)
                except Rejected as rejected:
                    self._counts['delete/invalid'] += 1
                    self._counts['delete/' + rejected.reason] += 1
                    yield beam.pvalue.TaggedOutput(self.FAILED, failure_record(
                        'parse', rejected.reason, rejected.message, event=event_text(raw.data),
                        source=raw.where))
                    continue
                if deletion is None:
                    self._counts['delete/blank_lines'] += 1
                else:
                    yield deletion

    def finish_bundle(self):
        self._counts.flush()


class ReadDeletions(beam.PTransform):
    """File patterns -> (contact deletions, failure records of the lines and
    files that are not read as one)."""

    def __init__(self, patterns: tuple, now_ms: int):
        super().__init__()
        self._patterns = list(patterns)
        self._now_ms = now_ms

    def expand(self, pbegin):
        read = (pbegin
                | 'Patterns' >> beam.Create(self._patterns)
                | 'MatchFiles' >> fileio.MatchAll()
                | 'Paths' >> beam.Map(lambda metadata: metadata.path)
                | 'ReadLines' >> beam.ParDo(_ReadDeletionFile(self._now_ms)).with_outputs(
                    _ReadDeletionFile.FAILED, main='deletions'))
        return read.deletions, read[_ReadDeletionFile.FAILED]


class _LatestPerContact(beam.DoFn):
    def setup(self):
        self._counts = BundleCounts()

    def process(self, grouped):
        contact, deletions = grouped
        deletions = list(deletions)
        self._counts['delete/requests'] += 1
        self._counts['delete/duplicates'] += len(deletions) - 1
        yield ContactSequence(contact, (max(deletions, key=lambda d: d.stamp),))

    def finish_bundle(self):
        self._counts.flush()


class OncePerContact(beam.PTransform):
    """Contact deletions -> ContactSequence of one deletion per contact, the
    latest (counted `delete/requests`; the others `delete/duplicates`)."""

    def expand(self, deletions):
        return (deletions
                | 'KeyByContact' >> beam.Map(lambda deletion: (deletion.contact, deletion))
                | 'GroupByContact' >> beam.GroupByKey()
                | 'Latest' >> beam.ParDo(_LatestPerContact()))


def build_delete(p: beam.Pipeline, job: DeleteJob) -> None:
    """Adds the deletions of `job` to `p`."""
    deletions, read_failed = p | 'ReadDeletions' >> ReadDeletions(job.patterns, job.now_ms)
    sequences = deletions | 'OncePerContact' >> OncePerContact()
    failures = [read_failed]
    if job.dry_run:
        (sequences,) | 'WriteDryRun' >> WriteDryRun(job.dry_run)
    else:
        written = sequences | 'WriteToLoops' >> WriteToLoops(job.loops, label='deletions',
                                                             recorder=job.recorder)
        failures.append(written.failures)
    (failures | 'AllFailures' >> beam.Flatten()
     | 'WriteFailures' >> WriteFailures(job.dead_letter))


def delete_summary(counters: dict, sent: bool) -> dict:
    """Counters -> the summary: the DELETE_KEYS figures, the SENT_KEYS ones
    when the run sent, then the invalid lines and the failures by reason."""
    keys = {**DELETE_KEYS, **SENT_KEYS, **run_summary.FAILURE_KEYS} if sent else {
        **DELETE_KEYS, **run_summary.FAILURE_KEYS}
    return run_summary.build_summary(counters, keys, DETAIL_PREFIXES)


def outcome_note(summary: dict, job: DeleteJob) -> str:
    """What the run did and what to do next, for a person."""
    lines = []
    if job.dry_run:
        lines.append(f'Dry run: {summary["deletions"]:,} deletions written to {job.dry_run} '
                     '(JSON lines); nothing was sent, nothing recorded.')
    else:
        lines.append(f'{summary["deleted"]:,} contacts deleted, '
                     f'{summary["deleted_already_gone"]:,} already gone (Loops had no such '
                     f'contact), {summary["delete_failed"]:,} failed.')
        if summary['delete_failed']:
            lines.append(f'The failures are under {job.dead_letter}: run this same command '
                         'again to retry them (a contact deleted since counts as already '
                         'gone); `segment-loops replay` never sends a deletion.')
    if summary['invalid']:
        lines.append(f'{summary["invalid"]:,} lines named no contact to delete: their failure '
                     f'records, with the reason, are under {job.dead_letter}.')
    if summary['files_unreadable']:
        lines.append(f'{summary["files_unreadable"]:,} files could not be read (further): '
                     f'their failure records are under {job.dead_letter}.')
    if job.dry_run:
        return '\n'.join(lines)
    if job.state:
        recorded = summary['deleted'] + summary['deleted_already_gone']
        lines.append(f'Sync state {job.state}: {recorded:,} deletions recorded. A backfill with '
                     'this --state sends none of their data from before the deletion; data '
                     'that arrives after it is sent as usual.')
    else:
        lines.append('No --state: a later backfill would create these contacts again from the '
                     'archive\'s history. Run delete with the backfill\'s --state to record the '
                     'deletions.')
    return '\n'.join(lines)


def run(argv=None, out=sys.stdout) -> dict:
    """Runs the deletions to completion; prints and returns the summary.
    Raises UsageError for options that can't be used, AuthError when Loops
    rejects the key (before the run, or during it: then after the summary is
    printed and written), lifecycle.Stopped after a stop by SIGINT or SIGTERM
    (the summary so far written)."""
    return _run(argv, out)[0]


def _run(argv, out) -> tuple:
    """-> (summary, DeleteJob)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, beam_args = parse_job_args(delete_parser(), argv)
    options = PipelineOptions(beam_args)
    set_default_runner(options, DEFAULT_BATCH_RUNNER)
    job = job_from_args(args, options)
    recording = job.recorder is not None
    require_writable(options, {'--state': job.state if recording else None,
                               '--dead_letter': job.dead_letter, '--dry_run': job.dry_run})
    again = lifecycle.command_line('delete', argv)
    with lifecycle.StopSignals('segment-loops delete') as signals:
        # A deletion recorded beside a backfill that read the state before it
        # would not stop that backfill from sending the contact again: the
        # state's lease keeps them apart.
        state = sync.open_state(args, options, None, 'delete', out, check=False) \
            if recording else None
        try:
            job = replace(job, recorder=state.recorder()) if state else job
            if job.loops is not None:
                print(f'Loops API key accepted (team: {job.loops.check_key()}).', file=out)
            p = beam.Pipeline(options=options)
            build_delete(p, job)
            signals.running(in_process=runs_locally(options))
            with sync.state_failures(state):
                result = p.run()
                lifecycle.wait_for_batch(result, again)
        finally:
            sync.release(state)
        counters = run_summary.pipeline_counters(result)
        summary = delete_summary(counters, sent=job.loops is not None)
        lifecycle.end_batch(
            signals, summary, title='delete summary', summary_path=job.summary_path, out=out,
            notes=(outcome_note(summary, job),
                   lifecycle.failure_report(summary, job.dead_letter,
                                            f'To delete them, run it again: {again}')),
            stop_line=(
                f'{summary.get("deleted", 0) + summary.get("deleted_already_gone", 0):,} of '
                f'{summary["deletions"]:,} deletions done; run it again to finish (a contact '
                f'already deleted is answered 404 and counted as already gone): {again}'))
        raise_if_key_rejected(counters)
        return summary, job


def main(argv: Optional[list] = None) -> int:
    """`segment-loops delete` (the arguments after `delete`) -> exit status:
    0, or EXIT_FAILURES when deletions failed (unless --failures_ok);
    UsageError, AuthError and lifecycle.Stopped are left to the caller."""
    summary, job = _run(argv, sys.stdout)
    return lifecycle.batch_exit_status('delete', summary, job.failures_ok)
