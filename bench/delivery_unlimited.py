"""Benchmark 3: delivery without a rate limit, against the local sandbox.

Starts a `LoopsSandbox(rate_limit=0)` in this process and delivers the same
requests (the upserts and event sends of a generated archive, identify and
track) two ways:
  - `segment-loops backfill` (a whole process) with --write_shards 1, 2, 4 and 8,
    --rate_limit high enough never to wait and --max_in_flight per writer, in
    each running mode (in-process: one writer at a time; 2 processes: two);
  - a naive loop in a child process: one `requests.request` after another, no
    session, in the dry run's order (every upsert, then every event send).
Prints, per way: requests, seconds from the first request the sandbox received
to the last, requests per second over that span, the whole process's seconds,
and answers other than 2xx. The sandbox is a Python server in this process, so
its own ceiling is part of every figure.

    .venv/bin/python bench/delivery_unlimited.py [--events 30000] [--max_in_flight 16]
"""
import argparse
import collections
import glob
import json
import multiprocessing
import os
import subprocess
import sys
import time
from typing import Optional

import requests

from pipeline.local.sandbox import LoopsSandbox
from runs import MODES, OUTPUT, PYTHON, ROOT, archive_for, load_average

API_KEY = 'bench-key'
SHARDS = (1, 2, 4, 8)
UNLIMITED = '1000000'   # requests/s: the writers' token buckets never make them wait
TYPES = 'identify,track'
ANY_AGE = ('--max_event_age', 'none')   # the archive's days are not recent


def dry_run_requests(pattern: str, out: str) -> list:
    """The requests a backfill of `pattern` would send, upserts first, as dicts."""
    subprocess.run(['rm', '-rf', out], check=True)
    subprocess.run([PYTHON, '-m', 'pipeline', 'backfill', '--input', pattern, '--types', TYPES,
                    *ANY_AGE, '--dry_run', os.path.join(out, 'requests'),
                    '--dead_letter', os.path.join(out, 'dead/')],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    lines = [json.loads(line) for path in sorted(glob.glob(os.path.join(out, 'requests*')))
             for line in open(path, encoding='utf-8')]
    return sorted(lines, key=lambda request: request['path'] != '/v1/contacts/update')


def naive_loop(base_url: str, sent: list) -> None:
    """Sends every request in turn, each with its own connection (in a child process)."""
    for request in sent:
        requests.request(request['method'], base_url + request['path'],
                         json=request['body'],
                         headers={**request['headers'], 'Authorization': f'Bearer {API_KEY}'},
                         timeout=30)


def delivery_span(sandbox: LoopsSandbox) -> dict:
    """The requests the sandbox received since its last reset, and their span."""
    sends = [entry for entry in sandbox.state()['requests']
             if entry['method'] in ('PUT', 'POST')]
    span = sends[-1]['t'] - sends[0]['t'] if len(sends) > 1 else 0.0
    return {'requests': len(sends), 'span': span,
            'rate': len(sends) / span if span else 0.0,
            'not_2xx': collections.Counter(entry['status'] for entry in sends
                                           if not 200 <= (entry['status'] or 0) < 300)}


def run_backfill(sandbox: LoopsSandbox, pattern: str, shards: int, max_in_flight: int,
                 mode: list, out: str) -> float:
    """One whole backfill process against the sandbox; returns its seconds."""
    subprocess.run(['rm', '-rf', out], check=True)
    os.makedirs(out)
    started = time.monotonic()
    with open(os.path.join(out, 'backfill.log'), 'w', encoding='utf-8') as log:
        subprocess.run([PYTHON, '-m', 'pipeline', 'backfill', '--input', pattern,
                        '--types', TYPES, *ANY_AGE, '--loops_base_url', sandbox.base_url,
                        '--rate_limit', UNLIMITED, '--write_shards', str(shards),
                        '--max_in_flight', str(max_in_flight),
                        '--dead_letter', os.path.join(out, 'dead/'), *mode],
                       cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT,
                       env={**os.environ, 'LOOPS_API_KEY': API_KEY})
    return time.monotonic() - started


def run_naive(sandbox: LoopsSandbox, sent: list) -> float:
    started = time.monotonic()
    child = multiprocessing.get_context('fork').Process(target=naive_loop,
                                                        args=(sandbox.base_url, sent))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f'the naive loop failed (exit {child.exitcode})')
    return time.monotonic() - started


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, deliver each way once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', type=int, default=30_000,
                        help='events in the generated archive (default 30000)')
    parser.add_argument('--max_in_flight', type=int, default=16,
                        help='concurrent requests per writer (default 16)')
    args = parser.parse_args(argv)
    archive = archive_for(args.events)
    out = os.path.join(OUTPUT, 'delivery-unlimited')
    sent = dry_run_requests(archive.pattern, os.path.join(out, 'dry-run'))
    rows = []
    with LoopsSandbox(api_key=API_KEY, rate_limit=0) as sandbox:
        for mode_name, mode in MODES.items():
            for shards in SHARDS:
                sandbox.reset()
                load = load_average()
                run_out = os.path.join(out, f'{mode_name.replace(" ", "-")}-shards-{shards}')
                seconds = run_backfill(sandbox, archive.pattern, shards, args.max_in_flight,
                                       mode, run_out)
                rows.append((f'backfill {mode_name}, --write_shards {shards}',
                             delivery_span(sandbox), seconds, load))
                print(f'{rows[-1][0]}: {seconds:.1f}s', file=sys.stderr)
        sandbox.reset()
        load = load_average()
        seconds = run_naive(sandbox, sent)
        rows.append(('naive sequential requests.request loop', delivery_span(sandbox),
                     seconds, load))
    print(f'Benchmark 3: {len(sent):,} requests ({TYPES}) to LoopsSandbox(rate_limit=0), '
          f'max_in_flight {args.max_in_flight} per writer\n')
    print('| way | requests | delivery s | requests/s | whole process s | answers not 2xx '
          '| load before |')
    print('|---|---:|---:|---:|---:|---|---:|')
    for name, span, seconds, load in rows:
        answers = ', '.join(f'{count} x {status}' for status, count in
                            sorted(span['not_2xx'].items(), key=str)) or 'none'
        print(f'| {name} | {span["requests"]:,} | {span["span"]:.2f} | {span["rate"]:,.0f} '
              f'| {seconds:.1f} | {answers} | {load:.2f} |')


if __name__ == '__main__':
    main()
