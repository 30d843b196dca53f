"""The /api side of the sandbox: each request, in order, meets an outage
check, the API key check, the rate limit, latency and faults (traffic.py),
then its endpoint (endpoints.py) under the account's lock, and goes into the
request log with the status it got.
"""
import copy
import hmac
import threading
import time
import traceback
from typing import Any, Optional

from pipeline.local.account import LoopsAccount
from pipeline.local.endpoints import ApiCall, route
from pipeline.local.rules import ApiError
from pipeline.local.server import Reply, Request, error_reply
from pipeline.local.traffic import TrafficControl
from transforms.core.kinds import IDEMPOTENCY_HEADER

API_PREFIX = '/api'
SERVER_ERROR = {'success': False, 'message': 'Internal server error'}


class LoopsApi:
    """Serves /api requests for one account, keeping the request log.

    Faults apply to /v1/ paths only: an unknown path is answered 404 as is.
    A request dropped or failed before processing never reaches the account.
    """

    def __init__(self, api_key: str, account: LoopsAccount, traffic: TrafficControl):
        self._api_key = api_key
        self._account = account
        self._traffic = traffic
        self._requests: list[dict] = []
        self._lock = threading.Lock()

    def answer(self, request: Request) -> Optional[Reply]:
        """The reply to an /api request, None to drop its connection unanswered."""
        path = request.path[len(API_PREFIX):]
        idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
        entry = self._log(request.method, path, idempotency_key)
        if self._traffic.in_outage():
            return None
        if not self._authorized(request.headers.get('Authorization')):
            return self._logged(entry, error_reply(401, 'Invalid API key'))
        admission = self._traffic.admit()
        if not admission.accepted:
            return self._logged(entry, error_reply(429, 'Rate limit exceeded',
                                                   admission.remaining))
        self._traffic.pause(admission.latency)
        faulty = path.startswith('/v1/')
        if faulty and admission.fault_before == 'fail_before':
            return self._logged(entry, Reply(500, SERVER_ERROR, admission.remaining))
        if faulty and admission.fault_before == 'drop_before':
            return None
        if isinstance(request.body, ApiError):
            status, payload = request.body.status, {'success': False,
                                                    'message': request.body.message}
        else:
            call = ApiCall(request.query, request.body, idempotency_key)
            status, payload = self._process(request.method, path, call)
        # The faults after processing stand for a change Loops stored whose
        # answer was lost; a refusal is answered as it is.
        fault_after = admission.fault_after if faulty and 200 <= status < 300 else None
        if fault_after == 'drop_after':
            return None
        if fault_after == 'fail_after':
            status, payload = 500, SERVER_ERROR
        elif fault_after == 'slow_after':
            self._traffic.pause(admission.slow_seconds)
        return self._logged(entry, Reply(status, payload, admission.remaining))

    def state(self) -> dict:
        """A deep copy of {'contacts', 'events', 'requests'} (JSON-ready)."""
        with self._lock:
            return copy.deepcopy({'contacts': self._account.contacts,
                                  'events': self._account.events,
                                  'requests': self._requests})

    def reset(self) -> None:
        """Back to the seeded contacts; no events, idempotency keys or request log."""
        with self._lock:
            self._account.forget_activity()
            self._requests.clear()

    def import_csv(self, text: str) -> dict:
        """The account's audience import by CSV (not an API request: not logged)."""
        with self._lock:
            return self._account.import_csv(text)

    def _process(self, method: str, path: str, call: ApiCall) -> tuple[int, Any]:
        try:
            with self._lock:
                return route(self._account, method, path, call)
        except Exception:  # a sandbox bug: answer like a server would, keep the trace
            traceback.print_exc()
            return 500, SERVER_ERROR

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
