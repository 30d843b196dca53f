"""`segment-loops sandbox`: serve a local Loops-compatible API until SIGINT/SIGTERM."""
import argparse
import os
import secrets
import signal
import sys
import threading
from typing import Optional

from pipeline.local.api import NULL_EVENT_PROPERTIES, WORKFLOW_ENDPOINTS
from pipeline.local.error_shapes import ERROR_SHAPES
from pipeline.local.sandbox import LoopsSandbox, account_fixture
from pipeline.local.traffic import DEFAULT_SETTINGS, SHARE_SETTINGS


def parse_latency_ms(text: str) -> tuple[float, float]:
    """'100-300' or '100' (milliseconds) -> (low, high) seconds."""
    low, _, high = text.partition('-')
    try:
        bounds = (float(low) / 1000, float(high or low) / 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected MS or LOW-HIGH, got {text!r}') from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f'expected 0 <= LOW <= HIGH, got {text!r}')
    return bounds


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='segment-loops sandbox',
        description='Serve a local Loops-compatible API until SIGINT/SIGTERM. The API '
                    'key is $LOOPS_API_KEY, or a generated one that is printed.')
    parser.add_argument('--port', type=int, default=8787)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--rate_limit', type=float, default=10.0,
                        help='requests per second per team; 0 turns limiting off')
    parser.add_argument('--latency_ms', type=parse_latency_ms, default=(0.0, 0.0),
                        help='added latency per request: MS or LOW-HIGH')
    parser.add_argument('--team_name', help="the team's name (default: the account file's, "
                                            "else 'Sandbox team')")
    parser.add_argument('--seed', type=int, default=None)
    for name in SHARE_SETTINGS:
        parser.add_argument(f'--{name}', type=float, default=0.0,
                            help='share of requests (0..1) with this fault')
    parser.add_argument('--slow_seconds', type=float, default=DEFAULT_SETTINGS['slow_seconds'])
    parser.add_argument('--account', metavar='FILE',
                        help='a JSON file of the account: team_name, mailing_lists, '
                             'custom_properties, contacts, workflows, event_patterns')
    parser.add_argument('--error_shape', choices=ERROR_SHAPES, default='documented',
                        help='the body of error answers')
    parser.add_argument('--workflow_endpoints', choices=WORKFLOW_ENDPOINTS,
                        default='available',
                        help='forbidden: 403 on workflows and event patterns; missing: 404')
    parser.add_argument('--null_event_properties', choices=NULL_EVENT_PROPERTIES,
                        default='refuse',
                        help='accept: store a null event property (Loops types them '
                             'without null)')
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """The `segment-loops sandbox` command: argv -> exit status (0 after SIGINT/SIGTERM)."""
    args = _argument_parser().parse_args(argv)
    api_key = os.environ.get('LOOPS_API_KEY')
    generated = not api_key
    if generated:
        api_key = secrets.token_urlsafe(24)
    settings = {name: getattr(args, name) for name in SHARE_SETTINGS + (
        'slow_seconds', 'error_shape', 'workflow_endpoints', 'null_event_properties')}
    try:
        account = account_fixture(args.account) if args.account else {}
        if args.team_name:
            account['team_name'] = args.team_name
        sandbox = LoopsSandbox(api_key, host=args.host, port=args.port,
                               rate_limit=args.rate_limit, latency=args.latency_ms,
                               seed=args.seed, **account, **settings)
        sandbox.start()
    except (ValueError, OSError) as error:
        print(f'segment-loops sandbox: {error}', file=sys.stderr)
        return 2
    stop_requested = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop_requested.set())
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f'Loops sandbox serving at {sandbox.base_url}', flush=True)
        if generated:
            print(f'Generated API key (a local test credential): {api_key}', flush=True)
        stop_requested.wait()
    finally:
        sandbox.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
    print('Loops sandbox stopped', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
