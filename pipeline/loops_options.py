"""Options for writing to Loops, shared by every job that sends."""
import argparse
import os

from pipeline.options import UsageError
from transforms.loops.account import read_account
from transforms.loops.caller import check_base_url
from transforms.loops.connection import LoopsConnection
from transforms.loops.credentials import ApiKey
from transforms.mapping.conform import UNKNOWN_PROPERTY_POLICIES

API_KEY_ENV = 'LOOPS_API_KEY'
DEFAULT_BASE_URL = 'https://app.loops.so/api'


def add_loops_options(parser):
    group = parser.add_argument_group('Loops')
    group.add_argument(
        '--loops_base_url', default=DEFAULT_BASE_URL,
        help='Loops API base URL. Plain http:// is refused except to loopback hosts '
             '(the local sandbox).')
    group.add_argument(
        '--loops_api_key_file', default=None, metavar='PATH',
        help=f'File holding the Loops API key. Default: the {API_KEY_ENV} environment variable.')
    group.add_argument(
        '--loops_api_key_secret', default=None, metavar='projects/P/secrets/S/versions/V',
        help='Google Secret Manager version holding the key, read by the workers themselves '
             '(the key never travels with the job).')
    group.add_argument(
        '--rate_limit', type=float, default=10.0,
        help='Requests per second for the whole job (Loops\' default team limit is 10).')
    group.add_argument(
        '--write_shards', type=int, default=1,
        help='Writers sharing --rate_limit, each with an equal share. Requests are keyed into '
             'exactly this many keys, so no runner can run more writers than this.')
    group.add_argument(
        '--max_attempts', type=int, default=6,
        help='HTTP attempts per request for 429, 5xx, timeouts and connection errors.')
    group.add_argument(
        '--max_in_flight', type=int, default=None,
        help='Concurrent requests per writer. Default: enough for the rate at 500 ms latency.')
    group.add_argument('--connect_timeout', type=float, default=5.0, help='Seconds.')
    group.add_argument('--read_timeout', type=float, default=30.0, help='Seconds.')


def add_conform_options(parser) -> None:
    """--unknown_properties: what to do with properties the Loops account lacks."""
    parser.add_argument(
        '--unknown_properties', choices=UNKNOWN_PROPERTY_POLICIES, default='send',
        help='Contact properties the Loops account does not have: send them anyway and count '
             'them (default; Loops may not store them), drop them (counted), or fail the '
             'event (a failure record). Values are also coerced to the account\'s property '
             'types where that is safe ("42" -> 42 for a number property).')


def loops_argv(args) -> list:
    """The Loops options in `args` (an argparse namespace with them) that
    differ from their defaults, as arguments: for a command to print that
    another job (a replay) runs with the same connection. Never the key
    itself: only where it comes from."""
    parser = argparse.ArgumentParser()
    add_loops_options(parser)
    argv = []
    for name, default in vars(parser.parse_args([])).items():
        value = getattr(args, name, default)
        if value != default:
            argv += [f'--{name}', f'{value:g}' if isinstance(value, float) else str(value)]
    return argv


NO_KEY_HINT = 'or use --dry_run to send nothing'


def api_key_from(options, hint: str = NO_KEY_HINT) -> ApiKey:
    """The key from (in order) a Secret Manager version, a file, the
    environment; `hint` ends the message when there is none."""
    if options.loops_api_key_secret:
        return ApiKey(secret_version=options.loops_api_key_secret)
    if options.loops_api_key_file:
        try:
            with open(options.loops_api_key_file, encoding='utf-8') as f:
                value = f.read().strip()
        except OSError as error:
            raise UsageError(f'--loops_api_key_file: cannot read it ({error.strerror})') from None
        if not value:
            raise UsageError('--loops_api_key_file: the file is empty')
        return ApiKey(value)
    value = os.environ.get(API_KEY_ENV, '').strip()
    if not value:
        raise UsageError(f'no Loops API key: set {API_KEY_ENV}, or pass --loops_api_key_file '
                         f'or --loops_api_key_secret ({hint})')
    return ApiKey(value)


def require_secret_on_remote_runner(args, options) -> None:
    """A key read on this machine is pickled into the job; on Dataflow that
    is stored in the job's files. Only a Secret Manager name may travel."""
    from pipeline.options import runs_locally
    if not runs_locally(options) and not args.loops_api_key_secret:
        raise UsageError('on a remote runner, pass the key as --loops_api_key_secret '
                         'projects/P/secrets/S/versions/V: a key from LOOPS_API_KEY or '
                         '--loops_api_key_file would be stored in the job itself')


def connect_to_loops(options, no_key_hint: str = NO_KEY_HINT) -> LoopsConnection:
    """The validated connection described by the Loops options (argparse namespace)."""
    try:
        base_url = check_base_url(options.loops_base_url)
    except ValueError as error:
        raise UsageError(f'--loops_base_url: {error}') from None
    api_key = api_key_from(options, no_key_hint)
    try:
        return LoopsConnection(
            base_url=base_url,
            api_key=api_key,
            rate_limit=options.rate_limit,
            write_shards=options.write_shards,
            max_attempts=options.max_attempts,
            max_in_flight=options.max_in_flight,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
        )
    except ValueError as error:
        # The fields are named as the options: 'rate_limit must be positive'.
        raise UsageError(f'--{error}') from None


def preflight(connection: LoopsConnection) -> tuple:
    """Checks the key (GET /v1/api-key) and reads the account's properties and
    mailing lists, before any input is read: -> (team name, AccountSchema)."""
    team = connection.check_key()
    client = connection.client()
    try:
        return team, read_account(client)
    finally:
        client.close()
