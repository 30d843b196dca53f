"""`segment-loops backfill`: Segment archives -> Loops contacts (and events).

The pipeline, step by step:
  1. ReadSegmentArchive   files -> chunks of raw events           (failures: read)
  2. ProcessArchive       parse, filter, map, hold back, fit to the account
                          (failures: parse, map, conform)
  3. MergeContacts        per contact, every property's latest value (a combine,
                          so a contact's identifies never travel one by one);
                          email-only leads merged into their userId contact
  4. UpsertsFromStates    one upsert per contact; subscribed: true held back
  5. OrderRequests        per contact, event sends in event-time order, once each
  6. WriteToLoops         phase by phase: every upsert, then every event send, so
                          an event never fails for lack of a contact made in this
                          run (failures: deliver); with --dry_run, JSON lines instead
  7. WriteFailures        every failure record, flattened into one Avro sink

With --state (pipeline/state.py): the run holds the state's lease from
before it reads the state until the end; ReadSyncState reads what earlier
runs delivered, checked against the state's manifest; ChangedContacts
(between 3 and 4) keeps, per contact, only the properties that changed, and
OrderRequests drops events already sent; the writers record what they
deliver as they go; FoldSyncState folds it all into a new snapshot at the
end. With --contacts_csv, WriteContactsCsv writes the upserts of 4 as CSV
files for Loops' audience import, records them in the state as pending,
and nothing is sent. Every output is proven writable before the first
request (pipeline/writable.py).

Before it sends anything, a backfill reads the account's live workflows
and stops when it would set off one that --allow_workflows does not name
(pipeline/workflow_guard.py); CountWorkflowsSetOff counts, once the writers
are done, what the allowed ones took in.
"""
import itertools
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, replace
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions

from pipeline import lifecycle
from pipeline import state as sync
from pipeline import summary as run_summary
from pipeline import workflow_guard
from pipeline.loops_options import (add_conform_options, add_loops_options, connect_to_loops,
                                    loops_argv, preflight, require_secret_on_remote_runner)
from pipeline.options import (DEFAULT_BATCH_RUNNER, DEFAULT_MAX_EVENT_AGE, UsageError,
                              add_input_options, add_output_options, add_safety_options,
                              add_selection_options, job_parser, parse_job_args,
                              require_cloud_paths, runs_locally, set_default_runner)
from pipeline.selection import (ArchiveInput, archive_input_from_args, event_selection_from_args,
                                policy_from_args, print_skipped)
from pipeline.writable import require_writable
from transforms.contacts.merge import MergeContacts, UpsertsFromStates
from transforms.contacts.ordering import OrderRequests, remove_runs
from transforms.contacts.process_archive import ProcessArchive
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND
from transforms.core.sinks import WriteDryRun, WriteFailures
from transforms.delivery.write import WriteInPhases, raise_if_key_rejected
from transforms.loops.connection import LoopsConnection
from transforms.mapping.conform import AccountSchema
from transforms.mapping.processor import EventProcessor, Policy, Selection
from transforms.segment.read import ReadSegmentArchive
from transforms.state.contacts_csv import WriteContactsCsv
from transforms.state.sync_state import ChangedContacts, DeliveredEvents, contact_facts


@dataclass(frozen=True)
class BackfillJob:
    """What one backfill run does, validated before anything runs."""
    input: ArchiveInput
    selection: Selection
    policy: Policy
    max_event_age: str
    resubscribe: bool
    dry_run: Optional[str]
    dead_letter: str
    summary_path: Optional[str]
    loops: Optional[LoopsConnection]
    unknown_properties: str = 'send'
    state: Optional[sync.SyncState] = None
    contacts_csv: Optional[str] = None
    csv_rows: int = sync.DEFAULT_ROWS_PER_FILE
    run_directory: Optional[str] = None
    allow_workflows: workflow_guard.Allowance = workflow_guard.Allowance()
    workflows: Optional[workflow_guard.RunWorkflows] = None   # what the guard found
    failures_ok: frozenset = frozenset()
    rerun: str = ''     # the command that runs this backfill again
    replay: str = ''    # the command that replays its delivery failures


