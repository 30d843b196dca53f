"""Keeping enough requests in flight to reach the rate limit, in per-contact order.

With 100-300 ms of latency per request, one writer sending sequentially
reaches about 5 requests/s, half the default limit. `deliver_sequences` sends
several contacts' requests at once while each contact's own requests go
strictly one after another (an upsert must land before the event that relies
on it, and a later update must not be overtaken by an earlier one).
"""
import logging
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

from transforms.loops_client import LoopsClient, Outcome
from transforms.records import LoopsRequest


class Delivered(NamedTuple):
    """One request and how its delivery ended."""
    request: LoopsRequest
    outcome: Outcome


class _SequenceDone(NamedTuple):
    """A worker finished a sequence; `error` is what stopped it, if anything."""
    error: Optional[BaseException]


def in_flight_for(rate: float, max_latency: float = 0.5) -> int:
    """How many contacts to send concurrently to sustain `rate` requests/s.

    By Little's law `rate * max_latency` requests are in flight at full pace;
    twice that leaves room for slow answers and retries waiting out their
    backoff. Extra threads cost little: they just queue at the token bucket.
    """
    return max(2, math.ceil(2 * rate * max_latency))


def deliver_sequences(client: LoopsClient, sequences: Iterable[Sequence[LoopsRequest]],
                      max_in_flight: int, progress: Optional['DeliveryProgress'] = None
                      ) -> Iterator[Delivered]:
    """Send each sequence's requests in order, up to `max_in_flight` sequences at once.

    In: `sequences`, each one contact's requests in the order they must apply
    (consumed lazily, only as threads free up: it may be a huge GroupByKey
    iterable). Out: one `Delivered` per request sent, as they complete (in
    order within a contact, in any order across contacts). Within a sequence
    the next request is sent only after the previous one has its outcome,
    whatever it is. `progress`, if given, records every outcome.

    If a request raises (AuthError: the key was rejected), no new sequence is
    started, sequences in flight stop before their next request, the results
    already finished are yielded, and the exception is re-raised.
    """
    if max_in_flight < 1:
        raise ValueError(f'max_in_flight must be at least 1, got {max_in_flight!r}')
    results: 'queue.Queue[object]' = queue.Queue()
    stop = threading.Event()

    def run(sequence: Sequence[LoopsRequest]) -> None:
        try:
            for request in sequence:
                if stop.is_set():
                    break
                results.put(Delivered(request, client.send(request)))
        except BaseException as exc:  # handed to the consuming thread
            stop.set()
            results.put(_SequenceDone(exc))
        else:
            results.put(_SequenceDone(None))

    pending = iter(sequences)
    exhausted = object()
    running = 0
    error: Optional[BaseException] = None
    executor = ThreadPoolExecutor(max_workers=max_in_flight,
                                  thread_name_prefix='loops-delivery')
    try:
        while True:
            # Only this thread reads `sequences`, and only when a worker is
            # free, so at most `max_in_flight` sequences are held at once.
            while error is None and running < max_in_flight:
                sequence = next(pending, exhausted)
                if sequence is exhausted:
                    break
                executor.submit(run, sequence)
                running += 1
            if running == 0:
                break
            item = results.get()
            if isinstance(item, _SequenceDone):
                running -= 1
                if item.error is not None and error is None:
                    error = item.error
                continue
            if progress is not None:
                progress.record(item.outcome)
            yield item
    finally:
        # Reached also when the consumer abandons the generator.
        stop.set()
        executor.shutdown(wait=True)
    if error is not None:
        raise error


def format_duration(seconds: float) -> str:
    """'45s', '6m20s', '2h05m': a short duration for a person."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f'{seconds}s'
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f'{minutes}m{seconds:02d}s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours}h{minutes:02d}m'


class DeliveryProgress:
    """Periodic progress lines for a delivery: counts only, never contact data.

    In: the total number of requests if known, the rate limit (shown for
    comparison), the interval between lines. `record()` takes each outcome and
    logs at most one line every `interval` seconds; `finish()` logs the last
    line. Line: "<label> sent 1200/5000 (24%), 9.8 req/s (limit 10),
    3 failed, 2 retries, ETA 6m20s" (no percentage or ETA without a total).
    Call it from one thread (deliver_sequences records from the consuming one).
    """

    def __init__(self, total: Optional[int], rate_limit: float, *,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = logging.getLogger('segment_loops.delivery').info,
                 label: str = ''):
        self.total = total
        self.rate_limit = rate_limit
        self.interval = interval
        self.label = label
        self._clock = clock
        self._log = log
        self._started = clock()
        self._last_line = self._started
        self.sent = 0
        self.failed = 0
        self.retries = 0

    def record(self, outcome: Outcome) -> None:
        """Count one finished request; log a line if `interval` has passed."""
        self.sent += 1
        self.retries += max(0, outcome.attempts - 1)
        if outcome.status == 'failed':
            self.failed += 1
        now = self._clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._log(self.line(now))

    def finish(self) -> None:
        """Log the final line."""
        self._log(self.line(self._clock()))

    def line(self, now: float) -> str:
        """The progress line as of clock reading `now`."""
        elapsed = now - self._started
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        sent = f'sent {self.sent}'
        eta = ''
        if self.total:
            sent += f'/{self.total} ({100 * self.sent // self.total}%)'
            left = max(0, self.total - self.sent)
            if left == 0:
                eta = ', done'
            elif rate > 0:
                eta = f', ETA {format_duration(left / rate)}'
        prefix = f'{self.label} ' if self.label else ''
        return (f'{prefix}{sent}, {rate:.1f} req/s (limit {self.rate_limit:g}), '
                f'{self.failed} failed, {self.retries} retries{eta}')
