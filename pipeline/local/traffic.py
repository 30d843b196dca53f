"""What an API request meets before and after the account sees it: the
per-team rate limit (a sliding one-second window), added latency, injected
faults (500s, dropped connections, slow answers) and outages.

`TrafficControl` holds the settings and draws each request's fate from one
seeded random generator, so a seed gives the same faults for the same
sequence of requests.
"""
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from random import Random
from typing import Any, Optional

RATE_WINDOW_SECONDS = 1.0
# Sent as x-ratelimit-limit when limiting is off: clients that read the header
# keep working and see a budget they will never exhaust.
UNLIMITED_RATE = 1_000_000

DEFAULT_SETTINGS = {
    'rate_limit': 10.0,
    'latency': (0.0, 0.0),
    'fail_before': 0.0,
    'fail_after': 0.0,
    'drop_before': 0.0,
    'drop_after': 0.0,
    'slow_after': 0.0,
    'slow_seconds': 2.0,
}
SHARE_SETTINGS = ('fail_before', 'fail_after', 'drop_before', 'drop_after',
                  'slow_after')


def validated_settings(settings: dict) -> dict:
    """Sandbox settings as given -> normalised copies; ValueError for a bad name or value."""
    result = {}
    for name, value in settings.items():
        if name not in DEFAULT_SETTINGS:
            raise ValueError(f'unknown sandbox setting {name!r}; known: '
                             f'{", ".join(sorted(DEFAULT_SETTINGS))}')
        if name == 'rate_limit':
            if value is not None and (not _is_number(value) or value < 0):
                raise ValueError('rate_limit must be None or a number >= 0')
            result[name] = float(value) if value else None
        elif name == 'latency':
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(_is_number(v) for v in value)
                    or not 0 <= value[0] <= value[1]):
                raise ValueError('latency must be (low, high) seconds with 0 <= low <= high')
            result[name] = (float(value[0]), float(value[1]))
        elif name == 'slow_seconds':
            if not _is_number(value) or value < 0:
                raise ValueError('slow_seconds must be a number >= 0')
            result[name] = float(value)
        else:
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f'{name} must be a share between 0 and 1')
            result[name] = float(value)
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def pick_fault(draw: float, shares: list[tuple[str, float]]) -> Optional[str]:
    """A uniform draw in [0, 1) -> the fault whose share it falls in, or None.

    The shares are stacked, so each fault hits its own share of the requests.
    """
    edge = 0.0
    for name, share in shares:
        edge += share
        if draw < edge:
            return name
    return None


def limit_header(limit: Optional[float]) -> str:
    """The rate limit setting -> its x-ratelimit-limit text ('10', not '10.0')."""
    if not limit:
        return str(UNLIMITED_RATE)
    return str(int(limit)) if limit.is_integer() else str(limit)


@dataclass(frozen=True)
class Admission:
    """The rate limiter's answer for one request, with its random draws."""
    accepted: bool
    remaining: int
    latency: float = 0.0
    fault_before: Optional[str] = None
    fault_after: Optional[str] = None
    slow_seconds: float = 0.0


class RateWindow:
    """A sliding window over the times of accepted requests (monotonic seconds)."""

    def __init__(self) -> None:
        self._accepted: deque = deque()

    def clear(self) -> None:
        self._accepted.clear()

    def remaining(self, limit: Optional[float], now: float) -> int:
        """How many more requests `limit` lets in right now."""
        if not limit:
            return UNLIMITED_RATE
        self._forget_before(now - RATE_WINDOW_SECONDS)
        return max(0, math.ceil(limit - len(self._accepted)))

    def admit(self, limit: Optional[float], now: float) -> tuple[bool, int]:
        """(accepted, remaining after this request); records the request if accepted."""
        if not limit:
            return True, UNLIMITED_RATE
        self._forget_before(now - RATE_WINDOW_SECONDS)
        if len(self._accepted) >= limit:
            return False, max(0, math.ceil(limit - len(self._accepted)))
        self._accepted.append(now)
        return True, max(0, math.ceil(limit - len(self._accepted)))

    def _forget_before(self, cutoff: float) -> None:
        while self._accepted and self._accepted[0] <= cutoff:
            self._accepted.popleft()


class TrafficControl:
    """The settings (DEFAULT_SETTINGS), the rate window, outages and the random
    draws of every API request. Thread-safe."""

    def __init__(self, settings: dict, seed: Optional[int] = None):
        self._settings = dict(DEFAULT_SETTINGS)
        self._settings.update(validated_settings(settings))
        self._random = Random(seed)
        self._window = RateWindow()
        self._outage_until = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def configure(self, **settings: Any) -> None:
        """Changes settings live; ValueError for bad ones (then none changes)."""
        valid = validated_settings(settings)
        with self._lock:
            self._settings.update(valid)

    def start_outage(self, seconds: float) -> None:
        """For the next `seconds`, `in_outage()` is true."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds

    def in_outage(self) -> bool:
        with self._lock:
            return time.monotonic() < self._outage_until

    def reset(self) -> None:
        """Forgets the rate window and any outage; settings stay."""
        with self._lock:
            self._window.clear()
            self._outage_until = 0.0

    def admit(self) -> Admission:
        """One request's fate: refused by the rate limit, or accepted with its
        latency, its fault before processing and its fault after."""
        with self._lock:
            settings = self._settings
            accepted, remaining = self._window.admit(settings['rate_limit'], time.monotonic())
            if not accepted:
                return Admission(False, remaining)
            low, high = settings['latency']
            latency_draw, before_draw, after_draw = (self._random.random() for _ in range(3))
            return Admission(
                True, remaining, latency=low + (high - low) * latency_draw,
                fault_before=pick_fault(before_draw, [
                    ('fail_before', settings['fail_before']),
                    ('drop_before', settings['drop_before'])]),
                fault_after=pick_fault(after_draw, [
                    ('fail_after', settings['fail_after']),
                    ('drop_after', settings['drop_after']),
                    ('slow_after', settings['slow_after'])]),
                slow_seconds=settings['slow_seconds'])

    def rate_headers(self, remaining: Optional[int] = None) -> dict:
        """x-ratelimit-limit and x-ratelimit-remaining (the window's, unless given)."""
        with self._lock:
            limit = self._settings['rate_limit']
            if remaining is None:
                remaining = self._window.remaining(limit, time.monotonic())
        return {'x-ratelimit-limit': limit_header(limit),
                'x-ratelimit-remaining': str(remaining)}

    def pause(self, seconds: float) -> None:
        """Sleeps `seconds`, cut short by `interrupt_pauses()` (a stopping sandbox
        does not wait on its sleepers)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def interrupt_pauses(self) -> None:
        self._stopping.set()

    def allow_pauses(self) -> None:
        self._stopping.clear()
