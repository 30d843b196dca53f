"""`segment-loops replay`: the requests of an earlier run's delivery failures -> Loops, again.

The pipeline, step by step:
  1. ReadFailures       the failure records (Avro) of --dead_letter
  2. SelectReplayable   stage `deliver` failures whose request is to be sent again:
                        retries_exhausted, stopped and key_rejected always, a 4xx refusal
                        (http_4xx) only with --include_permanent; every other record
                        is counted as skipped, by stage and reason
  3. GroupByContact     per phase and contact, the requests in the order they failed
  4. WriteToLoops       the phases of transforms/core/kinds.py in order (WriteContacts,
                        then WriteEvents once every upsert is done)
  5. WriteFailures      what fails again, as failure records under --replay_dead_letter

Which request is sent, and with which Idempotency-Key:
- A failure record is data anyone with access to its bucket can edit, so only
  requests of the kinds in transforms/core/kinds.py are sent, to `base_url` + the
  kind's own path, with only the headers this tool sets (`LoopsRequest.from_dict`
  rebuilds them from the kind). A record holding anything else is skipped and
  counted: `replay/skipped_deliver_foreign_request` for a request of a method
  and path this tool never makes (say, `DELETE /v1/contacts/update`),
  `replay/skipped_deliver_invalid_request` for one that can't be read back.
- Nor is a deletion ever sent again (`replay/skipped_deliver_deletion`): an
  edited record must not be able to delete a contact. A deletion that
  failed is done again by `segment-loops delete` with its input (a contact
  already deleted then counts as already gone).
- retries_exhausted and stopped (Loops may have applied it), key_rejected
  (Loops never processed it): the same Idempotency-Key, so an event that did
  reach Loops is answered 409 and counted as already delivered, never sent twice.
- A 4xx refusal: Loops may have spent the key on it, so an event is sent under
  a new key, `derived_key(key, failed_at)` (the same for the same record, so
  replaying one dead letter twice still sends it once); counted in
  `replay/rekeyed`.
- An event send by userId carries its fallback email beside its request
  (`fallback_email`): it is sent as the run sent it, by userId, and once
  more with the email only if Loops has no such contact (counted
  `deliver/sent_with_fallback_email`). A record of that re-send itself (its
  answer was lost) holds it with the email, under its own key: sent again
  as it was, it gets 409 if Loops applied it.
"""
import argparse
import dataclasses
import datetime
import json
import sys
from fnmatch import fnmatch
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import lifecycle
from pipeline import summary as run_summary
from pipeline.loops_options import (add_loops_options, connect_to_loops,
                                    require_secret_on_remote_runner)
from pipeline.options import (DEFAULT_BATCH_RUNNER, UsageError, job_parser, parse_job_args,
                              require_cloud_paths, runs_locally, set_default_runner)
from transforms.core.kinds import PHASES, kind_for
from transforms.core.metrics import NAMESPACE, CounterFamily
from transforms.core.records import ContactSequence, LoopsRequest, Stamp, derived_key
from transforms.core.sinks import DEAD_LETTER_PREFIX, WriteFailures, output_prefix
from transforms.delivery.write import WriteInPhases, phase_name, raise_if_key_rejected
from transforms.loops.connection import LoopsConnection
from transforms.loops.retry import KEY_REJECTED, RETRIES_EXHAUSTED, STOPPED, is_permanent_reason

DEFAULT_REPLAY_DEAD_LETTER = 'dead-letter-replay/'
# Sent again as they were: Loops may have applied them, or never processed them.
REPLAYED_AS_SENT = (RETRIES_EXHAUSTED, STOPPED, KEY_REJECTED)
SKIPPED_PREFIX = 'replay/skipped_'
REPLAY_KEYS = {'read': 'replay/read', 'skipped': 'replay/skipped',
               'replayed': 'replay/replayed'}
REKEYED = 'replay/rekeyed'
_GLOB_CHARACTERS = frozenset('*?[')
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class ForeignRequest(ValueError):
    """A record's request is valid JSON but not a kind of request this tool makes."""


class DeletionRequest(ValueError):
    """A record's request deletes a contact: never replayed."""


def failure_pattern(value: str) -> str:
    """A --dead_letter value -> the file pattern of its Avro failure files.

    The prefix given to a backfill's --dead_letter (`dead-letter/`, a
    directory, or a file name prefix) becomes the pattern of the files that
    run wrote; a pattern with wildcards or an .avro path is used as it is.
    """
    if _GLOB_CHARACTERS & set(value) or value.endswith('.avro'):
        return value
    return output_prefix(value, 'failures') + '*.avro'