def backfill_parser():
    parser = job_parser('segment-loops backfill', __doc__.split('\n\n')[0])
    for add_options in (add_input_options, add_selection_options, add_output_options,
                        add_loops_options, add_conform_options):
        add_options(parser)
    add_safety_options(parser, max_event_age=DEFAULT_MAX_EVENT_AGE, resubscribe=False)
    sync.add_state_options(parser)
    sync.add_lease_options(parser)
    sync.add_csv_options(parser)
    workflow_guard.add_allow_option(parser)
    lifecycle.add_failure_options(parser)
    return parser


# A dry run's time is all processing. Two worker processes cost ~3 s to start
# and ~0.4 GB each; on 2 cores they paid off from about this much gzip input on
# (bench/processing.py, 300k events, 39 MB: 16 s against 25.6 s in-process on an
# otherwise idle machine; on a busy one in-process was faster).
WORKER_PROCESSES_FROM_BYTES = 30 * 2 ** 20
DEFAULT_WORKER_PROCESSES = 2
RUNNING_MODE_FLAGS = ('--runner', '--direct_running_mode', '--direct_num_workers')


def use_worker_processes_for_large_dry_runs(args, beam_args: list,
                                            options: PipelineOptions) -> None:
    """A dry run of at least WORKER_PROCESSES_FROM_BYTES of local files, with
    local outputs, runs on two worker processes unless the user chose the runner
    or how it runs, or the machine has one core. A delivery stays in-process:
    its time is Loops' rate limit's."""
    if not args.dry_run or (os.cpu_count() or 1) < 2:
        return
    if any(arg.split('=', 1)[0] in RUNNING_MODE_FLAGS for arg in beam_args):
        return
    if any('://' in path for path in (*(args.input or ()), args.dry_run, args.dead_letter,
                                      args.state, args.contacts_csv) if path):
        return
    try:
        matches = FileSystems.match(list(args.input or ()))
    except BeamIOError:  # job_from_args says what is wrong with the patterns
        return
    size = sum(file.size_in_bytes for match in matches for file in match.metadata_list)
    if size >= WORKER_PROCESSES_FROM_BYTES:
        direct = options.view_as(DirectOptions)
        direct.direct_running_mode = 'multi_processing'
        direct.direct_num_workers = DEFAULT_WORKER_PROCESSES


def check_s3_reaches_workers(patterns, options: PipelineOptions, what: str = 'inputs') -> None:
    """Beam's local multi-processing workers do not receive the pipeline
    options, so they would read s3:// without --s3_* (real AWS, retried for
    minutes): say so before anything runs."""
    mode = options.view_as(DirectOptions).direct_running_mode
    if mode == 'multi_processing' and any(p and p.startswith('s3://') for p in patterns):
        raise UsageError(f's3:// {what} cannot be read with --direct_running_mode='
                         'multi_processing (Beam does not pass the --s3_* options to those '
                         'workers); run in-process or with --runner=PortableRunner '
                         '--job_endpoint=embed (see docs/dataflow.md, "Running distributed '
                         'locally")')


def job_from_args(args, options: PipelineOptions) -> BackfillJob:
    """Validates what the user asked for; raises UsageError with what to fix."""
    check_s3_reaches_workers(args.input or (), options)
    check_s3_reaches_workers((args.state, args.contacts_csv), options,
                             'paths (--state, --contacts_csv)')
    sync.check_csv_args(args)
    sync.check_flush_seconds(args)
    archive_input = archive_input_from_args(args, options)
    require_cloud_paths(options, {'--dead_letter': args.dead_letter, '--dry_run': args.dry_run,
                                  '--contacts_csv': args.contacts_csv})
    if not args.dry_run:
        require_secret_on_remote_runner(args, options)
    policy = policy_from_args(args)
    return BackfillJob(
        input=archive_input,
        selection=event_selection_from_args(args, ('identify',)),
        policy=policy,
        max_event_age=args.max_event_age,
        resubscribe=args.resubscribe,
        dry_run=args.dry_run,
        dead_letter=args.dead_letter,
        summary_path=args.summary,
        loops=None if args.dry_run else connect_to_loops(args),
        unknown_properties=args.unknown_properties,
        contacts_csv=args.contacts_csv,
        csv_rows=args.csv_rows,
        run_directory=run_directory_for(options),
        allow_workflows=workflow_guard.allowance_from(args.allow_workflows),
        failures_ok=lifecycle.parse_failures_ok(args.failures_ok),
    )


