"""What a Loops answer means, and when to ask again: the retry policy.

Like the `Repeater` of Beam's RequestResponseIO, but as pure functions over
declared data, so it is tested without a server:

- `classify(http_status, keyed, removes_contact)` -> a `Verdict`:
  2xx DELIVERED; 409 on a request carrying our own Idempotency-Key
  ALREADY_DELIVERED (an earlier attempt or run delivered it: sending again
  would repeat its emails); 404 on a deletion ALREADY_GONE (Loops has no
  such contact: what it asks for is so); 401 KEY_REJECTED (no request can
  succeed); 429, 5xx and no answer at all (timeouts, dropped connections)
  TRANSIENT; any other status PERMANENT (400, 404, 405, 409 without our
  key, 413, ...).
- `RetryPolicy.backoff_seconds(retry, draw)`: exponential backoff with full
  jitter, `draw * min(backoff_max, backoff_base * 2**retry)` with `draw`
  uniform in [0, 1), so writers that failed together don't retry together.
- The reason codes of failed requests, which failure records carry and
  `segment-loops replay` reads: `http_<status>` (permanent), RETRIES_EXHAUSTED
  (every attempt failed transiently: Loops may or may not have applied it),
  STOPPED (the attempts made failed transiently and the job was stopped
  before the next one: Loops may or may not have applied it), KEY_REJECTED
  (Loops rejected the key, or the request was not sent after it did: never
  applied).
- A 4xx refusal (`is_permanent_reason`) may have spent its Idempotency-Key
  (assume the stricter server): a refused event sent again goes under
  `derived_key` (transforms/core/records.py).
"""
import enum
import json
import re
from dataclasses import dataclass
from typing import NamedTuple, Optional

RETRIES_EXHAUSTED = 'retries_exhausted'
STOPPED = 'stopped'
KEY_REJECTED = 'key_rejected'
PERMANENT_REASON = re.compile(r'http_4\d\d')
RATE_LIMITED_STATUS = 429
KEY_REJECTED_STATUS = 401
NOT_FOUND_STATUS = 404
CONFLICT_STATUS = 409
# A non-JSON error body (an HTML page) is shown this long at most, tags removed.
MAX_PLAIN_TEXT = 200
_MARKUP = re.compile(r'<[^>]*>')


class AuthError(Exception):
    """Loops rejected the API key (401): no request of this job can succeed."""


class LoopsError(ConnectionError):
    """Loops could not be reached, or did not answer a call with success.

    `http_status` is the last HTTP status, None when there was no answer;
    `loops_says` Loops' own words in its answer (`loops_message`), if any.
    """

    def __init__(self, message: str, http_status: Optional[int] = None,
                 loops_says: Optional[str] = None):
        super().__init__(message)
        self.http_status = http_status
        self.loops_says = loops_says


class Verdict(enum.Enum):
    DELIVERED = 'delivered'
    ALREADY_DELIVERED = 'already_delivered'
    ALREADY_GONE = 'already_gone'
    PERMANENT = 'permanent'
    TRANSIENT = 'transient'
    KEY_REJECTED = 'key_rejected'


class Outcome(NamedTuple):
    """How one request ended.

    status: 'delivered' | 'already_delivered' | 'already_gone' | 'failed'.
    reason (failed only): 'http_<status>', RETRIES_EXHAUSTED, STOPPED or KEY_REJECTED.
    message (failed only): for a person, with Loops' own words if any
    (`loops_message`).
    attempts: HTTP attempts made (0: never sent); rate_limited: 429s among them.
    """
    status: str
    http_status: Optional[int]
    response_body: Optional[str]
    attempts: int
    rate_limited: int
    reason: Optional[str]
    message: Optional[str]


def classify(http_status: Optional[int], keyed: bool, removes_contact: bool = False) -> Verdict:
    """What an answer means for a request (`keyed`: it carried our
    Idempotency-Key; `removes_contact`: it deletes its contact)."""
    if http_status is None or http_status == RATE_LIMITED_STATUS or http_status >= 500:
        return Verdict.TRANSIENT
    if 200 <= http_status < 300:
        return Verdict.DELIVERED
    if http_status == KEY_REJECTED_STATUS:
        return Verdict.KEY_REJECTED
    if http_status == CONFLICT_STATUS and keyed:
        return Verdict.ALREADY_DELIVERED
    if http_status == NOT_FOUND_STATUS and removes_contact:
        return Verdict.ALREADY_GONE
    return Verdict.PERMANENT


def http_reason(http_status: int) -> str:
    """The reason code of a permanent answer: 'http_400'."""
    return f'http_{http_status}'