def failure_files(patterns: list) -> list:
    """Every file matching the patterns, each once, sorted. UsageError naming
    the pattern when one matches nothing or cannot be listed."""
    files = set()
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # any file system's error, for a person to read
            raise UsageError(f'--dead_letter {pattern}: cannot list files: {error}') from None
        if not matched:
            raise UsageError(f'--dead_letter {pattern}: no failure files match')
        files.update(metadata.path for metadata in matched)
    return sorted(files)


def check_output_apart(output: str, patterns: list) -> None:
    """UsageError when the new failure files could land on the ones being read:
    writing them would replace the records of this replay's input."""
    first_file = output_prefix(output, 'failures') + '-00000-of-00001.avro'
    for pattern in patterns:
        if fnmatch(first_file, pattern):
            raise UsageError(
                f'--replay_dead_letter {output}: its files would match --dead_letter '
                f'{pattern} and replace the records being replayed; choose another prefix')


def skip_reason(record: dict, include_permanent: bool) -> Optional[str]:
    """Why a failure record is not replayed (e.g. 'parse_invalid_json',
    'deliver_http_400'), or None when its request is to be sent again.

    Only `deliver` failures hold a request; of those, REPLAYED_AS_SENT are
    always replayed and a 4xx refusal only with `include_permanent` (the data
    or the Loops account was fixed since).
    """
    stage, reason = record.get('stage'), record.get('reason')
    if not isinstance(stage, str) or not isinstance(reason, str):
        return 'not_a_failure_record'
    if stage != 'deliver':
        return f'{stage}_{reason}'
    if reason in REPLAYED_AS_SENT or (include_permanent and is_permanent_reason(reason)):
        return None if record.get('request') else 'deliver_no_request'
    return f'deliver_{reason}'


def request_of(record: dict) -> LoopsRequest:
    """A deliver failure record -> the request to send again, stamped with
    when it failed (so a contact's requests go in the order they failed).

    The body as it was; the headers rebuilt from the request's kind; a keyed
    request refused with a 4xx under a derived new Idempotency-Key. Raises
    ForeignRequest for a request of a kind this tool never makes,
    DeletionRequest for a deletion, ValueError, KeyError or TypeError for one
    that can't be read."""
    as_sent = json.loads(record['request'])
    if (isinstance(as_sent, dict) and isinstance(as_sent.get('method'), str)
            and isinstance(as_sent.get('path'), str)):
        kind = kind_for(as_sent['method'], as_sent['path'])
        if kind is None:
            raise ForeignRequest(f'{as_sent["method"]} {as_sent["path"]} is not a request this '
                                 'tool makes')
        if kind.removes_contact:
            raise DeletionRequest(f'{kind.method} {kind.path} deletes a contact: run '
                                  '`segment-loops delete` again instead')
    request = LoopsRequest.from_dict(as_sent, source=record.get('source') or '')
    failed_at = _epoch_ms(record.get('failed_at'))
    if needs_new_key(request, record['reason']):
        new_key = derived_key(request.idempotency_key, str(failed_at))
        request = dataclasses.replace(request, headers=request.spec.headers(new_key))
    return dataclasses.replace(request, stamp=Stamp(failed_at, 0, ''))


def needs_new_key(request: LoopsRequest, reason: str) -> bool:
    """Whether a replay sends `request`, which failed for `reason`, under a
    new Idempotency-Key: a keyed request Loops refused (it may have spent the key)."""
    return request.spec.keyed and is_permanent_reason(reason)


def _epoch_ms(value: object) -> int:
    """`failed_at` as Avro readers give it (a UTC datetime, or epoch ms) -> epoch ms."""
    if isinstance(value, datetime.datetime):
        return (value - _EPOCH) // datetime.timedelta(milliseconds=1)
    return value if isinstance(value, int) else 0


def replayable(record: dict, include_permanent: bool) -> tuple:
    """A failure record -> (its request to send again, None), or (None, why
    it is skipped: a skip_reason, 'deliver_foreign_request',
    'deliver_deletion' or 'deliver_invalid_request')."""
    reason = skip_reason(record, include_permanent)
    if reason is not None:
        return None, reason
    try:
        return request_of(record), None
    except ForeignRequest:
        return None, 'deliver_foreign_request'
    except DeletionRequest:
        return None, 'deliver_deletion'
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, 'deliver_invalid_request'


