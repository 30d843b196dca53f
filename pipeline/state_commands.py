"""`segment-loops state ...`: looking after a sync state.

    state compact        --state PREFIX   fold its files into one snapshot per partition
                                          (for a state only a stream records into)
    state verify         --state PREFIX   read every file and check it against the
                                          manifest; exit status 1 when one is damaged
    state repair         --state PREFIX   keep what can be read, set the rest aside,
                                          rebuild the manifest, say what will be sent again
    state confirm-import --state PREFIX   the CSV loads are imported into Loops: count
                                          their contacts as delivered (--check N: only
                                          when Loops has N rows of the files looked up;
                                          --discard: forget them, the files will not be
                                          imported)

Each holds the state's lease while it works (`--break_lease` as for a
backfill), so none runs beside a backfill or another of them.
"""
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import summary as run_summary
from pipeline.import_check import DEFAULT_SAMPLE, check_import, check_report
from pipeline.loops_options import add_loops_options, connect_to_loops
from pipeline.options import (DEFAULT_BATCH_RUNNER, UsageError, job_parser, parse_job_args,
                              set_default_runner)
from pipeline.state import add_lease_options, open_state, state_failures
from pipeline.writable import require_writable
from transforms.state.files import confirm_pending, discard_pending, list_state
from transforms.state.repair import repair_state, verify_state

USAGE = '''usage: segment-loops state COMMAND --state PREFIX [options]

commands:
  compact         fold the state's files into one snapshot per partition
  verify          check every file against the state's manifest (exit 1 if damaged)
  repair          keep what can be read, set damaged files aside, rebuild the manifest
  confirm-import  the CSV loads are imported: count their contacts as delivered'''

# 1: a damaged state (verify), or a CSV load Loops does not have (confirm-import --check).
EXIT_OK, EXIT_DAMAGED, EXIT_NOT_IMPORTED = 0, 1, 1


def state_parser(command: str, description: str):
    parser = job_parser(f'segment-loops state {command}', description)
    parser.add_argument('--state', required=True, metavar='PREFIX',
                        help='The sync state (what --state names in the jobs).')
    add_lease_options(parser)
    return parser


def _held(command: str, argv, out):
    """Parses a state command's options, proves the state writable and
    takes its lease (and for `compact`, which reads the state, checks it):
    -> (args, PipelineOptions, SyncState)."""
    parser = state_parser(command, COMMANDS[command][1])
    if command == 'confirm-import':
        parser.add_argument('--discard', action='store_true', default=False,
                            help='The files will not be imported: forget the pending loads.')
        parser.add_argument(
            '--check', type=int, nargs='?', const=DEFAULT_SAMPLE, default=0, metavar='N',
            help=f'Confirm only if Loops has N rows of the CSV files (default '
                 f'{DEFAULT_SAMPLE}), looked up by User ID, else Email; needs '
                 '--contacts_csv and a Loops API key.')
        parser.add_argument('--contacts_csv', default=None, metavar='PREFIX',
                            help='With --check: where the backfill wrote the CSV files.')
        add_loops_options(parser)
    args, beam_args = parse_job_args(parser, argv)
    if command == 'confirm-import' and args.check:
        if args.check < 0 or args.discard or not args.contacts_csv:
            raise UsageError('--check N (a number of rows) needs --contacts_csv PREFIX, '
                             'and does not go with --discard')
    options = PipelineOptions(beam_args)
    set_default_runner(options, DEFAULT_BATCH_RUNNER)
    require_writable(options, {'--state': args.state})
    return args, options, open_state(args, options, None, f'state {command}', out,
                                     check=command == 'compact')


def compact(argv=None, out=None) -> dict:
    """Compacts a state; -> its figures (files and bytes before and after,
    contacts, contacts with event facts)."""
    out = out or sys.stdout
    args, options, state = _held('compact', argv, out)
    try:
        with state_failures(state):
            p = beam.Pipeline(options=options)
            state.fold(state.read(p), after=None)
            result = p.run()
            result.wait_until_finish()
    finally:
        state.close()
    counters = run_summary.pipeline_counters(result)
    after = list_state(args.state)
    figures = {'files_before': len(state.listing.files),
               'bytes_before': state.listing.size_in_bytes,
               'files_after': len(after.files), 'bytes_after': after.size_in_bytes,
               'contacts': counters.get('state/snapshot_contacts', 0),
               'event_contacts': counters.get('state/snapshot_event_contacts', 0)}
    print(run_summary.format_table(figures, f'state compact {args.state}'), file=out)
    return figures


