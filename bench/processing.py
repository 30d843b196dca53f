"""Benchmarks 1 and 5: the backfill's processing against the floor, and what merging saves.

Generates once, under bench-output/, a Segment archive of at least --events events, then
runs --rounds rounds of whole processes on it, interleaved so that other load on the
machine falls on each alike:
  - the straightforward loop (bench/straightforward_loop.py): the work done the plain,
    obvious way, with none of the project's code: the floor;
  - the plain loop (bench/plain_loop.py): the project's own functions in one loop, without
    Beam, which separates Beam's cost from the cost of the project's code;
  - `segment-loops backfill --dry_run` (identify and track, --max_event_age none) in each
    running mode.
Per command: wall time (best and median), lines per second, the ratio to the
straightforward loop's best, CPU seconds of the process tree, peak memory (the whole
tree) and the load average before each run. Every command must write the same requests,
compared by what they mean (parsed JSON), or the benchmark fails. Then, from the
backfill's summary, what merging saves: requests made against identify events read.

    .venv/bin/python bench/processing.py [--events 300000] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import sys
from typing import Optional

from runs import (MODES, Archive, archive_for, backfill_command, digest, fresh_directory,
                  loop_command, measure, requests_in)

LOOPS = ('straightforward loop', 'plain loop')


def command_for(name: str, archive: Archive, out: str, modes: dict) -> list:
    if name in LOOPS:
        return loop_command(name.replace(' ', '_'), archive, out)
    return backfill_command(archive, out, modes[name.split(', ', 1)[1]])


def run_rounds(archive: Archive, rounds: int, modes: dict) -> tuple:
    """Runs every command `rounds` times, interleaved; checks they all wrote
    the same requests. -> ({name: [Run]}, the backfill's summary)."""
    names = list(LOOPS) + [f'backfill, {mode}' for mode in modes]
    runs = {name: [] for name in names}
    digests, summary = {}, None
    for round_number in range(rounds):
        for name in names:
            out = fresh_directory('processing-run', name.replace(', ', '-').replace(' ', '-'))
            run = measure(command_for(name, archive, out, modes), out + '.log')
            runs[name].append(run)
            print(f'round {round_number + 1}: {name}: {run.wall:.2f}s (load {run.load:.2f})',
                  file=sys.stderr)
            digests.setdefault(name, digest(requests_in(out)))
            if summary is None and name.startswith('backfill'):
                with open(os.path.join(out, 'summary.json'), encoding='utf-8') as f:
                    summary = json.load(f)
    if len(set(digests.values())) != 1:
        raise SystemExit(f'the commands wrote different requests: {digests}')
    return runs, summary


def processing_table(archive: Archive, runs: dict) -> str:
    floor = min(run.wall for run in runs['straightforward loop'])
    rows = ['| command | wall s, best | wall s, median | lines/s (best) '
            '| x straightforward loop (best) | CPU s (median) | peak MB, tree | load before |',
            '|---|---:|---:|---:|---:|---:|---:|---:|']
    for name, timings in runs.items():
        best = min(run.wall for run in timings)
        rows.append(
            f'| {name} | {best:.2f} | {statistics.median(r.wall for r in timings):.2f} '
            f'| {archive.lines / best:,.0f} | {best / floor:.2f} '
            f'| {statistics.median(r.cpu for r in timings):.1f} '
            f'| {max(r.peak_tree_mb for r in timings):.0f} '
            f'| {", ".join(f"{r.load:.2f}" for r in timings)} |')
    return '\n'.join(rows)


def merging_table(summary: dict) -> str:
    """Benchmark 5 from a dry run's summary: identify calls -> one upsert per contact."""
    upserts = summary['map/contact_updates']
    made = summary['contacts']
    rows = ['| identify calls mapped to upserts | contact upserts made | per identify call '
            '| hours at 10/s, one per call / merged |',
            '|---:|---:|---:|---:|',
            f'| {upserts:,} | {made:,} | {made / upserts:.3f} '
            f'| {upserts / 36000:.2f} / {made / 36000:.2f} |']
    return '\n'.join(rows)


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, run the rounds, print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', type=int, default=300_000,
                        help='at least this many events in the archive (default 300000)')
    parser.add_argument('--rounds', type=int, default=3, help='runs of each command (default 3)')
    parser.add_argument('--modes', default=','.join(MODES),
                        help=f'backfill running modes to time, of: {", ".join(MODES)}')
    args = parser.parse_args(argv)
    modes = {name: MODES[name] for name in args.modes.split(',')}
    archive = archive_for(args.events)
    runs, summary = run_rounds(archive, args.rounds, modes)
    print(f'Benchmark 1: {archive.lines:,} lines ({archive.events:,} distinct valid events, '
          f'identify and track), {args.rounds} rounds, {os.cpu_count()} cores; every command '
          'wrote the same requests\n')
    print(processing_table(archive, runs))
    print('\nBenchmark 5: what merging saves\n')
    print(merging_table(summary))


if __name__ == '__main__':
    main()