def run_directory_for(options: PipelineOptions) -> str:
    """Where a hot contact's sorted runs go: under the job's temp location
    (gs:// on Dataflow, which every worker reads), else this machine's
    temporary directory (its worker processes read it too)."""
    base = options.view_as(GoogleCloudOptions).temp_location or tempfile.gettempdir()
    return FileSystems.join(base, 'segment-loops-runs', uuid.uuid4().hex)


def build_backfill(p: beam.Pipeline, job: BackfillJob,
                   account: Optional[AccountSchema] = None) -> None:
    """The backfill's steps. `account` (the Loops account's properties and
    lists, when sending) fits each request to it right after mapping."""
    chunks, read_failed = p | 'ReadSegmentArchive' >> ReadSegmentArchive(
        job.input.patterns, job.input.since_ms, job.input.until_ms)
    processor = EventProcessor(job.selection, job.policy, account, job.unknown_properties)
    processed = chunks | 'ProcessArchive' >> ProcessArchive(processor, job.run_directory)
    facts = job.state.read(p) if job.state else None
    contacts = processed.contacts | 'MergeContacts' >> MergeContacts()
    if job.state:
        contacts = contacts | 'ChangedContacts' >> ChangedContacts(
            contact_facts(facts), job.resubscribe)
    upserts = contacts | 'UpsertsFromStates' >> UpsertsFromStates(
        job.resubscribe, keep_stamps=job.state is not None)
    ordered = processed.requests | 'OrderRequests' >> OrderRequests(
        delivered=facts | 'DeliveredEvents' >> DeliveredEvents() if job.state else None)
    failures = [read_failed, processed.failures]
    recorder = job.state.recorder() if job.state and not job.dry_run else None
    phases = {phase: (sequences,) for phase, sequences in ordered.items()}
    state_done = facts   # the job's last step that reads or writes the state
    if job.contacts_csv:
        state_done = upserts | 'WriteContactsCsv' >> WriteContactsCsv(
            job.contacts_csv, job.csv_rows,
            job.state.pending_recorder() if not job.dry_run else None)
        phases = {} if not job.dry_run else phases
    else:
        # Leads (contacts known only by email) go after every userId contact:
        # a userId contact that gave up the lead's email in this run must
        # have let go of it in Loops first, or Loops would find that contact
        # by the email and the lead's update would land on it.
        by_user_id, leads = upserts | 'LeadsAfterUsers' >> beam.Partition(
            lambda sequence, _: int(sequence.contact.startswith('email:')), 2)
        phases[CONTACT_UPSERT.phase] += (by_user_id,)
        phases[EVENT_SEND.phase] += (leads,)
    if job.dry_run:
        tuple(itertools.chain(*phases.values())) | 'WriteDryRun' >> WriteDryRun(job.dry_run)
    elif phases:
        written = phases | 'WriteToLoops' >> WriteInPhases(job.loops, recorder=recorder)
        failures.append(written.failures)
        workflow_guard.count_delivered(phases, written.failures, facts, job.workflows)
        if job.state:
            state_done = job.state.fold(facts, after=written.done)
    (failures | 'AllFailures' >> beam.Flatten()
     | 'WriteFailures' >> WriteFailures(job.dead_letter))
    if job.state:
        job.state.release_at_end(state_done)


