"""One HTTP exchange with the Loops API: the transport part of `LoopsClient`.

Like the `Caller` of Beam's RequestResponseIO, `LoopsCaller` makes exactly one
call and neither retries, paces nor judges the answer: `transforms/loops/retry.py`
says what an answer means, `transforms/loops/rate_limit.py` says when to call.

What it guarantees, whoever uses it:
- The base URL is https, or plain http only to this machine (the local
  sandbox): anything else would send the key in clear text.
- Only the auth object holds the API key: neither repr(), vars() (a
  traceback's locals) nor a pickle of the caller shows it, and every answer's
  text and error has the key replaced by `[redacted]`.
- No redirects: a Loops API answer is never one, and following one could
  carry the key to another host.
- One `requests.Session` per sending thread (kept alive between calls),
  created lazily, so the caller pickles before and after use.
- Bodies go out as ASCII-escaped JSON: a lone surrogate (valid JSON text,
  e.g. inside an Avro record's traits) can't be encoded as UTF-8 otherwise.
"""
import ipaddress
import json
import threading
from typing import List, NamedTuple, Optional
from urllib.parse import urlsplit

import requests
import requests.auth

LIMIT_HEADER = 'x-ratelimit-limit'
REMAINING_HEADER = 'x-ratelimit-remaining'
REDACTED = '[redacted]'


class Answer(NamedTuple):
    """What one exchange gave: an HTTP answer (status, text with the key
    redacted, the rate-limit headers), or, when none came, `error`: the
    exception's type and text, for a person."""
    http_status: Optional[int]
    body: Optional[str]
    error: Optional[str] = None
    limit: Optional[int] = None
    remaining: Optional[int] = None


class BearerAuth(requests.auth.AuthBase):
    """Adds the key to one outgoing request. Passing it as `auth` (rather than
    a header) also stops requests from replacing it with .netrc credentials."""

    def __init__(self, api_key: str):
        if not api_key:
            raise ValueError('a Loops API key is required')
        self._api_key = api_key

    def __repr__(self) -> str:
        return f'BearerAuth({REDACTED})'

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


def json_bytes(body: dict) -> bytes:
    """A request body as the bytes sent: JSON with every non-ASCII character escaped."""
    return json.dumps(body).encode('ascii')


class LoopsCaller:
    """One authenticated HTTP exchange with Loops per call.

    In: the base URL (e.g. 'https://app.loops.so/api'), the API key and the
    (connect, read) timeouts in seconds. `caller(method, path, body, headers)`
    -> `Answer`; it never raises for an answer or a network failure.
    """

    def __init__(self, base_url: str, api_key: str, *, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0):
        self.base_url = check_base_url(base_url)
        self._auth = BearerAuth(api_key)
        self.timeout = (connect_timeout, read_timeout)
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
        return f'LoopsCaller(base_url={self.base_url!r}, api_key={REDACTED!r})'

    def __enter__(self) -> 'LoopsCaller':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def session(self) -> requests.Session:
        """This thread's session, created on first use."""
        session = getattr(self._local, 'session', None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    @property
    def open_sessions(self) -> int:
        """How many threads hold a session now."""
        with self._sessions_lock:
            return len(self._sessions)

    def __call__(self, method: str, path: str, body: Optional[dict] = None,
                 headers: Optional[dict] = None) -> Answer:
        data = json_bytes(body) if body is not None else None
        try:
            response = self.session().request(
                method, self.base_url + path, data=data, headers=headers,
                auth=self._auth, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            return Answer(None, None, self._auth.redact(f'{type(exc).__name__}: {exc}'))
        # The whole answer: a GET's JSON (an account with many properties)
        # is longer than a failure record keeps, which cuts it itself.
        return Answer(response.status_code, self._auth.redact(response.text), None,
                      _header_int(response, LIMIT_HEADER),
                      _header_int(response, REMAINING_HEADER))

    def close(self) -> None:
        """Close every thread's session; the caller may still be used after."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()


def _header_int(response: requests.Response, name: str) -> Optional[int]:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None
