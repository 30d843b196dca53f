"""Client-side pacing of requests to Loops, one `TokenBucket` per writer.

Loops allows a team a number of requests per second (10 by default), counted
over a sliding one-second window of accepted requests, and answers 429 past it.
A writer owns a share of that limit (`rate_limit / write_shards`) and paces its
own requests so that, together, the writers stay under it.

`TokenBucket` is the throttler of `LoopsClient` (like the throttler of Beam's
RequestResponseIO, but a real rate limiter): besides pacing, it reports how
long it held requests back in all, `throttled_seconds` (RRIO's
`cumulativeThrottlingSeconds`), which the writer surfaces as the counter
`deliver/throttled_ms`.

How `TokenBucket` paces, and why:

- Even spacing, not bursts. A classic bucket lets a burst of `rate`
  requests through at once; against a sliding window that burst fills the
  window and the next ones are 429s. Each caller instead reserves the next
  slot (one interval after the previous one) under a lock and sleeps until
  that slot outside the lock, so any number of threads share one pace.
- Headroom. Requests paced at exactly the limit leave no slack in a sliding
  window: if one arrives a few milliseconds early relative to the one sent
  `limit` slots before (thread scheduling, network), the window holds one
  too many and Loops answers 429. Pacing at `HEADROOM` (97%) of the rate
  gives 30 ms of slack per window at any rate, for 3% of throughput.
  Measured against the sandbox (10/s, 100-300 ms latency, 200 upserts):
  at 100% of the rate, 6 answers were 429 and the run took 1.6x the ideal
  time (each 429 halves the pace); at 97%, no 429 and 1.04x.
- 429: multiplicative decrease (`DECREASE`, x0.5) and a pause
  (`PAUSE_SECONDS`) for everyone in this writer, since the window is full.
  A 429 cuts at most once per window: the other requests already in flight
  were sent at the old pace, and their 429s say nothing new. Callers that
  had reserved a slot before the cut reserve again after it.
- Recovery: additive, `RECOVERY` x rate per second (from half the rate back
  to the full rate in 2.5 s), starting one window after the last cut, and
  only while answers are clean (no 429, no contention).
- `remaining == 0`: when we alone send fewer requests than the window can
  hold (`current_rate < limit - 1`), a full window means other writers or
  other clients of the same team are using it: slow down gently
  (`CONTENTION_DECREASE`, x0.95, at most once per window, never below
  `CONTENTION_FLOOR`, 90% of the rate) to leave them room before the 429s
  start; only 429s cut deeper. When we alone pace at the limit the window
  is full by design, so it is not a sign of contention and the rate is left
  as it is. Writers sharing one limit (`write_shards` > 1) can't tell each
  other from outside clients, so they give up to 10% of their share.
- `x-ratelimit-limit` below the configured rate (a rate set higher than the
  team's limit) caps the pace at the advertised limit.
"""
import threading
import time
from typing import Callable, Optional

# Loops counts requests over a sliding window of this many seconds.
WINDOW_SECONDS = 1.0
# The pacing's figures (see the module docstring): fractions of the rate,
# seconds, and the rate's share recovered per second.
HEADROOM = 0.97
DECREASE = 0.5
CONTENTION_DECREASE = 0.95
CONTENTION_FLOOR = 0.9
PAUSE_SECONDS = 0.5
RECOVERY = 0.2
MIN_SHARE = 0.05


class TokenBucket:
    """Thread-safe, evenly spaced pacing of one writer's requests to Loops.

    In: `rate`, the writer's share of the team limit in requests/s; `clock`
    and `sleep` (injectable for tests). `acquire()` blocks each caller until
    its turn and returns how long it waited; `throttled_seconds` sums those
    waits since the bucket was made (or unpickled)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError(f'rate must be positive, got {rate!r}')
        self.rate = float(rate)
        self._clock = clock
        self._sleep = sleep
        self._advertised_limit: Optional[int] = None
        self._lock = threading.Lock()
        self._reset_pacing()

    def _reset_pacing(self) -> None:
        self._throttled = 0.0
        self._current = self._target()
        self._next_slot = float('-inf')
        self._epoch = 0
        self._cooldown_until = float('-inf')
        self._rate_limited_until = float('-inf')
        self._recovered_at = float('-inf')

    def __getstate__(self) -> dict:
        # A lock can't be pickled, and clock readings mean nothing in another
        # process: a copy starts afresh (its throttled time too).
        state = self.__dict__.copy()
        del state['_lock']
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._reset_pacing()

    def __repr__(self) -> str:
        return f'TokenBucket(rate={self.rate:g}, current_rate={self.current_rate:.3g})'

    @property
    def current_rate(self) -> float:
        """The pace in requests per second that acquire() keeps now."""
        return self._current

    @property
    def throttled_seconds(self) -> float:
        """Seconds acquire() has made its callers wait, summed over all calls."""
        with self._lock:
            return self._throttled

    def _target(self) -> float:
        rate = self.rate
        if self._advertised_limit:
            rate = min(rate, float(self._advertised_limit))
        return rate * HEADROOM

    def acquire(self) -> float:
        """Block until the caller may send one request; return seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_slot)
                self._next_slot = slot + 1.0 / self._current
                epoch = self._epoch
            delay = slot - now
            if delay > 0:
                self._sleep(delay)
                waited += delay
            with self._lock:
                self._throttled += max(0.0, delay)
                # A 429 while we slept paused the writer: our slot is void.
                if self._epoch == epoch:
                    return waited

    def on_rate_limited(self) -> None:
        """Loops answered 429: halve the pace and pause, once per window."""
        with self._lock:
            now = self._clock()
            if now < self._rate_limited_until:
                return
            self._cut(now, DECREASE, self._target() * MIN_SHARE)
            self._rate_limited_until = self._cooldown_until
            self._next_slot = now + PAUSE_SECONDS
            self._epoch += 1

    def on_response(self, limit: Optional[int], remaining: Optional[int]) -> None:
        """Take in the rate-limit headers of any answer (None when absent)."""
        with self._lock:
            now = self._clock()
            if limit is not None and limit > 0:
                self._advertised_limit = limit
                self._current = min(self._current, self._target())
            contended = (remaining is not None and remaining <= 0
                         and limit is not None and self._current < limit - 1)
            if contended:
                floor = self._target() * CONTENTION_FLOOR
                if now >= self._cooldown_until and self._current > floor:
                    self._cut(now, CONTENTION_DECREASE, floor)
            else:
                self._recover(now)

    def _cut(self, now: float, factor: float, floor: float) -> None:
        self._current = max(floor, self._current * factor)
        self._cooldown_until = now + WINDOW_SECONDS
        self._recovered_at = self._cooldown_until

    def _recover(self, now: float) -> None:
        start = max(self._recovered_at, self._cooldown_until)
        if now <= start:
            return
        target = self._target()
        if self._current < target:
            elapsed = now - start
            self._current = min(target, self._current + RECOVERY * target * elapsed)
        self._recovered_at = now