class _SelectReplayable(beam.DoFn):
    """Failure record -> its LoopsRequest, or nothing (counted by why)."""

    def __init__(self, include_permanent: bool):
        self._include_permanent = include_permanent

    def setup(self):
        self._read = Metrics.counter(NAMESPACE, REPLAY_KEYS['read'])
        self._replayed = Metrics.counter(NAMESPACE, REPLAY_KEYS['replayed'])
        self._rekeyed = Metrics.counter(NAMESPACE, REKEYED)
        self._skipped = Metrics.counter(NAMESPACE, REPLAY_KEYS['skipped'])
        self._skipped_by_reason = CounterFamily(SKIPPED_PREFIX)

    def process(self, record):
        self._read.inc()
        request, reason = replayable(record, self._include_permanent)
        if request is not None:
            self._replayed.inc()
            if needs_new_key(request, record['reason']):
                self._rekeyed.inc()
            yield request
            return
        self._skipped.inc()
        self._skipped_by_reason.inc(reason)


def in_failure_order(keyed) -> tuple:
    """((phase, contact), requests) -> (phase, the contact's ContactSequence
    of them in the order they failed)."""
    (phase, contact), requests = keyed
    return phase, ContactSequence(contact, tuple(sorted(requests, key=lambda r: r.stamp)))


class SequencesInFailureOrder(beam.PTransform):
    """LoopsRequest -> {phase: PCollection of ContactSequence}, one sequence
    per phase and contact, its requests in the order they failed."""

    def expand(self, requests):
        by_phase = (
            requests
            | 'KeyByPhaseAndContact' >> beam.Map(lambda r: ((r.spec.phase, r.contact), r))
            | 'GroupByKey' >> beam.GroupByKey()
            | 'InFailureOrder' >> beam.Map(in_failure_order)
            | 'SplitByPhase' >> beam.Partition(
                lambda item, _count: PHASES.index(item[0]), len(PHASES)))
        return {phase: by_phase[index] | f'{phase_name(phase)}Sequences' >> beam.Values()
                for index, phase in enumerate(PHASES)}


def build_replay(p: beam.Pipeline, files: list, include_permanent: bool,
                 loops: LoopsConnection, dead_letter: str) -> None:
    """Adds the replay of the failure records in `files` to `p`."""
    requests = (
        p
        | 'FailureFiles' >> beam.Create(files)
        | 'ReadFailures' >> beam.io.ReadAllFromAvro()
        | 'SelectReplayable' >> beam.ParDo(_SelectReplayable(include_permanent)))
    written = (requests
               | 'GroupByContact' >> SequencesInFailureOrder()
               | 'WriteToLoops' >> WriteInPhases(loops, label_prefix='replayed '))
    written.failures | 'WriteFailures' >> WriteFailures(dead_letter)


def replay_summary(counters: dict) -> dict:
    """Counters -> the summary: read, skipped, replayed, rekeyed, recovered (delivered
    or already delivered), delivery_failed, not_sent (left by a stop), retries,
    rate_limited, dead_lettered, then the skipped, failed and dead-lettered
    counts by reason.
    read == skipped + replayed; replayed == recovered + delivery_failed + not_sent."""
    figures = run_summary.build_summary(
        counters, {**REPLAY_KEYS, **run_summary.DELIVERY_KEYS, **run_summary.FAILURE_KEYS},
        detail_prefixes=(SKIPPED_PREFIX, 'deliver/failed_', DEAD_LETTER_PREFIX,
                         run_summary.SENT_WITH_FALLBACK_EMAIL))
    summary = {key: figures.pop(key) for key in REPLAY_KEYS}
    summary['rekeyed'] = int(counters.get(REKEYED, 0))
    summary['recovered'] = figures.pop('delivered') + figures.pop('already_delivered')
    summary.update(figures)
    return summary


def replay_parser() -> argparse.ArgumentParser:
    """The options of `segment-loops replay` (Beam's options pass through)."""
    parser = job_parser('segment-loops replay', __doc__.split('\n\n')[0])
    group = parser.add_argument_group('replay')
    group.add_argument(
        '--dead_letter', action='append', default=None, metavar='PATTERN',
        help='Failure records to replay (repeatable): the prefix the earlier run was given '
             '(e.g. dead-letter/), or a pattern of its Avro files (local, gs://, s3://).')
    group.add_argument(
        '--include_permanent', action='store_true', default=False,
        help='Also replay requests Loops rejected with a 4xx answer (after fixing their data '
             'or the Loops account). Default: only those that ran out of retries.')
    group.add_argument(
        '--replay_dead_letter', default=DEFAULT_REPLAY_DEAD_LETTER, metavar='PREFIX',
        help='Where what fails again goes, as failure records (Avro). Must not match '
             f'--dead_letter. Default: {DEFAULT_REPLAY_DEAD_LETTER}.')
    group.add_argument(
        '--summary', default=None, metavar='PATH',
        help='Write the run\'s counts as a JSON object to PATH (also printed as a table).')
    lifecycle.add_failure_options(parser)
    add_loops_options(parser)
    return parser


