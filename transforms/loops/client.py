"""Sending `LoopsRequest`s to the Loops API, one request at a time, with retries.

Loops has no batch endpoint: each contact upsert or event is its own request.
`LoopsClient` composes three parts, as Beam's RequestResponseIO does:

- a caller (`transforms/loops/caller.py`, `LoopsCaller`): one HTTP exchange, the
  only holder of the API key;
- a retry policy (`transforms/loops/retry.py`, `RetryPolicy`): what an answer
  means, how many attempts, how long to back off;
- a throttler (`transforms/loops/rate_limit.py`, `TokenBucket`): every attempt,
  retries included, waits for its slot; the bucket hears every answer's
  rate-limit headers and every 429.

One retry loop serves both `send(request) -> Outcome` (every answer becomes
an Outcome) and `get(path)` / `post(path, body)` -> JSON (anything but
success is a LoopsError).
A rejected API key (401) raises `AuthError`, and from then on the client
raises it at once for every call, without sending: no later request can
succeed, and a key Loops refused should not be offered again and again.

A stop of the job (transforms/core/stop.py) ends the retry loop: a request
not yet sent raises `StopRequested` (it is left for the next run), one sent
before ends with the last answer it got (reason `stopped`). The backoff
between attempts (`pause`) ends early on a stop.

The client is safe to pickle before and after use (Beam ships it to workers).
"""
import json
import random
from typing import Callable, NamedTuple, Optional

from transforms.core.kinds import JSON_HEADERS
from transforms.core.records import LoopsRequest
from transforms.core.stop import StopRequested, pause, stop_requested
from transforms.loops.caller import REDACTED, Answer, LoopsCaller, check_base_url
from transforms.loops.rate_limit import TokenBucket
from transforms.loops.retry import (RATE_LIMITED_STATUS, AuthError, LoopsError, Outcome,
                                    RetryPolicy, Verdict, classify, final_outcome,
                                    loops_message)

__all__ = ['API_KEY_PATH', 'AuthError', 'LoopsClient', 'LoopsError', 'Outcome',
           'check_base_url']

API_KEY_PATH = '/v1/api-key'
KEY_REJECTED_MESSAGE = ('Loops rejected the API key (401 Unauthorized): check the key and that '
                        'it belongs to the intended team')


class _Exchange(NamedTuple):
    """A request's last attempt: its verdict and answer, the attempt counts,
    and whether a stop of the job ended the retries."""
    verdict: Verdict
    answer: Answer
    attempts: int
    rate_limited: int
    stopped: bool = False


