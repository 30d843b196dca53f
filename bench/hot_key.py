"""Benchmark 6: a hot key. One userId with hundreds of thousands of events (a bot, a
load test, a server-side "system" user) beside a few hundred ordinary users.

For each size, generates once under bench-output/ an archive where one userId has N
events (half identify, half track), then runs `segment-loops backfill --dry_run`
(identify and track, --max_event_age none) in-process, and prints: N, lines, requests
written (and how many are the hot user's event sends: every one of its distinct track
events must be written), wall and CPU seconds, and the peak memory of the whole process
tree. The hot user's identifies merge into one upsert as they are read, its events
are ordered in runs spilled to disk (the shuffle carries a reference to each run),
and the dry run writes each step's requests where they are made (a Flatten would
hold them all in the in-process runner's memory), so memory does not grow with N.

    .venv/bin/python bench/hot_key.py [--events 300000,600000,1200000]
"""
import argparse
import glob
import json
import os
import sys
from typing import Optional

from pipeline.local.hot_user import HOT_USER_ID
from runs import MODES, backfill_command, fresh_directory, hot_archive_for, measure


def hot_user_sends(out: str) -> int:
    """How many event sends of the hot user the dry run wrote."""
    sends = 0
    for path in glob.glob(os.path.join(out, 'requests*')):
        with open(path, encoding='utf-8') as f:
            for line in f:
                request = json.loads(line)
                body = request['body']
                sends += request['path'] == '/v1/events/send' and body.get('userId') == HOT_USER_ID
    return sends


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', default='300000,600000,1200000',
                        help="comma-separated sizes of the hot user's events")
    args = parser.parse_args(argv)
    rows = []
    for size in (int(size) for size in args.events.split(',')):
        archive = hot_archive_for(size)
        out = fresh_directory('hot-key-run', str(size))
        run = measure(backfill_command(archive, out, MODES['in-process']), out + '.log')
        with open(os.path.join(out, 'summary.json'), encoding='utf-8') as f:
            summary = json.load(f)
        rows.append((size, archive, summary, hot_user_sends(out), run))
        print(f'{size:,} hot events: {run.wall:.1f}s, {run.peak_tree_mb:.0f} MB', file=sys.stderr)
    print('Benchmark 6: one userId with N events (half identify, half track) beside 300 '
          'ordinary users; dry run, in-process\n')
    print('| N | lines | requests written | its event sends written | wall s | CPU s '
          '| peak MB, tree | load before |')
    print('|---:|---:|---:|---:|---:|---:|---:|---:|')
    for size, archive, summary, sends, run in rows:
        print(f'| {size:,} | {archive.lines:,} | {summary["contacts"] + summary["events"]:,} '
              f'| {sends:,} | {run.wall:.1f} | {run.cpu:.1f} | {run.peak_tree_mb:.0f} '
              f'| {run.load:.2f} |')


if __name__ == '__main__':
    main()
