"""Streaming: delay from publish to Loops when idle, and sustained rate under a backlog.

    .venv/bin/python bench/stream_latency.py [--backlog 300] [--probes 5]

Starts the real Pub/Sub emulator and the local Loops sandbox at 10 requests/s
with 100-300 ms latency, runs `segment-loops stream` on the DirectRunner
(default --max_buffering_seconds 1), then:
  1. idle: publishes one track event at a time and times its arrival in Loops;
  2. backlog: publishes N track events at once and measures the rate at which
     Loops accepts them, against the 10/s limit.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import stream  # noqa: E402
from pipeline.local.sandbox import LoopsSandbox  # noqa: E402
from tests.pubsub_emulator import PubsubEmulator  # noqa: E402

PROJECT = 'segment-loops-bench'
KEY = 'bench-stream-key'
RATE = 10


def track(n):
    return json.dumps({'type': 'track', 'messageId': f'bench-{n}', 'userId': f'u{n % 50}',
                       'event': 'Order Completed', 'properties': {'email': f'u{n % 50}@example.com',
                                                                  'n': n},
                       'timestamp': '2026-11-01T10:00:00Z'}).encode()


def wait_for_events(sandbox, count, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = sandbox.state()['events']
        if len(events) >= count:
            return events
        time.sleep(0.02)
    raise TimeoutError(f'only {len(sandbox.state()["events"])} of {count} events arrived')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--backlog', type=int, default=300)
    parser.add_argument('--probes', type=int, default=5)
    parser.add_argument('--batch_size', type=int, default=None,
                        help="the job's --batch_size (default: the job's own default)")
    args = parser.parse_args()
    with PubsubEmulator(), tempfile.TemporaryDirectory() as tmp:
        from google.cloud import pubsub_v1
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(PROJECT, 'events')
        subscription = subscriber.subscription_path(PROJECT, 'loops')
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic)
        key_file = os.path.join(tmp, 'key')
        with open(key_file, 'w') as f:
            f.write(KEY)
        with LoopsSandbox(api_key=KEY, rate_limit=RATE, latency=(0.1, 0.3), seed=1) as sandbox:
            result = stream.start([
                '--subscription', subscription, '--loops_base_url', sandbox.base_url,
                '--loops_api_key_file', key_file, '--rate_limit', str(RATE),
                '--dead_letter', os.path.join(tmp, 'dl') + '/',
                *(['--batch_size', str(args.batch_size)] if args.batch_size else [])],
                out=open(os.devnull, 'w'))
            try:
                publisher.publish(topic, track(10_000)).result()   # warm-up: the job starts
                wait_for_events(sandbox, 1, timeout=120)
                delays = []
                for probe in range(args.probes):
                    time.sleep(2)   # idle
                    published = time.time()
                    publisher.publish(topic, track(20_000 + probe)).result()
                    events = wait_for_events(sandbox, 2 + probe)
                    delays.append(events[-1]['received_at'] - published)
                before = len(sandbox.state()['events'])
                published = time.time()
                futures = [publisher.publish(topic, track(n)) for n in range(args.backlog)]
                for future in futures:
                    future.result()
                events = wait_for_events(sandbox, before + args.backlog)
                arrivals = sorted(e['received_at'] for e in events[before:])
                requests = [r for r in sandbox.state()['requests'] if r['t'] >= published]
            finally:
                result.cancel()
    span = arrivals[-1] - arrivals[0]
    rate = (len(arrivals) - 1) / span if span else float('inf')
    rows = [
        ('idle: publish -> Loops, median s', f'{statistics.median(delays):.2f}'),
        ('idle: min / max s', f'{min(delays):.2f} / {max(delays):.2f}'),
        ('backlog: events', f'{args.backlog}'),
        ('backlog: first to last arrival s', f'{span:.1f} (ideal {args.backlog / RATE:.1f})'),
        ('backlog: sustained rate /s', f'{rate:.2f} of {RATE} ({rate / RATE:.0%})'),
        ('backlog: from publish to last s', f'{arrivals[-1] - published:.1f}'),
        ('429 answers', f'{sum(1 for r in requests if r["status"] == 429)}'),
    ]
    width = max(len(k) for k, _ in rows)
    print(f'stream at {RATE} requests/s, 100-300 ms latency, --max_buffering_seconds 1, '
          f'--batch_size {args.batch_size or "default"}')
    for key, value in rows:
        print(f'  {key:<{width}}  {value}')


if __name__ == '__main__':
    main()