def start(argv=None, out=sys.stdout, hand_over_lease: bool = False,
          signals: Optional[lifecycle.StopSignals] = None) -> tuple:
    """Validates, proves the outputs writable, takes the sync state's lease,
    checks the key and the account, and submits the backfill without
    waiting: -> (PipelineResult, BackfillJob). The caller releases the
    lease (`sync.release(job.state)`) once the job is over, or, with
    `hand_over_lease` (a launcher that does not wait), leaves that to the
    job. With `signals`, a signal from the start of the pipeline on stops it
    cleanly (pipeline/lifecycle.py); Beam's in-process runner runs the whole
    pipeline before it returns. Raises UsageError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, beam_args = parse_job_args(backfill_parser(), argv)
    options = PipelineOptions(beam_args)
    use_worker_processes_for_large_dry_runs(args, beam_args, options)
    set_default_runner(options, DEFAULT_BATCH_RUNNER)
    job = job_from_args(args, options)
    print_skipped(job.selection.mapping, out)
    require_writable(options, {'--state': args.state, '--dead_letter': args.dead_letter,
                               '--dry_run': args.dry_run, '--contacts_csv': args.contacts_csv})
    job = replace(job, state=sync.open_state(args, options, job.policy, 'backfill', out,
                                             hand_over=hand_over_lease),
                  rerun=lifecycle.command_line('backfill', argv),
                  replay=lifecycle.command_line('replay', ['--dead_letter', args.dead_letter,
                                                           *loops_argv(args), *beam_args]))
    try:
        account = None
        if job.loops is not None:
            team, account = preflight(job.loops)
            print(f'Loops API key accepted (team: {team}).', file=out)
            job = replace(job, workflows=workflow_guard.guard_backfill(job, account, out))
        p = beam.Pipeline(options=options)
        build_backfill(p, job, account)
        if signals is not None:
            signals.running(in_process=runs_locally(options))
        with sync.state_failures(job.state):
            return p.run(), job
    except BaseException:
        sync.release(job.state)
        raise


def run(argv=None, out=sys.stdout) -> dict:
    """Runs a backfill to completion; returns its summary. Raises UsageError,
    or lifecycle.Stopped after a stop by SIGINT or SIGTERM (the summary so
    far written)."""
    return _run(argv, out)[0]


def main(argv=None) -> int:
    """`segment-loops backfill`: the exit status, EXIT_FAILURES when the run
    left failures that need action (pipeline/lifecycle.py) unless --failures_ok."""
    summary, job = _run(argv, sys.stdout)
    return lifecycle.batch_exit_status('backfill', summary, job.failures_ok)


def _run(argv, out) -> tuple:
    """-> (summary, BackfillJob)."""
    with lifecycle.StopSignals('segment-loops backfill') as signals:
        result, job = start(argv, out, signals=signals)
        try:
            with sync.state_failures(job.state):
                lifecycle.wait_for_batch(result, job.rerun)
        finally:
            remove_runs(job.run_directory)
            sync.release(job.state)
        counters = run_summary.pipeline_counters(result)
        raise_if_key_rejected(counters)
        summary = run_summary.backfill_summary(counters, summary_keys(job))
        lifecycle.end_batch(signals, summary, title='backfill summary',
                            notes=end_notes(summary, job), stop_line=stop_line(summary, job),
                            summary_path=job.summary_path, out=out)
        return summary, job


def summary_keys(job: BackfillJob) -> dict:
    keys = dict(run_summary.BACKFILL_KEYS)
    if job.loops is not None and not job.contacts_csv:
        keys.update(run_summary.DELIVERY_KEYS)
    if job.state:
        keys.update(run_summary.STATE_KEYS)
    if job.contacts_csv:
        keys.update(run_summary.CSV_KEYS)
    keys.update(run_summary.FAILURE_KEYS)
    return keys


def end_notes(summary: dict, job: BackfillJob) -> tuple:
    """What a person reads under the summary: what was held back, what the
    state saved, the CSV steps, the workflows it set off, the failures and
    how to send them again."""
    if job.state:
        resend = ('To send what was not delivered, run the same command again (with the '
                  f'same --state it sends only that): {job.rerun}')
    else:
        resend = f'To send what was not delivered again: {job.replay}'
    return (run_summary.held_back_note(summary, job.max_event_age),
            sync.state_note(summary, job.state),
            sync.csv_note(summary, job.contacts_csv, job.state) if job.contacts_csv else '',
            workflow_guard.end_note(summary, job.workflows),
            lifecycle.failure_report(summary, job.dead_letter, resend))


def stop_line(summary: dict, job: BackfillJob) -> str:
    """The one line of a stopped backfill (after 'stopped by SIGTERM: ')."""
    not_read = lifecycle.files_not_read(summary)
    if job.dry_run:
        return (f'{summary["contacts"] + summary["events"]:,} requests written to '
                f'{job.dry_run}{not_read}, a partial dry run; run it again: {job.rerun}')
    if job.contacts_csv:
        return (f'{summary.get("csv_rows", 0):,} contacts written to {job.contacts_csv}'
                f'{not_read}, a partial first load; run it again: {job.rerun}')
    done = lifecycle.sent_so_far(summary, job.dead_letter) + not_read
    if job.state:
        return f'{done}; to resume (it sends only what was not delivered): {job.rerun}'
    return (f'{done}; without --state a rerun sends everything again (Loops answers 409 to '
            f'the events it got in the last 24 h): {job.rerun}')