def verify(argv=None, out=None) -> int:
    """Checks every file of a state; -> EXIT_DAMAGED when one is damaged."""
    out = out or sys.stdout
    args, _, state = _held('verify', argv, out)
    try:
        report = verify_state(args.state)
    finally:
        state.close()
    listed = report.manifest
    print(f'Sync state {args.state}: {report.files:,} files, {report.size:,} bytes; '
          + (f'manifest written by run {listed.written_by} at {listed.written_at}, '
             f'{len(listed.files):,} files listed.' if listed else 'no manifest.'), file=out)
    if not report.damages:
        unlisted = (f' ({report.unlisted:,} not listed yet, all readable: log files the next '
                    'fold lists)' if report.unlisted else '')
        print(f'Every file is as the manifest lists it{unlisted}.' if listed else
              'Every file is readable. The next backfill or `state compact` writes a manifest.',
              file=out)
        return EXIT_OK
    print(f'Damaged ({len(report.damages)}):', file=out)
    for damage in report.damages:
        print(f'  {damage.path}: {damage.problem}', file=out)
    print('A run now would stop before sending anything. Restore these files (object '
          'versioning, a backup), or run `segment-loops state repair --state '
          f'{args.state}`: it keeps what can be read and says what the next run sends again.',
          file=out)
    return EXIT_DAMAGED


def repair(argv=None, out=None) -> int:
    """Repairs a state; prints what was lost and what the next run sends again."""
    out = out or sys.stdout
    args, _, state = _held('repair', argv, out)
    try:
        report, losses = repair_state(args.state, state.run_id)
    finally:
        state.close()
    if not report.damages and report.manifest is not None:
        print(f'Sync state {args.state}: nothing to repair ({report.files:,} files, all as '
              'the manifest lists them).', file=out)
        return EXIT_OK
    print(f'Sync state {args.state}: repaired.', file=out)
    for loss in losses:
        print(f'  {loss.damage.path}: {loss.damage.problem}', file=out)
        kept = f'kept {loss.kept_records:,} records from it; ' if loss.kept_records else ''
        moved = f'moved to {loss.moved_to}; ' if loss.moved_to else ''
        print(f'    {moved}{kept}{loss.consequence}', file=out)
    if not losses:
        print('  The state had no manifest: it has one now, of every file (all readable).',
              file=out)
    else:
        print('The manifest now lists the files that remain. The next run sends again what '
              'the lost files recorded, as said above.', file=out)
    return EXIT_OK


def confirm_import(argv=None, out=None) -> int:
    """Confirms (or with --discard forgets) the state's pending CSV loads;
    with --check, only once Loops has a sample of their rows (else
    EXIT_NOT_IMPORTED)."""
    out = out or sys.stdout
    args, options, state = _held('confirm-import', argv, out)
    try:
        listing = state.listing
        if not listing.pending:
            print(f'Sync state {args.state}: no CSV load is pending.', file=out)
            return EXIT_OK
        if args.check:
            FileSystems.set_options(options)
            client = connect_to_loops(args).client()
            try:
                check = check_import(client, args.contacts_csv, args.check)
            finally:
                client.close()
            print(check_report(check, args.contacts_csv), file=out)
            if not check.imported:
                return EXIT_NOT_IMPORTED
        done = (discard_pending if args.discard else confirm_pending)(listing)
    finally:
        state.close()
    for run, files in done.items():
        if args.discard:
            print(f'Forgot the CSV load of run {run} ({files} files): the next run sends its '
                  'contacts as upserts.', file=out)
        else:
            print(f'Confirmed the CSV load of run {run} ({files} files): its contacts count '
                  'as delivered; the next run sends only what the files could not carry.',
                  file=out)
    return EXIT_OK


def _compact(argv) -> int:
    compact(argv)
    return EXIT_OK


# command -> (what runs it, what it does)
COMMANDS = {
    'compact': (_compact, "Fold a sync state's files into one snapshot per partition."),
    'verify': (verify, "Check every file of a sync state against its manifest."),
    'repair': (repair, 'Keep what can be read of a damaged sync state, set the rest aside '
                       'and rebuild its manifest.'),
    'confirm-import': (confirm_import, 'Count the contacts of the CSV loads as delivered, '
                                       'once the files are imported into Loops.'),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        raise UsageError(f'unknown state command {argv[0]!r}\n{USAGE}')
    return COMMANDS[argv[0]][0](argv[1:])