class LoopsClient:
    """A Loops API client for one writer: paced, retrying, key-safe.

    `LoopsClient(base_url, api_key, rate=..., max_attempts=..., ...)` builds
    its own parts; `LoopsClient.from_parts(caller, policy, throttler)` takes
    them ready-made (a test's fake caller, a policy of its own). `seed` seeds
    the backoff's jitter; `sleep` is what waits between attempts (default:
    until the backoff is over or the job stops; injectable for tests).
    """

    def __init__(self, base_url: str, api_key: str, *, rate: float = 10.0,
                 max_attempts: int = 6, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, seed: Optional[int] = None,
                 sleep: Callable[[float], None] = pause):
        self._compose(
            LoopsCaller(base_url, api_key, connect_timeout=connect_timeout,
                        read_timeout=read_timeout),
            RetryPolicy(max_attempts, backoff_base, backoff_max),
            TokenBucket(rate, sleep=sleep), seed, sleep)

    @classmethod
    def from_parts(cls, caller: Callable[..., Answer], policy: RetryPolicy,
                   throttler: TokenBucket, *, seed: Optional[int] = None,
                   sleep: Callable[[float], None] = pause) -> 'LoopsClient':
        """A client of the given parts. `caller(method, path, body, headers)`
        -> Answer; its `close()`, if it has one, is called by close()."""
        client = cls.__new__(cls)
        client._compose(caller, policy, throttler, seed, sleep)
        return client

    def _compose(self, caller, policy: RetryPolicy, throttler: TokenBucket,
                 seed: Optional[int], sleep: Callable[[float], None]) -> None:
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f'policy must be a RetryPolicy, got {type(policy).__name__}')
        self.caller = caller
        self.base_url = getattr(caller, 'base_url', None)
        self.policy = policy
        self.throttler = throttler
        self._sleep = sleep
        self._random = random.Random(seed)
        self._key_rejected = False

    def __repr__(self) -> str:
        return (f'LoopsClient(base_url={self.base_url!r}, api_key={REDACTED!r}, '
                f'rate={self.throttler.rate:g}, max_attempts={self.policy.max_attempts})')

    @property
    def throttled_seconds(self) -> float:
        """Seconds the throttler has held this client's requests back, in all."""
        return self.throttler.throttled_seconds

    def _exchange(self, method: str, path: str, body: Optional[dict] = None,
                  headers: Optional[dict] = None, keyed: bool = False,
                  removes_contact: bool = False) -> _Exchange:
        """The retry loop: paced attempts until one is final or the policy
        says stop. Raises AuthError on 401 (and ever after), StopRequested
        when the job stops before the first attempt."""
        if self._key_rejected:
            raise AuthError(KEY_REJECTED_MESSAGE)
        rate_limited = 0
        attempt = 0
        last = None
        while True:
            if attempt:
                self._sleep(self.policy.backoff_seconds(attempt - 1, self._random.random()))
            self.throttler.acquire()
            if stop_requested():
                if last is None:
                    raise StopRequested(f'{method} {path} was not sent: the job is stopping')
                return last._replace(stopped=True)
            attempt += 1
            answer = self.caller(method, path, body, headers)
            if answer.http_status is not None:
                self.throttler.on_response(answer.limit, answer.remaining)
            if answer.http_status == RATE_LIMITED_STATUS:
                rate_limited += 1
                self.throttler.on_rate_limited()
            verdict = classify(answer.http_status, keyed, removes_contact)
            if verdict is Verdict.KEY_REJECTED:
                self._key_rejected = True
                raise AuthError(KEY_REJECTED_MESSAGE)
            last = _Exchange(verdict, answer, attempt, rate_limited)
            if not self.policy.retries_left(verdict, attempt):
                return last

    def send(self, request: LoopsRequest) -> Outcome:
        """Send one request until it reaches a final Outcome. Raises AuthError on 401."""
        done = self._exchange(request.method, request.path, request.body, request.headers,
                              keyed=bool(request.idempotency_key),
                              removes_contact=request.spec.removes_contact)
        answer = done.answer
        return final_outcome(done.verdict, answer.http_status, answer.body, answer.error,
                             done.attempts, done.rate_limited,
                             f'{request.method} {request.path}', done.stopped)

    def get(self, path: str) -> object:
        """Authenticated GET of `path` (e.g. '/v1/lists'), returning its JSON.

        Retries transient failures like send(); raises AuthError on 401 and
        LoopsError when no successful answer came.
        """
        return self._json_call('GET', path)

    def post(self, path: str, body: dict) -> object:
        """Authenticated POST of the JSON `body` to `path`, returning the
        answer's JSON; errors as get(). A transient failure is retried, so
        the call must be safe to repeat (creating what exists is refused)."""
        return self._json_call('POST', path, body, JSON_HEADERS)

    def _json_call(self, method: str, path: str, body: Optional[dict] = None,
                   headers: Optional[dict] = None) -> object:
        done = self._exchange(method, path, body, headers)
        answer = done.answer
        where = f'{method} {path}'
        if done.verdict is not Verdict.DELIVERED:
            outcome = final_outcome(done.verdict, answer.http_status, answer.body, answer.error,
                                    done.attempts, done.rate_limited, where, done.stopped)
            raise LoopsError(outcome.message, answer.http_status, loops_message(answer.body))
        try:
            return json.loads(answer.body)
        except ValueError:
            raise LoopsError(f'{where}: Loops answered with non-JSON text: '
                             f'{answer.body[:200]!r}', answer.http_status) from None

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
        """Close the caller's sessions; the client may still be used after."""
        close = getattr(self.caller, 'close', None)
        if close is not None:
            close()
