"""Benchmark: a backfill's processing with a Segment destination's subscriptions as its mapping.

On the archive of bench/processing.py (made once under bench-output/), runs
`segment-loops backfill --dry_run` in-process (identify and track, any age)
--rounds times with each mapping, interleaved so that other load on the
machine falls on each alike:
  - the default mapping (our language, no --mapping);
  - --segment_subscriptions of the destination's two default subscriptions
    (identify -> createOrUpdateContact, track -> sendEvent, each with the
    action's default field mapping, as Segment's UI creates them): the same
    calls, mapped through FQL, Mapping Kit and Segment's field checks;
  - --segment_subscriptions of tests/data/segment/subscriptions_live_setup.json
    (those two and a Signed Up track -> createOrUpdateContact: a second
    route for some calls).
Per mapping: wall seconds (best, median), CPU seconds of the process tree
(median) and lines per second (best), and the requests each wrote.

    .venv/bin/python bench/subscriptions.py [--events 300000] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import sys
from typing import Optional

from runs import (MODES, OUTPUT, ROOT, archive_for, backfill_command, fresh_directory, measure,
                  requests_in)
from transforms.mapping.loops_actions import CREATE_OR_UPDATE_CONTACT, SEND_EVENT

LIVE_SETUP = os.path.join(ROOT, 'tests', 'data', 'segment', 'subscriptions_live_setup.json')


def default_subscriptions(path: str) -> str:
    """Writes the destination's default subscriptions, as the Public API lists them."""
    subscriptions = [{'id': f'sub_{action.slug}', 'name': action.title, 'actionSlug': action.slug,
                      'enabled': True, 'trigger': action.default_trigger,
                      'settings': action.default_mapping()}
                     for action in (CREATE_OR_UPDATE_CONTACT, SEND_EVENT)]
    with open(path, 'w', encoding='utf-8') as out:
        json.dump({'data': {'subscriptions': subscriptions}}, out, indent=2)
    return path


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', type=int, default=300_000,
                        help='at least this many events in the archive (default 300000)')
    parser.add_argument('--rounds', type=int, default=3, help='runs of each mapping (default 3)')
    args = parser.parse_args(argv)
    archive = archive_for(args.events)
    os.makedirs(OUTPUT, exist_ok=True)
    mappings = {
        'default mapping': [],
        "the destination's default subscriptions": [
            '--segment_subscriptions',
            default_subscriptions(os.path.join(OUTPUT, 'default-subscriptions.json'))],
        'the live setup (+ Signed Up -> contact)': ['--segment_subscriptions', LIVE_SETUP],
    }
    runs = {name: [] for name in mappings}
    written = {}
    for round_number in range(args.rounds):
        for number, (name, options) in enumerate(mappings.items()):
            out = fresh_directory('subscriptions-run', f'mapping-{number}')
            run = measure(backfill_command(archive, out, MODES['in-process'] + options),
                          out + '.log')
            runs[name].append(run)
            written.setdefault(name, len(requests_in(out)))
            print(f'round {round_number + 1}: {name}: {run.wall:.2f}s (load {run.load:.2f})',
                  file=sys.stderr)
    print(f'{archive.lines:,} lines, backfill --dry_run in-process, identify and track of any '
          f'age, {args.rounds} rounds, {os.cpu_count()} cores\n')
    print('| mapping | wall s, best | wall s, median | CPU s (median) | lines/s (best) '
          '| requests | load before |')
    print('|---|---:|---:|---:|---:|---:|---|')
    for name, timings in runs.items():
        best = min(run.wall for run in timings)
        print(f'| {name} | {best:.2f} | {statistics.median(r.wall for r in timings):.2f} '
              f'| {statistics.median(r.cpu for r in timings):.1f} | {archive.lines / best:,.0f} '
              f'| {written[name]:,} | {", ".join(f"{r.load:.2f}" for r in timings)} |')


if __name__ == '__main__':
    main()
