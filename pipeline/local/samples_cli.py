"""`segment-loops generate`: write a sample Segment archive from the command line."""
import argparse
import os
import sys
import time
from typing import Optional

from pipeline.local.archive import ARCHIVE_PREFIX
from pipeline.local.samples import write_archive, write_hot_user_archive


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='segment-loops generate',
                                     description='Write a realistic Segment S3 archive.')
    parser.add_argument('--output', required=True, help='directory to write under')
    parser.add_argument('--users', type=int, default=20)
    parser.add_argument('--days', type=int, default=2)
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--files_per_day', type=int, default=3)
    parser.add_argument('--source_id', default='source1')
    parser.add_argument('--start_day', default='2026-11-01', help='first received day, UTC')
    parser.add_argument('--no_invalid', action='store_true', help='only valid event lines')
    parser.add_argument('--no_duplicates', action='store_true', help='no repeated lines')
    parser.add_argument('--hot_user_events', type=int, default=0, metavar='N',
                        help='also N events of one server-side user (half identify, half '
                             'track), spread over the days; busy days get more files')
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """`segment-loops generate`: the arguments after `generate` -> an archive
    written under --output and a one-line summary on stdout; returns 0."""
    parser = _argument_parser()
    args = parser.parse_args(argv)
    if args.hot_user_events < 0:
        parser.error('--hot_user_events must be 0 or more')
    started = time.monotonic()
    options = dict(source_id=args.source_id, files_per_day=args.files_per_day,
                   invalid=not args.no_invalid, duplicates=not args.no_duplicates,
                   start_day=args.start_day)
    if args.hot_user_events:
        manifest = write_hot_user_archive(args.output, args.hot_user_events, args.users,
                                          args.days, args.seed, **options)
    else:
        manifest = write_archive(args.output, args.users, args.days, args.seed,
                                 keep_events=False, **options)
    valid = manifest.lines - manifest.invalid_lines - manifest.duplicate_lines
    print(f'wrote {manifest.lines} lines ({valid} events, {manifest.invalid_lines} invalid, '
          f'{manifest.duplicate_lines} duplicates) in {len(manifest.files)} files over '
          f'{len(manifest.days)} days to {os.path.join(args.output, ARCHIVE_PREFIX)} '
          f'in {time.monotonic() - started:.1f}s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
