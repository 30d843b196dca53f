"""The sync state of a job (`--state`) and the CSV first load (`--contacts_csv`).

A job with `--state PREFIX` reads, when it starts, the facts that jobs with
the same state delivered to Loops (transforms/state/facts.py), sends only
what they lack, records what it delivers while it runs (a recorder on its
writers, log files at least every --state_flush_seconds) and, a backfill,
folds everything into a new snapshot when it ends. A stream reads no
contact facts: it looks each event send up in the event facts of its day
(transforms/state/delivered_events.py).

A job that reads or folds the state holds its lease (transforms/state/
lease.py) from before it reads it until it has folded it (`open_state`,
then `SyncState.close`); a second one is refused, and one whose lease
another run took over stops. A launcher that does not wait for its job (a
Flex Template's) hands the lease over to the job (`hand_over`), which
renews and releases it itself. Before anything is sent the state is checked
against its manifest (transforms/state/manifest.py): a damaged file is
named, never read as "not sent yet". A stream only adds log files to the
state: it shares it with the run that holds the lease, and takes none.

The `segment-loops state ...` commands are in pipeline/state_commands.py.
"""
import logging
import shlex
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import UsageError, require_cloud_paths
from transforms.contacts.ordering import RESENT_AFTER_REFUSAL
from transforms.mapping.processor import Policy
from transforms.state.contacts_csv import DEFAULT_ROWS_PER_FILE
from transforms.state.delivered_events import DropDeliveredEvents
from transforms.state.files import (StateListing, event_day, list_state, new_run_id, pending_prefix,
                                    read_facts)
from transforms.state.lease import (DEFAULT_TTL_SECONDS, HANDED_OVER_TTL_SECONDS, LOST_MARK,
                                    HandedOverLease, Lease, LeaseCheck, LeaseError, LeaseLost,
                                    acquire)
from transforms.state.manifest import (DAMAGED_MARK, Manifest, StateDamaged, StateFileDamaged,
                                       damage_before_reading, expected_entries, file_damage,
                                       read_checked, read_manifest)
from transforms.state.recorder import DEFAULT_FLUSH_SECONDS, StateRecorder
from transforms.state.sync_state import FoldSyncState, ReadSyncState

# The job's writers read the lease at least this often (and every
# --state_flush_seconds if shorter): a run whose lease was taken over
# stops sending within that time.
LEASE_CHECK_SECONDS = 10.0


STATE_HELP = ('Where this tool remembers what it delivered to Loops (local, gs:// or s3://): '
              'a run sends only the contact properties that changed since and events never '
              'sent, and a rerun of a run that stopped sends only what it had not delivered. '
              'Digests only: no values, no userIds or emails. Default: none (send everything).')


def add_state_options(parser, records: bool = True, state_help: str = STATE_HELP) -> None:
    """--state (described by `state_help`), and --state_flush_seconds for a
    job that records (backfill, stream, delete; `check` only reads)."""
    group = parser.add_argument_group('sync state')
    group.add_argument('--state', default=None, metavar='PREFIX', help=state_help)
    if not records:
        return
    group.add_argument(
        '--state_flush_seconds', type=float, default=DEFAULT_FLUSH_SECONDS, metavar='SECONDS',
        help='What was delivered is written to the state at least this often while the job '
             'runs: a job killed loses at most this much of its record (default '
             f'{DEFAULT_FLUSH_SECONDS:g}).')


def add_lease_options(parser) -> None:
    """--break_lease, for a job that holds the state's lease."""
    parser.add_argument(
        '--break_lease', action='store_true', default=False,
        help='Take the sync state over from the run that holds it (its lease), though that '
             'run\'s lease has not expired: only when you know that run is dead. A run that '
             'died without releasing the lease is taken over without this once the lease '
             'expires (2 minutes after its last renewal).')


def add_csv_options(parser) -> None:
    """--contacts_csv and --csv_rows (backfill)."""
    group = parser.add_argument_group('first load by CSV')
    group.add_argument(
        '--contacts_csv', default=None, metavar='PREFIX',
        help='Write the contacts as CSV files for Loops\' audience import (no rate limit) '
             'instead of sending upserts, and record them in --state (required) as pending; '
             'nothing is sent: import the files, run `segment-loops state confirm-import`, '
             'then run the same command without this option to send the mailing lists and '
             'the events.')
    group.add_argument(
        '--csv_rows', type=int, default=DEFAULT_ROWS_PER_FILE, metavar='N',
        help=f'Rows per CSV file at most (default {DEFAULT_ROWS_PER_FILE:,}).')