def run(argv=None, out=sys.stdout) -> dict:
    """Runs a replay to completion; prints and returns its summary. Raises
    UsageError for options that can't be used (the message says what to fix),
    AuthError when Loops rejects the key (before the run, or during it: then
    after the summary is printed and written), lifecycle.Stopped after a stop
    by SIGINT or SIGTERM (the summary so far written)."""
    return _run(argv, out)[0]


def _run(argv, out) -> tuple:
    """-> (summary, parsed arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, beam_args = parse_job_args(replay_parser(), argv)
    if not args.dead_letter:
        raise UsageError('--dead_letter is required (the failure records to replay, '
                         'e.g. --dead_letter dead-letter/)')
    options = PipelineOptions(beam_args)
    set_default_runner(options, DEFAULT_BATCH_RUNNER)
    patterns = [failure_pattern(value) for value in args.dead_letter]
    # On a remote runner the workers read the records and write the new ones.
    for pattern in patterns:
        require_cloud_paths(options, {'--dead_letter': pattern})
    require_cloud_paths(options, {'--replay_dead_letter': args.replay_dead_letter})
    require_secret_on_remote_runner(args, options)
    FileSystems.set_options(options)
    check_output_apart(args.replay_dead_letter, patterns)
    files = failure_files(patterns)
    with lifecycle.StopSignals('segment-loops replay') as signals:
        loops = connect_to_loops(args)
        team = loops.check_key()
        print(f'Loops API key accepted (team: {team}).', file=out)
        p = beam.Pipeline(options=options)
        build_replay(p, files, args.include_permanent, loops, args.replay_dead_letter)
        signals.running(in_process=runs_locally(options))
        result = p.run()
        again = lifecycle.command_line('replay', argv)
        lifecycle.wait_for_batch(result, again)
        counters = run_summary.pipeline_counters(result)
        summary = replay_summary(counters)
        lifecycle.end_batch(
            signals, summary, title='replay summary', summary_path=args.summary, out=out,
            notes=(outcome_note(summary, args.include_permanent),
                   lifecycle.failure_report(
                       summary, args.replay_dead_letter,
                       'To replay what failed again: ' + lifecycle.command_line(
                           'replay', replay_again_argv(argv, args.replay_dead_letter)))),
            stop_line=(
                f'{lifecycle.sent_so_far(summary, args.replay_dead_letter)}; run it again to '
                f'finish (what was delivered is sent again; Loops answers 409 to the events it '
                f'got in the last 24 h): {again}'))
        raise_if_key_rejected(counters)
        return summary, args


def replay_again_argv(argv: list, replay_dead_letter: str) -> list:
    """The arguments of a replay of this replay's failures: `argv` with the
    failures it wrote as --dead_letter and a new --replay_dead_letter (the
    new failures must not land on the ones being read)."""
    kept, skip = [], False
    for arg in argv:
        name = arg.split('=', 1)[0]
        if skip:
            skip = False
        elif name in ('--dead_letter', '--replay_dead_letter', '--summary'):
            skip = '=' not in arg
        else:
            kept.append(arg)
    again = replay_dead_letter.rstrip('/') + '-again' + ('/' if replay_dead_letter.endswith('/')
                                                          else '')
    return ['--dead_letter', replay_dead_letter, '--replay_dead_letter', again, *kept]


def outcome_note(summary: dict, include_permanent: bool) -> str:
    """One or two sentences on what was recovered and what was skipped, from
    the summary (what failed again: lifecycle.failure_report)."""
    lines = [f'{summary["recovered"]} of {summary["replayed"]} replayed requests recovered.']
    permanent = sum(count for key, count in summary.items()
                    if key.startswith(SKIPPED_PREFIX + 'deliver_http_4'))
    if permanent and not include_permanent:
        lines.append(f'{permanent} rejected by Loops (4xx) were skipped: fix what their messages '
                     'say, then replay with --include_permanent.')
    return '\n'.join(lines)


def main(argv: Optional[list] = None) -> int:
    """`segment-loops replay` (the arguments after `replay`) -> exit status:
    0, or EXIT_FAILURES when requests failed again (unless --failures_ok);
    UsageError, AuthError and lifecycle.Stopped are left to the caller."""
    summary, args = _run(argv, sys.stdout)
    return lifecycle.batch_exit_status(
        'replay', summary, lifecycle.parse_failures_ok(args.failures_ok))
