"""Backfill delivery time against the rate limit (issue 3's goal: at most
1.25 x N/10 s plus startup for N requests at 10/s with 100-300 ms latency).

    .venv/bin/python bench/backfill_delivery.py [--users 60]

Generates a sample archive, runs `segment-loops backfill` (identify and track,
events of any age: the archive's days are not recent) in this process against the local sandbox at 10 requests/s with 100-300 ms
latency, and prints: N requests sent, the write phase (first to last request
the sandbox saw), the whole run, the ideal N/10, and the ratios.
"""
import argparse
import os
import tempfile
import time

from pipeline import backfill
from pipeline.local.sandbox import LoopsSandbox
from pipeline.local.samples import write_archive

RATE = 10
KEY = 'bench-key'


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--users', type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_archive(os.path.join(tmp, 'archive'), users=args.users, days=3, seed=1,
                                 keep_events=False)
        key_file = os.path.join(tmp, 'key')
        with open(key_file, 'w') as f:
            f.write(KEY)
        with LoopsSandbox(api_key=KEY, rate_limit=RATE, latency=(0.1, 0.3), seed=2) as sandbox:
            started = time.monotonic()
            summary = backfill.run([
                '--input', os.path.join(manifest.root, 'segment-logs', '*', '*', '*.gz'),
                '--types', 'identify,track', '--max_event_age', 'none',
                '--loops_base_url', sandbox.base_url,
                '--loops_api_key_file', key_file, '--rate_limit', str(RATE),
                '--dead_letter', os.path.join(tmp, 'dl') + '/'], out=open(os.devnull, 'w'))
            whole = time.monotonic() - started
            log = [r for r in sandbox.state()['requests'] if r['path'] != '/v1/api-key']
    sent = [r['t'] for r in log if r['status'] not in (None, 429)]
    n = summary['contacts'] + summary['events']
    write_phase = max(sent) - min(sent)
    ideal = n / RATE
    rows = [
        ('requests (N)', f'{n}'),
        ('HTTP calls (incl. retries)', f'{len(log)}'),
        ('429 answers', f'{sum(1 for r in log if r["status"] == 429)}'),
        ('ideal N/10 s', f'{ideal:.1f}'),
        ('write phase s', f'{write_phase:.1f}  ({write_phase / ideal:.3f} x ideal)'),
        ('whole run s', f'{whole:.1f}  (startup and processing {whole - write_phase:.1f})'),
        ('goal', f'write phase <= 1.25 x ideal: {"met" if write_phase <= 1.25 * ideal else "NOT met"}'),
    ]
    width = max(len(k) for k, _ in rows)
    print('backfill delivery at 10 requests/s, 100-300 ms latency')
    for key, value in rows:
        print(f'  {key:<{width}}  {value}')


if __name__ == '__main__':
    main()
