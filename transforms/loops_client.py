"""Sending `LoopsRequest`s to the Loops API, one request at a time, with retries.

Loops has no batch endpoint: each contact upsert or event is its own request.
`LoopsClient.send` makes one request reach a final `Outcome` (delivered,
already delivered, or failed with a reason), pacing every attempt through the
client's `TokenBucket`. A rejected API key raises `AuthError`: no later
request can succeed, so the whole job must stop.

The client is safe to pickle before and after use (Beam ships it to workers):
HTTP sessions are created lazily, one per sending thread, and the API key only
ever travels in the `Authorization` header.
"""
import ipaddress
import json
import random
import threading
import time
from typing import Callable, List, NamedTuple, Optional
from urllib.parse import urlsplit

import requests
import requests.auth

from transforms.rate_limit import TokenBucket
from transforms.records import MAX_RESPONSE_BODY, LoopsRequest

API_KEY_PATH = '/v1/api-key'
LIMIT_HEADER = 'x-ratelimit-limit'
REMAINING_HEADER = 'x-ratelimit-remaining'
REDACTED = '[redacted]'


class AuthError(Exception):
    """Loops rejected the API key (401): no request of this job can succeed."""


class LoopsError(ConnectionError):
    """Loops could not be reached, or did not answer a read with success.

    `http_status` is the last HTTP status, None when there was no answer.
    """

    def __init__(self, message: str, http_status: Optional[int] = None):
        super().__init__(message)
        self.http_status = http_status


class Outcome(NamedTuple):
    """How one request ended.

    status: 'delivered' | 'already_delivered' | 'failed'.
    reason (failed only): 'http_<status>' for a permanent 4xx answer,
    'retries_exhausted' when every attempt failed transiently.
    message (failed only): for a person, with Loops' own "message" if any.
    """
    status: str
    http_status: Optional[int]
    response_body: Optional[str]
    attempts: int
    rate_limited: int
    reason: Optional[str]
    message: Optional[str]


class _Answer(NamedTuple):
    """One attempt's result: an HTTP answer, or the error text when none came."""
    http_status: Optional[int]
    body: Optional[str]
    error: Optional[str]


class _BearerAuth(requests.auth.AuthBase):
    """Adds the key to one outgoing request. Passing it as `auth` (rather than
    a header) also stops requests from replacing it with .netrc credentials."""

    def __init__(self, api_key: str):
        self._api_key = api_key

    def __repr__(self) -> str:
        return f'_BearerAuth({REDACTED})'

    def __call__(self, prepared: requests.PreparedRequest) -> requests.PreparedRequest:
        prepared.headers['Authorization'] = f'Bearer {self._api_key}'
        return prepared

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the key replaced."""
        return text.replace(self._api_key, REDACTED)


def is_loopback_host(host: str) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1."""
    if host.lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; ValueError if it is unsafe.

    Plain http would send the API key in clear text, so it is allowed only to
    this machine (the local sandbox); everything else must be https.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ('https', 'http') or not parts.hostname:
        raise ValueError(f'Loops base URL must be an https:// URL, got {base_url!r}')
    if parts.scheme == 'http' and not is_loopback_host(parts.hostname):
        raise ValueError(
            f'refusing plain http:// to {parts.hostname}: the API key would travel '
            'unencrypted; use https:// (http is allowed only to loopback hosts)')
    return base_url.rstrip('/')


def loops_message(body: Optional[str]) -> Optional[str]:
    """The "message" of a Loops JSON error envelope, or None."""
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get('message'), str):
        return parsed['message']
    return None


def _header_int(response: requests.Response, name: str) -> Optional[int]:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