@dataclass(frozen=True)
class SyncState:
    """A job's sync state: where, this run's id, the files it read at the
    start and the manifest they were checked against, and the lease the
    launcher holds (None for a job that does not hold one)."""
    prefix: str
    run_id: str
    flush_seconds: float
    listing: StateListing
    manifest: Optional[Manifest] = None
    lease: Optional[Lease] = field(default=None, compare=False, repr=False)
    # The job's options when the lease is handed over to the job.
    handed_over: Optional[PipelineOptions] = field(default=None, compare=False, repr=False)

    def lease_check(self) -> Optional[LeaseCheck]:
        """What the job's workers check the lease with."""
        if self.lease is None:
            return None
        interval = min(self.flush_seconds, LEASE_CHECK_SECONDS)
        if self.handed_over is not None:
            return HandedOverLease(self.prefix, self.lease.record.token, interval,
                                   self.handed_over)
        return LeaseCheck(self.prefix, self.lease.record.token, interval)

    def recorder(self) -> StateRecorder:
        return StateRecorder(self.prefix, self.run_id, self.flush_seconds,
                             lease=self.lease_check())

    def pending_recorder(self) -> StateRecorder:
        """The recorder of a CSV load: its contacts go to pending/<run>/
        until `state confirm-import`."""
        return StateRecorder(pending_prefix(self.prefix, self.run_id), self.run_id,
                             self.flush_seconds, lease=self.lease_check())

    def read(self, p: beam.Pipeline):
        """(partition, contact digest, Facts) of the files listed at the start."""
        return p | 'ReadSyncState' >> ReadSyncState(self.listing, self.manifest)

    def fold(self, facts, after):
        return facts | 'FoldSyncState' >> FoldSyncState(
            self.prefix, self.run_id, self.listing, after, self.manifest, self.lease_check())

    def release_at_end(self, done) -> None:
        """In a job its lease is handed over to: a last step that releases
        the lease once `done` (the PCollection of the job's last write to
        the state) is complete. Nothing otherwise."""
        lease = self.lease_check()
        if not isinstance(lease, HandedOverLease):
            return
        (done.pipeline
         | 'AfterStateWrites' >> beam.Create([None])
         | 'ReleaseLease' >> beam.Map(lambda _, _done: lease.release(),
                                      beam.pvalue.AsList(done)))

    def close(self) -> None:
        """Releases the lease (the job is over, or was never submitted)."""
        if self.lease is not None:
            self.lease.release()


def release(state: Optional[SyncState]) -> None:
    """Releases the lease of a job's state, if it has one (None: no state)."""
    if state is not None:
        state.close()


def events_from_day(policy: Policy) -> str:
    """The first event day a run needs the facts of: events older than
    --max_event_age are never sent, so their days are not read."""
    if policy.max_event_age_ms is None:
        return ''
    return event_day(policy.now_ms - policy.max_event_age_ms)


def check_flush_seconds(args) -> None:
    if args.state_flush_seconds <= 0:
        raise UsageError('--state_flush_seconds must be positive')


def describe_run(command: str, args) -> str:
    """What a lease says about the run holding it: the command and what it
    reads (no secrets: Beam's options are left out)."""
    words = [command]
    for option in ('input', 'since', 'until', 'dry_run', 'contacts_csv'):
        value = getattr(args, option, None)
        for item in (value if isinstance(value, list) else [value] if value else []):
            words += [f'--{option}', item]
    return shlex.join(words)


def take_lease(prefix: str, command: str, args, options: PipelineOptions,
               hand_over: bool = False) -> Lease:
    """The state's lease for this run, renewed from now on (or, to be
    handed over, taken for HANDED_OVER_TTL_SECONDS and not renewed here);
    UsageError with who holds it (and how to take over) when another run
    does."""
    try:
        lease = acquire(prefix, describe_run(command, args),
                        HANDED_OVER_TTL_SECONDS if hand_over else DEFAULT_TTL_SECONDS,
                        break_lease=getattr(args, 'break_lease', False), options=options)
    except LeaseError as error:
        raise UsageError(str(error)) from None
    if not hand_over:
        lease.start_renewing()
    return lease


