"""The sync state of a job (`--state`), the CSV first load (`--contacts_csv`),
and `segment-loops state compact`.

A job with `--state PREFIX` reads, when it starts, the facts that jobs with
the same state delivered to Loops (transforms/state/facts.py), sends only
what they lack, records what it delivers while it runs (a recorder on its
writers, log files at least every --state_flush_seconds) and, a backfill,
folds everything into a new snapshot when it ends. A stream reads no
contact facts: it looks each event send up in the event facts of its day
(transforms/state/delivered_events.py).

    segment-loops state compact --state PREFIX

folds a state's files into one snapshot per partition, for a state that
only a stream writes (a backfill folds its own at the end).
"""
import sys
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import summary as run_summary
from pipeline.options import (DEFAULT_BATCH_RUNNER, UsageError, job_parser, parse_job_args,
                              require_cloud_paths, set_default_runner)
from transforms.mapping.processor import Policy
from transforms.state.contacts_csv import DEFAULT_ROWS_PER_FILE
from transforms.state.delivered_events import DropDeliveredEvents
from transforms.state.files import StateListing, event_day, list_state, new_run_id
from transforms.state.recorder import DEFAULT_FLUSH_SECONDS, StateRecorder
from transforms.state.sync_state import FoldSyncState, ReadSyncState


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
             f'runs: a job killed loses at most this much of its record (default '
             f'{DEFAULT_FLUSH_SECONDS:g}).')


def add_csv_options(parser) -> None:
    """--contacts_csv and --csv_rows (backfill)."""
    group = parser.add_argument_group('first load by CSV')
    group.add_argument(
        '--contacts_csv', default=None, metavar='PREFIX',
        help='Write the contacts as CSV files for Loops\' audience import (no rate limit) '
             'instead of sending upserts, and record them in --state (required) as delivered; '
             'nothing is sent: import the files, then run the same command without this '
             'option to send the mailing lists and the events.')
    group.add_argument(
        '--csv_rows', type=int, default=DEFAULT_ROWS_PER_FILE, metavar='N',
        help=f'Rows per CSV file at most (default {DEFAULT_ROWS_PER_FILE:,}).')


@dataclass(frozen=True)
class SyncState:
    """A job's sync state: where, this run's id, the files it read at the start."""
    prefix: str
    run_id: str
    flush_seconds: float
    listing: StateListing

    def recorder(self) -> StateRecorder:
        return StateRecorder(self.prefix, self.run_id, self.flush_seconds)

    def read(self, p: beam.Pipeline):
        """(partition, contact digest, Facts) of the files listed at the start."""
        return p | 'ReadSyncState' >> ReadSyncState(self.listing)

    def fold(self, facts, after):
        return facts | 'FoldSyncState' >> FoldSyncState(
            self.prefix, self.run_id, self.listing, after)


def events_from_day(policy: Policy) -> str:
    """The first event day a run needs the facts of: events older than
    --max_event_age are never sent, so their days are not read."""
    if policy.max_event_age_ms is None:
        return ''
    return event_day(policy.now_ms - policy.max_event_age_ms)


def sync_state_from_args(args, options: PipelineOptions, policy: Policy) -> Optional[SyncState]:
    """--state (listed now, with the job's file system options), or None."""
    if args.state_flush_seconds <= 0:
        raise UsageError('--state_flush_seconds must be positive')
    if not args.state:
        return None
    require_cloud_paths(options, {'--state': args.state})
    FileSystems.set_options(options)
    return SyncState(args.state, new_run_id(), args.state_flush_seconds,
                     list_state(args.state, events_from_day(policy)))


def recorder_from_args(args, options: PipelineOptions) -> Optional[StateRecorder]:
    """The recorder a job's writers take (`WriteToLoops(..., recorder=...)`)
    for --state and --state_flush_seconds (add_state_options), or None
    without --state. For a job that only records, as the stream does."""
    if args.state_flush_seconds <= 0:
        raise UsageError('--state_flush_seconds must be positive')
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
        '  2. Then run this same command without --contacts_csv. With the same --state it sends '
        f'what a file cannot carry ({left:,} contacts: mailing lists, subscribed: true, values a '
        f'cell would change) and the {summary.get("events", 0):,} events, not the contacts '
        'again.',
        f'  If you do not import the files, delete {state.prefix.rstrip("/")}/contacts/'
        f'log-{state.run_id}-*.avro first: the state counts them as delivered.'))


def compact_parser():
    parser = job_parser('segment-loops state compact',
                        'Fold a sync state\'s files into one snapshot per partition.')
    parser.add_argument('--state', required=True, metavar='PREFIX',
                        help='The state to compact (what --state names in the jobs).')
    return parser


def compact(argv=None, out=sys.stdout) -> dict:
    """Compacts a state; -> its figures (files and bytes before and after,
    contacts, contacts with event facts)."""
    args, beam_args = parse_job_args(compact_parser(), argv)
    options = PipelineOptions(beam_args)
    set_default_runner(options, DEFAULT_BATCH_RUNNER)
    FileSystems.set_options(options)
    listing = list_state(args.state)
    state = SyncState(args.state, new_run_id(), DEFAULT_FLUSH_SECONDS, listing)
    p = beam.Pipeline(options=options)
    state.fold(state.read(p), after=None)
    result = p.run()
    result.wait_until_finish()
    counters = run_summary.pipeline_counters(result)
    after = list_state(args.state)
    figures = {'files_before': len(listing.files), 'bytes_before': listing.size_in_bytes,
               'files_after': len(after.files), 'bytes_after': after.size_in_bytes,
               'contacts': counters.get('state/snapshot_contacts', 0),
               'event_contacts': counters.get('state/snapshot_event_contacts', 0)}
    print(run_summary.format_table(figures, f'state compact {args.state}'), file=out)
    return figures


USAGE = 'usage: segment-loops state compact --state PREFIX'


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != 'compact':
        raise UsageError(f'unknown state command {argv[0]!r} ({USAGE})')
    compact(argv[1:])
    return 0