class LoopsClient:
    """A Loops API client for one writer: paced, retrying, key-safe.

    In: the API base URL (e.g. 'https://app.loops.so/api'), the API key, and
    the writer's `rate` in requests per second. Every attempt, retries
    included, waits for a token from the client's own `TokenBucket`.
    Transient failures (429, 5xx, timeouts, dropped connections) are retried
    up to `max_attempts` attempts in all, waiting
    `uniform(0, min(backoff_max, backoff_base * 2**retry))` before each retry
    (exponential backoff with full jitter, so writers that failed together
    don't retry together).
    """

    def __init__(self, base_url: str, api_key: str, *, rate: float = 10.0,
                 max_attempts: int = 6, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, seed: Optional[int] = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not api_key:
            raise ValueError('a Loops API key is required')
        if max_attempts < 1:
            raise ValueError(f'max_attempts must be at least 1, got {max_attempts!r}')
        self.base_url = check_base_url(base_url)
        # Only the auth object holds the key, so neither repr(client) nor
        # vars(client) (a traceback's locals) can show it.
        self._auth = _BearerAuth(api_key)
        self.max_attempts = max_attempts
        self.timeout = (connect_timeout, read_timeout)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.bucket = TokenBucket(rate, sleep=sleep)
        self._sleep = sleep
        self._random = random.Random(seed)
        self._init_sessions()

    def _init_sessions(self) -> None:
        self._local = threading.local()
        self._sessions: List[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __getstate__(self) -> dict:
        # Sessions, locks and thread-locals belong to this process only.
        state = self.__dict__.copy()
        for name in ('_local', '_sessions', '_sessions_lock'):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_sessions()

    def __repr__(self) -> str:
        return (f'LoopsClient(base_url={self.base_url!r}, api_key={REDACTED!r}, '
                f'rate={self.bucket.rate:g}, max_attempts={self.max_attempts})')

    def _session(self) -> requests.Session:
        session = getattr(self._local, 'session', None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _backoff(self, retry: int) -> None:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** retry)
        self._sleep(self._random.uniform(0, ceiling))

    def _attempt(self, method: str, path: str, body: Optional[dict] = None,
                 headers: Optional[dict] = None) -> _Answer:
        """One paced HTTP exchange. Raises AuthError on 401."""
        self.bucket.acquire()
        data = None
        if body is not None:
            # ASCII escapes: a lone surrogate (valid in JSON text, e.g. inside
            # an Avro record's traits) cannot be encoded as UTF-8 otherwise.
            data = json.dumps(body).encode('ascii')
        try:
            # No redirects: a Loops API answer is never a redirect, and
            # following one could carry the key somewhere else.
            response = self._session().request(
                method, self.base_url + path, data=data, headers=headers,
                auth=self._auth, timeout=self.timeout,
                allow_redirects=False)
        except requests.RequestException as exc:
            return _Answer(None, None, self._auth.redact(f'{type(exc).__name__}: {exc}'))
        self.bucket.on_response(_header_int(response, LIMIT_HEADER),
                                _header_int(response, REMAINING_HEADER))
        if response.status_code == 401:
            raise AuthError('Loops rejected the API key (401 Unauthorized): '
                            'check the key and that it belongs to the intended team')
        text = self._auth.redact(response.text)[:MAX_RESPONSE_BODY]
        if response.status_code == 429:
            self.bucket.on_rate_limited()
        return _Answer(response.status_code, text, None)

    @staticmethod
    def _is_transient(answer: _Answer) -> bool:
        return (answer.http_status is None or answer.http_status == 429
                or answer.http_status >= 500)

    def send(self, request: LoopsRequest) -> Outcome:
        """Send one request until it reaches a final Outcome. Raises AuthError on 401."""
        rate_limited = 0
        where = f'{request.method} {request.path}'
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self._backoff(attempt - 2)
            answer = self._attempt(request.method, request.path, request.body,
                                   request.headers)
            status = answer.http_status
            if status == 429:
                rate_limited += 1
            if status is not None and 200 <= status < 300:
                return Outcome('delivered', status, None, attempt, rate_limited,
                               None, None)
            if status == 409 and request.idempotency_key:
                # Our own key already used: this attempt or an earlier run
                # delivered the event; resending would repeat its emails.
                return Outcome('already_delivered', status, answer.body, attempt,
                               rate_limited, None, None)
            if not self._is_transient(answer):
                return Outcome('failed', status, answer.body, attempt, rate_limited,
                               f'http_{status}',
                               _failure_message(where, answer, 'was rejected by Loops'))
        return Outcome('failed', answer.http_status, answer.body, self.max_attempts,
                       rate_limited, 'retries_exhausted',
                       _failure_message(where, answer,
                                        f'failed after {self.max_attempts} attempts'))

    def get(self, path: str) -> object:
        """Authenticated GET of `path` (e.g. '/v1/lists'), returning its JSON.

        Retries transient failures like send(); raises AuthError on 401 and
        LoopsError when no successful answer came.
        """
        where = f'GET {path}'
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self._backoff(attempt - 2)
            answer = self._attempt('GET', path)
            status = answer.http_status
            if status is not None and 200 <= status < 300:
                try:
                    return json.loads(answer.body)
                except ValueError:
                    raise LoopsError(f'{where}: Loops answered with non-JSON text: '
                                     f'{answer.body[:200]!r}', status) from None
            if not self._is_transient(answer):
                raise LoopsError(_failure_message(where, answer, 'was rejected by Loops'),
                                 status)
        raise LoopsError(_failure_message(where, answer,
                                          f'failed after {self.max_attempts} attempts'),
                         answer.http_status)

    def check_key(self) -> str:
        """Check the API key with Loops; return the team name.

        Raises AuthError when the key is rejected, LoopsError when Loops
        can't be reached or answers something unexpected.
        """
        answer = self.get(API_KEY_PATH)
        if not isinstance(answer, dict) or not isinstance(answer.get('teamName'), str):
            raise LoopsError(f'unexpected answer from GET {API_KEY_PATH}: no teamName')
        return answer['teamName']

    def close(self) -> None:
        """Close every thread's session; the client may still be used after."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()


def _failure_message(where: str, answer: _Answer, what: str) -> str:
    """A sentence for a person about a failed request, e.g.
    'PUT /v1/contacts/update was rejected by Loops: HTTP 400: Invalid email address.'"""
    if answer.http_status is None:
        return f'{where} {what}: no answer from Loops ({answer.error})'
    detail = loops_message(answer.body)
    text = f'{where} {what}: HTTP {answer.http_status}'
    return f'{text}: {detail}' if detail else text
