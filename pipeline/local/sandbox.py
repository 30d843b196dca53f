"""A local, Loops-compatible HTTP server for the demo, the tests and the benchmarks.

The real Loops API cannot be reached from this project's machines, so
`LoopsSandbox` plays it in-process (standard library only): the endpoints, the
validation and upsert rules of /work/shared/reference/loops-api.md, the
per-team rate limit with its headers, and faults injected on purpose (500s,
dropped connections, slow answers, outages) to exercise a client's retries.

Use it as a context manager and point a client at `base_url`::

    with LoopsSandbox('key', rate_limit=10, fail_after=0.1, seed=7) as sandbox:
        ...  # requests against sandbox.base_url with 'Authorization: Bearer key'
        sandbox.state()['events']

The account may be given workflows and event patterns (fixtures in the
format of workflows.py, or a JSON file of constructor arguments read by
`account_fixture`); `state()['triggers']` records every workflow their
triggers set off. Settings of the API side: `error_shape` (error_shapes.py)
and `workflow_endpoints` (api.py).

Besides /api, the server answers inspection requests (no key, no limits, no
faults): GET /_sandbox/state, POST /_sandbox/config (a JSON object of
settings), POST /_sandbox/reset and POST /_sandbox/import_csv (CSV text).
`segment-loops sandbox` (sandbox_cli.py) runs the same server on its own.
"""
import json
import threading
from typing import Any, Iterable, Optional

from pipeline.local.account import DEFAULT_MAILING_LISTS, LoopsAccount
from pipeline.local.api import API_PREFIX, API_SETTINGS, LoopsApi
from pipeline.local.rules import ApiError, parse_json_object
from pipeline.local.server import Reply, Request, SandboxHTTPServer, error_reply
from pipeline.local.traffic import TrafficControl, validated_settings

SANDBOX_PREFIX = '/_sandbox/'
INSPECTION_METHODS = {'/_sandbox/state': 'GET', '/_sandbox/config': 'POST',
                      '/_sandbox/reset': 'POST', '/_sandbox/import_csv': 'POST'}
FIXTURE_KEYS = ('team_name', 'mailing_lists', 'custom_properties', 'contacts', 'workflows',
                'event_patterns')


def account_fixture(path: str) -> dict:
    """A JSON file of an account -> LoopsSandbox keyword arguments: an object
    with any of team_name, mailing_lists, custom_properties, contacts,
    workflows and event_patterns. ValueError for anything else."""
    with open(path, encoding='utf-8') as f:
        try:
            fixture = json.load(f)
        except ValueError as error:
            raise ValueError(f'{path}: not JSON ({error})') from None
    if not isinstance(fixture, dict):
        raise ValueError(f'{path}: expected a JSON object')
    unknown = sorted(set(fixture) - set(FIXTURE_KEYS))
    if unknown:
        raise ValueError(f'{path}: unknown keys {unknown}; known: {", ".join(FIXTURE_KEYS)}')
    return fixture


