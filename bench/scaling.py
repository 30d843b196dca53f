"""Benchmark 4: how the backfill's processing scales with the archive, in time and memory.

Runs `segment-loops backfill --dry_run` (a whole process, in each running mode)
and the straightforward loop (bench/straightforward_loop.py) once on generated archives of at least
100k, 300k and 1M events (generated once under bench-output/ and reused). Per
run it prints the wall time, lines per second, seconds per 100k lines relative
to the smallest archive (1.00 = linear), the peak resident memory of the whole
process tree and of its largest process, the archive's uncompressed size, and
the 1-minute load average before the run.

    .venv/bin/python bench/scaling.py [--events 100000,300000,1000000]
"""
import argparse
import glob
import os
import sys
from typing import Optional

from runs import (MODES, Archive, archive_for, backfill_command, fresh_directory, loop_command,
                  measure)


def uncompressed_mb(archive: Archive) -> float:
    """The archive's text size: the sum of each gzip file's stored length
    (its last four bytes, exact below 4 GiB per file)."""
    total = 0
    for path in glob.glob(archive.pattern):
        if path.endswith('.gz'):
            with open(path, 'rb') as f:
                f.seek(-4, os.SEEK_END)
                total += int.from_bytes(f.read(4), 'little')
    return total / 2 ** 20


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, run every size in every way once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', default='100000,300000,1000000',
                        help='comma-separated archive sizes in events')
    parser.add_argument('--modes', default=','.join(MODES),
                        help=f'backfill running modes, of: {", ".join(MODES)}')
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.events.split(',')]
    ways = {'straightforward loop': None,
            **{f'backfill, {name}': MODES[name] for name in args.modes.split(',')}}
    rows = []
    first_rate = {}
    for size in sizes:
        archive = archive_for(size)
        text_mb = uncompressed_mb(archive)
        for name, mode in ways.items():
            out = fresh_directory('scaling-run', f'{size}-{name.replace(" ", "-")}')
            command = (loop_command('straightforward_loop', archive, out) if mode is None
                       else backfill_command(archive, out, mode))
            run = measure(command, out + '.log')
            per_100k = run.wall / archive.lines * 100_000
            first_rate.setdefault(name, per_100k)
            rows.append((archive, text_mb, name, run, per_100k / first_rate[name]))
            print(f'{archive.lines:,} lines, {name}: {run.wall:.1f}s', file=sys.stderr)
    print('Benchmark 4: scaling (one run each)\n')
    print('| lines | archive MB (uncompressed) | command | wall s | lines/s '
          '| s per 100k lines vs smallest | peak MB, tree | peak MB, largest process '
          '| load before |')
    print('|---:|---:|---|---:|---:|---:|---:|---:|---:|')
    for archive, text_mb, name, run, relative in rows:
        print(f'| {archive.lines:,} | {text_mb:.0f} | {name} | {run.wall:.1f} '
              f'| {archive.lines / run.wall:,.0f} | {relative:.2f} | {run.peak_tree_mb:.0f} '
              f'| {run.peak_process_mb:.0f} | {run.load:.2f} |')


if __name__ == '__main__':
    main()
