"""How close delivery gets to the Loops rate limit, against the local sandbox.

Sends N upserts of distinct contacts through `deliver_sequences` to a
`LoopsSandbox` limited to 10 requests/s with 100-300 ms of latency, and prints
N, the seconds taken, the ideal N/10, their ratio, and the 429s the server
answered, and the time the client's token bucket held requests back (summed
over the writer's threads, like the `deliver/throttled_ms` counter). The goals:
ratio at most 1.1, fewer than 1% of requests answered 429.

    .venv/bin/python bench/delivery_rate.py [--requests 300]
"""
import argparse
import time
from typing import Optional

from pipeline.local.sandbox import LoopsSandbox
from transforms.core.records import NO_STAMP, ContactSequence, contact_upsert
from transforms.delivery.in_flight import deliver_sequences, in_flight_for, steady_pace
from transforms.loops.client import LoopsClient

RATE_LIMIT = 10.0
LATENCY = (0.1, 0.3)
API_KEY = 'bench-key'


def run(requests: int, seed: int) -> dict:
    """Deliver `requests` upserts; return the figures of the table."""
    sequences = (ContactSequence(f'user:bench{n}', (contact_upsert(
                     {'email': f'bench{n}@example.com', 'userId': f'bench{n}'},
                     f'user:bench{n}', NO_STAMP, 'bench'),))
                 for n in range(requests))
    with LoopsSandbox(api_key=API_KEY, rate_limit=RATE_LIMIT, latency=LATENCY,
                      seed=seed) as sandbox:
        client = LoopsClient(sandbox.base_url, API_KEY, rate=RATE_LIMIT, seed=seed)
        steady_pace()   # as a writer does before it sends
        start = time.monotonic()
        outcomes = [delivered.outcome for delivered in
                    deliver_sequences(client, sequences, in_flight_for(RATE_LIMIT))]
        seconds = time.monotonic() - start
        throttled = client.throttled_seconds
        client.close()
        logged = sandbox.state()['requests']
    rate_limited = sum(1 for entry in logged if entry['status'] == 429)
    ideal = requests / RATE_LIMIT
    return {'n': requests, 'seconds': seconds, 'ideal': ideal, 'ratio': seconds / ideal,
            'rate_limited': rate_limited, 'share_429': rate_limited / len(logged),
            'throttled': throttled,
            'delivered': sum(1 for outcome in outcomes if outcome.status == 'delivered')}


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, run once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--requests', type=int, default=300, help='N upserts (default 300)')
    parser.add_argument('--seed', type=int, default=1)
    args = parser.parse_args(argv)
    figures = run(args.requests, args.seed)
    print(f'{"N":>6} {"seconds":>8} {"ideal":>7} {"ratio":>6} {"429s":>5} {"429 share":>9}'
          f' {"delivered":>9} {"throttled s":>11}')
    print(f'{figures["n"]:>6} {figures["seconds"]:>8.2f} {figures["ideal"]:>7.1f} '
          f'{figures["ratio"]:>6.3f} {figures["rate_limited"]:>5} '
          f'{figures["share_429"]:>9.2%} {figures["delivered"]:>9} '
          f'{figures["throttled"]:>11.1f}')


if __name__ == '__main__':
    main()