class LoopsSandbox:
    """A Loops-compatible API server on a local port, with fault injection.

    In: the API key clients must send, the team's name, mailing lists, custom
    properties, starting `contacts` (each a contact's properties, e.g.
    {'email': ..., 'userId': ..., 'subscribed': False}), `workflows` and
    `event_patterns` (workflows.py), the rate limit and latency, the API's
    settings (`error_shape`, `workflow_endpoints`), fault shares
    (traffic.DEFAULT_SETTINGS) and a seed for the random draws. `start()`
    serves in a daemon thread; `base_url` is what a client uses; `state()`
    shows what the server stored, received and set off.
    """

    def __init__(self, api_key: str = 'sandbox-key', *, team_name: str = 'Sandbox team',
                 host: str = '127.0.0.1', port: int = 0, rate_limit: Optional[float] = 10.0,
                 latency: tuple[float, float] = (0.0, 0.0),
                 mailing_lists: Optional[list[dict]] = None,
                 custom_properties: Optional[list[dict]] = None,
                 contacts: Iterable[dict] = (), workflows: Iterable[dict] = (),
                 event_patterns: Iterable[dict] = (), seed: Optional[int] = None,
                 **settings: Any):
        if not isinstance(api_key, str) or not api_key:
            raise ValueError('api_key must be a non-empty string')
        self._host = host
        self._port = port
        api_settings, faults = _split_settings(settings)
        self._traffic = TrafficControl({'rate_limit': rate_limit, 'latency': latency,
                                        **faults}, seed)
        account = LoopsAccount(
            team_name, DEFAULT_MAILING_LISTS if mailing_lists is None else mailing_lists,
            custom_properties or [], contacts, workflows, event_patterns)
        self._api = LoopsApi(api_key, account, self._traffic, **api_settings)
        self._server: Optional[SandboxHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else 'stopped'
        return f'LoopsSandbox({where})'

    def __enter__(self) -> 'LoopsSandbox':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> 'LoopsSandbox':
        """Binds the port and serves in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError('the sandbox is already running')
        server = SandboxHTTPServer((self._host, self._port), self._answer,
                                   self._traffic.rate_headers)
        self._traffic.allow_pauses()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={'poll_interval': 0.05},
            name='loops-sandbox', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving, closes the listening socket and every open connection."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._traffic.interrupt_pauses()
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()
        self._server = self._thread = None

    @property
    def base_url(self) -> str:
        """'http://<host>:<port>/api' of the running server."""
        if self._server is None:
            raise RuntimeError('the sandbox is not running')
        return f'http://{self._host}:{self._server.server_address[1]}{API_PREFIX}'

    def configure(self, **settings: Any) -> None:
        """Changes rate_limit, latency, fault settings, error_shape or
        workflow_endpoints live; ValueError for bad ones."""
        api_settings, traffic_settings = _split_settings(settings)
        validated_settings(traffic_settings)   # nothing changes unless all are good
        self._api.configure(**api_settings)
        self._traffic.configure(**traffic_settings)

    def outage(self, seconds: float) -> None:
        """For the next `seconds`, every API request's connection is dropped unanswered."""
        self._traffic.start_outage(seconds)

    def state(self) -> dict:
        """A deep copy of {'contacts', 'events', 'triggers', 'requests'}
        (JSON-ready; `triggers`: one entry per contact entering a workflow,
        {workflow_id, workflow_name, trigger, contact_id, email, userId,
        detail}, workflows.py)."""
        return self._api.state()

    def reset(self) -> None:
        """Forgets events, idempotency keys, triggers set off, the request log,
        the rate window and any outage, and contacts but the starting ones.
        Settings, lists, custom properties, workflows and event patterns stay."""
        self._api.reset()
        self._traffic.reset()

    def import_csv(self, text: str) -> dict:
        """Loops' audience import by CSV (csv_import.py): {created, updated,
        errors: [{row, message}]}; ApiError for a header it cannot use."""
        return self._api.import_csv(text)

    def _answer(self, request: Request) -> Optional[Reply]:
        if request.path.startswith(SANDBOX_PREFIX):
            return inspection_reply(self, request)
        if request.path == API_PREFIX or request.path.startswith(API_PREFIX + '/'):
            return self._api.answer(request)
        return error_reply(404, 'Not found')


def _split_settings(settings: dict) -> tuple[dict, dict]:
    """Settings -> (the API's, the traffic's)."""
    api = {name: value for name, value in settings.items() if name in API_SETTINGS}
    return api, {name: value for name, value in settings.items() if name not in API_SETTINGS}


def inspection_reply(sandbox: LoopsSandbox, request: Request) -> Reply:
    """The answer to a /_sandbox/ request, made with the sandbox's public methods."""
    expected_method = INSPECTION_METHODS.get(request.path)
    if expected_method is None:
        return error_reply(404, 'Not found')
    if request.method != expected_method:
        return error_reply(405, 'Method not allowed')
    if request.path == '/_sandbox/state':
        return Reply(200, sandbox.state())
    if request.path == '/_sandbox/reset':
        sandbox.reset()
        return Reply(200, {'success': True})
    try:
        if isinstance(request.body, ApiError):
            raise request.body
        if request.path == '/_sandbox/import_csv':
            return Reply(200, {'success': True, **sandbox.import_csv(_csv_text(request.body))})
        sandbox.configure(**parse_json_object(request.body))
    except ApiError as error:
        return error_reply(error.status, error.message)
    except ValueError as error:
        return error_reply(400, str(error))
    return Reply(200, {'success': True})


def _csv_text(body: bytes) -> str:
    try:
        return body.decode('utf-8')
    except UnicodeDecodeError:
        raise ApiError(400, 'The CSV file must be UTF-8 text.') from None