def open_state(args, options: PipelineOptions, policy: Optional[Policy], command: str,
               out, check: bool = True, hand_over: bool = False) -> Optional[SyncState]:
    """--state for a job that reads it (None without): takes its lease (to
    be handed over to the job: `hand_over`), lists it and (`check`) checks
    it against its manifest, prints what the user must know (a lease taken
    over, CSV loads pending). UsageError when another run holds it or it is
    damaged (the lease is then released)."""
    if not args.state:
        return None
    require_cloud_paths(options, {'--state': args.state})
    FileSystems.set_options(options)
    quiet_failures_explained()
    lease = take_lease(args.state, command, args, options, hand_over)
    try:
        listing = list_state(args.state, events_from_day(policy) if policy else '')
        manifest = checked_manifest(listing) if check else None
    except BaseException:
        lease.release()
        raise
    notes = (lease.note, pending_note(listing), no_manifest_note(listing, manifest)) if check \
        else (lease.note,)
    for note in notes:
        if note:
            print(note, file=out)
    return SyncState(args.state, new_run_id(), getattr(args, 'state_flush_seconds',
                                                       DEFAULT_FLUSH_SECONDS),
                     listing, manifest, lease, options if hand_over else None)


def checked_manifest(listing: StateListing) -> Optional[Manifest]:
    """The state's manifest, once the listing matches it; UsageError naming
    every damaged file otherwise."""
    try:
        manifest = read_manifest(listing.prefix)
        damages = damage_before_reading(listing, manifest)
    except StateDamaged as error:
        raise UsageError(str(error)) from None
    if damages:
        raise UsageError(str(StateDamaged(listing.prefix, damages)))
    return manifest


def read_listing(args, options: PipelineOptions, policy: Policy) -> Optional[StateListing]:
    """--state for a job that only reads it, without its lease (`check`):
    listed and checked against its manifest."""
    if not args.state:
        return None
    FileSystems.set_options(options)
    listing = list_state(args.state, events_from_day(policy))
    checked_manifest(listing)
    return listing


def read_state_facts(listing: StateListing) -> dict:
    """The facts of a listing in memory (files.read_facts), each file
    checked against the manifest as it is read; UsageError naming every
    damaged file."""
    manifest = read_manifest(listing.prefix)
    entries = dict(expected_entries(listing, manifest))
    try:
        return read_facts(listing, lambda path: read_checked(path, entries.get(path)))
    except StateFileDamaged:
        raise UsageError(str(damage_found_reading(listing, manifest))) from None


def damage_found_reading(listing: StateListing, manifest: Optional[Manifest]) -> StateDamaged:
    """Every damaged file of a listing, read whole (after a job stopped on
    one: it names them all)."""
    damages = [damage for path, entry in expected_entries(listing, manifest)
               for damage in [file_damage(listing.prefix, path, entry)] if damage is not None]
    return StateDamaged(listing.prefix, damages)


def lease_lost(lease: Lease) -> bool:
    """Whether another run took the lease over (asks the store once more)."""
    if not lease.lost:
        try:
            lease.renew()
        except LeaseLost:
            pass
        except LeaseError:   # released: the job is over
            return False
    return lease.lost


@contextmanager
def state_failures(state: Optional[SyncState]) -> Iterator[None]:
    """Around running a job: a failure its state explains becomes one clear
    error: LeaseLost when another run took the state over, UsageError
    naming the damaged files when the job stopped on one."""
    try:
        yield
    except Exception as error:
        if state is None:
            raise
        if state.lease is not None and lease_lost(state.lease):
            raise LeaseLost(f'{state.lease.lost_reason} It stopped sending, and did not '
                            'fold the state; what it delivered until then is recorded.'
                            ) from error
        if DAMAGED_MARK in str(error):
            damaged = damage_found_reading(state.listing, state.manifest)
            if damaged.damages:
                raise UsageError(str(damaged)) from error
        raise


class ExplainedByState(logging.Filter):
    """A logging filter that drops Beam's report (a traceback) of a job
    stopped by a damaged state file or a lost lease: state_failures says it
    in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith('apache_beam'):
            return True
        message = record.getMessage()
        return DAMAGED_MARK not in message and LOST_MARK not in message


def quiet_failures_explained() -> None:
    """Installs ExplainedByState on the root logger's handlers (where the
    command line's MaskEmails is), once."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ExplainedByState) for f in handler.filters):
            handler.addFilter(ExplainedByState())