def is_permanent_reason(reason: str) -> bool:
    """True for the reason of a 4xx refusal (a re-send needs a new key)."""
    return bool(PERMANENT_REASON.fullmatch(reason))


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long to wait between them.

    `max_attempts` attempts in all for transient failures; before retry n
    (0-based) a wait of `draw * min(backoff_max, backoff_base * 2**n)`.
    """
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self):
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f'max_attempts must be at least 1, got {self.max_attempts!r}')
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError('backoff_base and backoff_max must not be negative')

    def backoff_seconds(self, retry: int, draw: float) -> float:
        """The wait before retry number `retry` (0 for the first), `draw` in [0, 1)."""
        return draw * min(self.backoff_max, self.backoff_base * 2 ** retry)

    def retries_left(self, verdict: Verdict, attempt: int) -> bool:
        """Whether attempt number `attempt` (1-based), judged `verdict`, is followed by another."""
        return verdict is Verdict.TRANSIENT and attempt < self.max_attempts


def final_outcome(verdict: Verdict, status: Optional[int], body: Optional[str],
                  error: Optional[str], attempts: int, rate_limited: int,
                  where: str, stopped: bool = False) -> Outcome:
    """The Outcome of a request whose last attempt (number `attempts`) was
    judged `verdict`; `where` is 'PUT /v1/contacts/update', for messages.
    `stopped`: the job was stopping, so a transient failure was not retried."""
    if verdict is Verdict.DELIVERED:
        return Outcome('delivered', status, None, attempts, rate_limited, None, None)
    if verdict is Verdict.ALREADY_DELIVERED:
        return Outcome('already_delivered', status, body, attempts, rate_limited, None, None)
    if verdict is Verdict.ALREADY_GONE:
        return Outcome('already_gone', status, body, attempts, rate_limited, None, None)
    if verdict is Verdict.TRANSIENT and stopped:
        message = failure_message(where, f'was not retried after {attempts} attempts (the job '
                                  'was stopping)', status, body, error)
        return Outcome('failed', status, body, attempts, rate_limited, STOPPED, message)
    if verdict is Verdict.TRANSIENT:
        reason = RETRIES_EXHAUSTED
        message = failure_message(where, f'failed after {attempts} attempts', status, body,
                                  error)
    else:
        reason = KEY_REJECTED if verdict is Verdict.KEY_REJECTED else http_reason(status)
        message = failure_message(where, 'was rejected by Loops', status, body, error)
    return Outcome('failed', status, body, attempts, rate_limited, reason, message)


def not_sent(reason: str, message: str) -> Outcome:
    """The Outcome of a request that was never sent."""
    return Outcome('failed', None, None, 0, 0, reason, message)


def loops_message(body: Optional[str]) -> Optional[str]:
    """The text of a Loops error answer, read as Loops' official SDKs read it,
    or None when it has none.

    JSON bodies come in several shapes: `{"success": false, "message"}` (the
    OpenAPI spec's failure responses), `{"error": "Invalid API key"}` (the JS
    SDK's README and its `ApiKeyErrorResponse` type), `{"success": false,
    "error": "..."}` (the JS SDK's tests, Loops-so/loops-js
    src/__tests__/LoopsClient.test.ts:407-410) and `{"success": false,
    "error": {"path", "message"}}` (transactional). Read like the JS SDK's
    `APIError` (npm loops 7.3.0, dist/index.cjs:39-63): `error.message` when
    `error` is an object, else `error` when it is text, else `message`. A
    body that is not JSON (a proxy's or load balancer's page, which the SDK
    keeps as `rawBody`) is its own text, markup removed, cut to a line.
    """
    if not body or not body.strip():
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return _plain_text(body)
    if not isinstance(parsed, dict):
        return None
    error = parsed.get('error')
    if isinstance(error, dict) and isinstance(error.get('message'), str) and error['message']:
        return error['message']
    if isinstance(error, str) and error:
        return error
    message = parsed.get('message')
    return message if isinstance(message, str) and message else None


def _plain_text(body: str) -> Optional[str]:
    text = ' '.join(_MARKUP.sub(' ', body).split())
    if len(text) > MAX_PLAIN_TEXT:
        text = text[:MAX_PLAIN_TEXT - 3] + '...'
    return text or None


def failure_message(where: str, what: str, http_status: Optional[int],
                    body: Optional[str], error: Optional[str]) -> str:
    """A sentence for a person about a failed request, e.g.
    'PUT /v1/contacts/update was rejected by Loops: HTTP 400: Invalid email address.'"""
    if http_status is None:
        return f'{where} {what}: no answer from Loops ({error})'
    detail = loops_message(body)
    text = f'{where} {what}: HTTP {http_status}'
    return f'{text}: {detail}' if detail else text
