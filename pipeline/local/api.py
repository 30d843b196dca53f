"""The /api side of the sandbox: each request, in order, meets an outage
check, the API key check, the rate limit, latency and faults (traffic.py),
then its endpoint (endpoints.py) under the account's lock, and goes into the
request log with the status it got. Error answers take the body shape of
the `error_shape` setting (error_shapes.py).

`workflow_endpoints` stands for an account whose key cannot read workflows:
'available' (the default), 'forbidden' (403 on /v1/workflows... and
/v1/event-patterns...) or 'missing' (404, as for a path the API does not
have). Unconfirmed: no source documents a 403 or an API without these
endpoints; the workflow endpoints "are currently in alpha and are subject
to change" (https://loops.so/docs/api-reference/examples/workflows), so a
client must expect either.

`null_event_properties`: 'refuse' (the default) answers 400 naming a null
event property, the stricter reading of Loops' types ("`string`,
`number`, `boolean` or `date`", OAS 1529-1537; JS7 `EventProperties` has no
null; rules.check_event_properties); 'accept' stores it, for a client that
sends nulls and a server that takes them.
"""
import copy
import hmac
import threading
import time
import traceback
from typing import Any, Optional

from pipeline.local.account import LoopsAccount
from pipeline.local.endpoints import ApiCall, route
from pipeline.local.error_shapes import MESSAGE_ONLY_PREFIXES, check_shape, shaped_error
from pipeline.local.rules import ApiError
from pipeline.local.server import Reply, Request
from pipeline.local.traffic import TrafficControl
from transforms.core.kinds import IDEMPOTENCY_HEADER

API_PREFIX = '/api'
SERVER_ERROR = ApiError(500, 'Internal server error')
WORKFLOW_ENDPOINTS = ('available', 'forbidden', 'missing')
NULL_EVENT_PROPERTIES = ('accept', 'refuse')
API_SETTINGS = {'error_shape': 'documented', 'workflow_endpoints': 'available',
                'null_event_properties': 'refuse'}


def validated_api_settings(settings: dict) -> dict:
    """The API's settings as given -> checked copies; ValueError for a bad name or value."""
    for name, value in settings.items():
        if name == 'error_shape':
            check_shape(value)
        elif name in ('workflow_endpoints', 'null_event_properties'):
            choices = WORKFLOW_ENDPOINTS if name == 'workflow_endpoints' else NULL_EVENT_PROPERTIES
            if value not in choices:
                raise ValueError(f'{name} must be one of {", ".join(choices)}, got {value!r}')
        else:
            raise ValueError(f'unknown sandbox setting {name!r}')
    return dict(settings)


class LoopsApi:
    """Serves /api requests for one account, keeping the request log.

    Faults apply to /v1/ paths only: an unknown path is answered 404 as is.
    A request dropped or failed before processing never reaches the account.
    """

    def __init__(self, api_key: str, account: LoopsAccount, traffic: TrafficControl,
                 **settings: str):
        self._api_key = api_key
        self._account = account
        self._traffic = traffic
        self._settings = {**API_SETTINGS, **validated_api_settings(settings)}
        self._requests: list[dict] = []
        self._lock = threading.Lock()
        self._apply_rules()

    def configure(self, **settings: str) -> None:
        """Changes error_shape or workflow_endpoints live; ValueError for bad ones."""
        checked = validated_api_settings(settings)
        with self._lock:
            self._settings.update(checked)
            self._apply_rules()

    def _apply_rules(self) -> None:
        self._account.refuse_null_event_properties = (
            self._settings['null_event_properties'] == 'refuse')

    def answer(self, request: Request) -> Optional[Reply]:
        """The reply to an /api request, None to drop its connection unanswered."""
        path = request.path[len(API_PREFIX):]
        idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
        entry = self._log(request.method, path, idempotency_key)
        if self._traffic.in_outage():
            return None
        if not self._authorized(request.headers.get('Authorization')):
            return self._logged(entry, self._error(ApiError(401, 'Invalid API key'), path))
        admission = self._traffic.admit()
        if not admission.accepted:
            return self._logged(entry, self._error(ApiError(429, 'Rate limit exceeded'), path,
                                                   admission.remaining))
        self._traffic.pause(admission.latency)
        faulty = path.startswith('/v1/')
        if faulty and admission.fault_before == 'fail_before':
            return self._logged(entry, self._error(SERVER_ERROR, path, admission.remaining))
        if faulty and admission.fault_before == 'drop_before':
            return None
        if isinstance(request.body, ApiError):
            outcome: Any = request.body
        else:
            base_url = f'http://{request.headers.get("Host", "")}{API_PREFIX}'
            call = ApiCall(request.query, request.body, idempotency_key, base_url)
            outcome = self._process(request.method, path, call)
        # The faults after processing stand for a change Loops stored whose
        # answer was lost; a refusal is answered as it is.
        fault_after = admission.fault_after if faulty and not isinstance(outcome,
                                                                         ApiError) else None
        if fault_after == 'drop_after':
            return None
        if fault_after == 'fail_after':
            outcome = SERVER_ERROR
        elif fault_after == 'slow_after':
            self._traffic.pause(admission.slow_seconds)
        if isinstance(outcome, ApiError):
            return self._logged(entry, self._error(outcome, path, admission.remaining))
        return self._logged(entry, Reply(200, outcome, admission.remaining))

    def state(self) -> dict:
        """A deep copy of {'contacts', 'events', 'triggers', 'requests'}
        (JSON-ready; `triggers` as workflows.py records them)."""
        with self._lock:
            return copy.deepcopy({'contacts': self._account.contacts,
                                  'events': self._account.events,
                                  'triggers': self._account.workflows.triggers,
                                  'requests': self._requests})

    def reset(self) -> None:
        """Back to the seeded contacts; no events, idempotency keys, triggers
        or request log."""
        with self._lock:
            self._account.forget_activity()
            self._requests.clear()

    def import_csv(self, text: str) -> dict:
        """The account's audience import by CSV (not an API request: not logged)."""
        with self._lock:
            return self._account.import_csv(text)

    def _process(self, method: str, path: str, call: ApiCall) -> Any:
        """The endpoint's 200 payload, or the ApiError to answer."""
        try:
            with self._lock:
                access = self._settings['workflow_endpoints']
                if access != 'available' and path.startswith(MESSAGE_ONLY_PREFIXES):
                    return (ApiError(403, 'This API key has no access to workflows.')
                            if access == 'forbidden' else ApiError(404, 'Not found'))
                return route(self._account, method, path, call)
        except ApiError as error:
            return error
        except Exception:  # a sandbox bug: answer like a server would, keep the trace
            traceback.print_exc()
            return SERVER_ERROR

    def _error(self, error: ApiError, path: str, remaining: Optional[int] = None) -> Reply:
        with self._lock:
            shape = self._settings['error_shape']
        return shaped_error(shape, error.status, error.message, path, remaining)

    def _authorized(self, authorization: Optional[str]) -> bool:
        expected = f'Bearer {self._api_key}'.encode()
        return hmac.compare_digest((authorization or '').encode(), expected)

    def _log(self, method: str, path: str, idempotency_key: Optional[str]) -> dict:
        entry = {'t': time.time(), 'method': method, 'path': path, 'status': None,
                 'idempotency_key': idempotency_key}
        with self._lock:
            self._requests.append(entry)
        return entry

    def _logged(self, entry: dict, reply: Reply) -> Reply:
        with self._lock:
            entry['status'] = reply.status
        return reply