def pending_note(listing: StateListing) -> str:
    """What a run says about CSV loads not confirmed ('' when none)."""
    if not listing.pending:
        return ''
    loads = ', '.join(f'run {run} ({len(files)} files)' for run, files in listing.pending.items())
    return (f'The sync state {listing.prefix} has CSV loads not confirmed as imported: '
            f'{loads}. Their contacts count as not sent: a backfill sends them as usual. If '
            'you imported the files, confirm it first: segment-loops state confirm-import '
            f'--state {listing.prefix}')


def no_manifest_note(listing: StateListing, manifest: Optional[Manifest]) -> str:
    if manifest is not None or not listing.files:
        return ''
    return (f'The sync state {listing.prefix} has no manifest yet (it was written by an '
            'earlier version): its files are read as they are, and the manifest is written '
            'when this run folds the state.')


def recorder_from_args(args, options: PipelineOptions) -> Optional[StateRecorder]:
    """The recorder a job's writers take (`WriteToLoops(..., recorder=...)`)
    for --state and --state_flush_seconds (add_state_options), or None
    without --state. For a job that only records, as the stream does: it
    holds no lease."""
    check_flush_seconds(args)
    if not args.state:
        return None
    require_cloud_paths(options, {'--state': args.state})
    return StateRecorder(args.state, new_run_id(), args.state_flush_seconds)


def delivered_events_from_args(args) -> Optional[DropDeliveredEvents]:
    """The stream's check of its event sends against --state (the state's
    files listed again at most every --state_flush_seconds), or None."""
    if not args.state:
        return None
    return DropDeliveredEvents(args.state, args.state_flush_seconds)


def check_csv_args(args) -> None:
    if args.csv_rows < 1:
        raise UsageError('--csv_rows must be at least 1')
    if args.contacts_csv and not args.state:
        raise UsageError('--contacts_csv needs --state: the state remembers the contacts the '
                         'files carry, so that the next run sends only what they could not')


def state_note(summary: dict, state: Optional[SyncState]) -> str:
    """What the state saved this run, for a person ('' without a state)."""
    if state is None:
        return ''
    note = (f'Sync state {state.prefix}: read {len(state.listing.files):,} files '
            f'({state.listing.size_in_bytes:,} bytes); {summary.get("contacts_unchanged", 0):,} '
            f'contacts unchanged, {summary.get("events_already_sent", 0):,} events already '
            'sent: not sent again.')
    contacts = summary.get('contacts_before_deletion', 0)
    events = summary.get('events_before_deletion', 0)
    if contacts or events:
        note += (f' Deleted since: {contacts:,} contacts and {events:,} events whose data '
                 'predates their deletion: not sent.')
    refused = summary.get(RESENT_AFTER_REFUSAL, 0)
    if refused:
        note += (f' {refused:,} events Loops refused in an earlier run: sent again under new '
                 'keys (a refusal may spend its key).')
    return note


def csv_note(summary: dict, csv_prefix: str, state: SyncState) -> str:
    """The steps after a CSV first load."""
    rows, files = summary.get('csv_rows', 0), summary.get('csv_files', 0)
    left = summary.get('csv_left_for_api', 0)
    return '\n'.join((
        f'Wrote {rows:,} contacts to {files:,} CSV files ({csv_prefix}...). Nothing was sent.',
        'Next:',
        '  1. Loops > Audience > Import: import each file. Create the custom properties first '
        '(`segment-loops check` lists them): a column becomes the property of its name.',
        f'  2. Then: segment-loops state confirm-import --state {state.prefix} --check '
        f'--contacts_csv {csv_prefix}',
        '     (with your Loops key, as here). It confirms once Loops has a sample of the '
        'files\' contacts. Until then the state counts these contacts as not sent, and a '
        'run sends them as upserts.',
        '  3. Then run this same command without --contacts_csv. With the same --state it sends '
        f'what a file cannot carry ({left:,} contacts: mailing lists, subscribed: true, values a '
        f'cell would change) and the {summary.get("events", 0):,} events, not the contacts '
        'again.'))
