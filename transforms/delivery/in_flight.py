"""Keeping enough requests in flight to reach the rate limit, in per-contact order.

With 100-300 ms of latency per request, one writer sending sequentially
reaches about 5 requests/s, half the default limit. `deliver_sequences` sends
several contacts' sequences at once while each contact's own requests go
strictly one after another (an upsert must land before the event that relies
on it, and a later update must not be overtaken by an earlier one), and never
two sequences of one contact at the same time.

Each request goes through `deliver_one`: a contact upsert that Loops refuses
(400) because of one property or mailing list is sent once more without it,
and the part it refused comes back on its own (transforms/loops/refusal.py);
an event send by userId that Loops refuses because it has no contact of
that userId ("Contact not found") is sent once more with its fallback email
(`LoopsRequest.fallback_email`), so that Loops creates the contact, or finds
it by its email, as Segment's destination would have it. That re-send goes
under `derived_key(key, FALLBACK_SALT)`: Loops may have spent the event's
key on the refusal, and the same record sent twice still derives the same
key.

A rejected API key stops the sending, not the job: the request the client
raised `AuthError` for and every request not yet sent come back failed with
reason `key_rejected` (never sent after the rejection, so nothing is lost:
their failure records can be replayed with a valid key).

A stop of the job (transforms/core/stop.py) stops the sending too: no new
sequence starts, a sequence in flight sends no further request, and the
requests in flight end with their answers. What was never sent comes back
as nothing at all: it is left for the next run (with a sync state, a rerun
sends exactly what this one did not deliver), and the writer counts it.
"""
import dataclasses
import gc
import logging
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

from transforms.core.records import ContactSequence, LoopsRequest, derived_key
from transforms.core.stop import StopRequested, stop_requested
from transforms.core.text import format_duration
from transforms.loops.client import AuthError, LoopsClient, Outcome
from transforms.loops.refusal import refused_part, split_off
from transforms.loops.retry import KEY_REJECTED, loops_message, not_sent

# The longest the consuming thread waits for a result before calling `tick`.
TICK_SECONDS = 2.0
REFUSED_STATUS = 400
# Loops' words for an event whose userId names no contact (OAS
# `EventFailureResponse` 4593-4609: "Contact not found.").
CONTACT_NOT_FOUND = 'Contact not found'
FALLBACK_SALT = 'fallback-email'
_IDLE = object()   # take(): no result came in time


class Delivered(NamedTuple):
    """One request and how its delivery ended. `refused`: the parts of it
    Loops refused and that were split off, each a Delivered of its own
    (`request` is then what was sent without them). `fallback_sent`: the
    event as it was sent again with its fallback email, when it was; the
    outcome is then that re-send's (`request` is the event as first sent,
    under its own key)."""
    request: LoopsRequest
    outcome: Outcome
    refused: tuple = ()
    fallback_sent: Optional[LoopsRequest] = None


def no_such_contact(request: LoopsRequest, outcome: Outcome) -> bool:
    """Whether Loops refused an event send because it has no contact of the
    userId (or email) it names."""
    return (not request.spec.mergeable and outcome.status == 'failed'
            and outcome.http_status == REFUSED_STATUS
            and CONTACT_NOT_FOUND in (loops_message(outcome.response_body) or ''))


def fallback_request(request: LoopsRequest) -> LoopsRequest:
    """An event send as it goes out again with its fallback email, under
    derived_key(its key, FALLBACK_SALT)."""
    with_email = request.with_fallback_email()
    key = derived_key(request.idempotency_key, FALLBACK_SALT)
    return dataclasses.replace(with_email, headers=request.spec.headers(key))


def deliver_one(client: LoopsClient, request: LoopsRequest,
                fall_back: bool = True) -> Delivered:
    """Send `request`; when Loops refuses a mergeable request (400) for a part
    its message names, send the rest once more; when it refuses an event
    send for want of its contact and `fall_back`, send it once more with its
    fallback email, if it has one (raises AuthError on 401)."""
    outcome = client.send(request)
    if (fall_back and request.fallback_email is not None
            and no_such_contact(request, outcome)):
        fallback = fallback_request(request)
        try:
            return Delivered(request, client.send(fallback), fallback_sent=fallback)
        except StopRequested:
            # The job stops: the refusal is the event's outcome (a failure
            # record, and sent again by the next run under a new key).
            return Delivered(request, outcome)
    if (outcome.http_status != REFUSED_STATUS or outcome.status != 'failed'
            or not request.spec.mergeable):
        return Delivered(request, outcome)
    part = refused_part(loops_message(outcome.response_body), request.body)
    if part is None:
        return Delivered(request, outcome)
    rest, alone = split_off(request, part)
    return Delivered(rest, client.send(rest), (Delivered(alone, outcome),))


def steady_pace() -> None:
    """Takes every object alive now (the modules and Beam's machinery a
    worker has imported) out of the garbage collector's walks (gc.freeze).
    A full collection otherwise walks all of them, a pause of 100 ms or more
    that holds back the requests due in it, which then leave together: one
    window too many, and Loops answers 429 (measured: one 429 in 300
    requests and 1.11x the ideal time; 0 and 1.04x with this). A writer
    calls it before it sends."""
    gc.freeze()

def in_flight_for(rate: float, max_latency: float = 0.5) -> int:
    """How many contacts to send concurrently to sustain `rate` requests/s.

    By Little's law `rate * max_latency` requests are in flight at full pace;
    twice that leaves room for slow answers and retries waiting out their
    backoff. Extra threads cost little: they just queue at the token bucket.
    """
    return max(2, math.ceil(2 * rate * max_latency))


class _SequenceDone(NamedTuple):
    """A worker finished a contact's sequence; `error` is what stopped it, if anything."""
    contact: str
    error: Optional[BaseException]


def _rejected(request: LoopsRequest, error: Optional[AuthError] = None) -> Delivered:
    if error is not None:
        message = f'{request.method} {request.path} was not delivered: {error}'
    else:
        message = (f'{request.method} {request.path} was not sent: Loops rejected the API '
                   'key (401) earlier in this job')
    return Delivered(request, not_sent(KEY_REJECTED, message))


class _Flight:
    """The sequences in flight of one deliver_sequences call.

    Only the consuming thread calls fill() and take(); workers only put
    results on the queue. A sequence whose contact is in flight is held
    (one at the most) until that contact is done, so at most
    `max_in_flight + 1` sequences are held at once.
    """

    def __init__(self, client: LoopsClient, max_in_flight: int,
                 fall_back: Callable[[LoopsRequest], bool]):
        self._client = client
        self._max = max_in_flight
        self._fall_back = fall_back
        self._results: 'queue.Queue[object]' = queue.Queue()
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight,
                                            thread_name_prefix='loops-delivery')
        self.stop = threading.Event()
        self.key_rejected = False
        self.error: Optional[BaseException] = None
        self.held: Optional[ContactSequence] = None
        self._busy = set()
        self.running = 0

    def fill(self, pending: Iterator[ContactSequence]) -> None:
        """Start sequences while workers are free (and nothing stopped us)."""
        while not self.stop.is_set() and not stop_requested() and self.running < self._max:
            sequence = self.held if self.held is not None else next(pending, None)
            if sequence is None:
                return
            if sequence.contact in self._busy:
                self.held = sequence
                return
            self.held = None
            self._busy.add(sequence.contact)
            self.running += 1
            self._executor.submit(self._run, sequence)

    def _run(self, sequence: ContactSequence) -> None:
        try:
            for request in sequence.requests:
                if self.stop.is_set():
                    self._results.put(_rejected(request))
                    continue
                if stop_requested():
                    break
                try:
                    self._results.put(deliver_one(self._client, request,
                                                  self._fall_back(request)))
                except StopRequested:
                    break
                except AuthError as error:
                    self.key_rejected = True
                    self.stop.set()
                    self._results.put(_rejected(request, error))
        except BaseException as exc:  # handed to the consuming thread
            self.stop.set()
            self._results.put(_SequenceDone(sequence.contact, exc))
        else:
            self._results.put(_SequenceDone(sequence.contact, None))

    def take(self, timeout: float) -> object:
        """The next Delivered; None when a sequence just finished, _IDLE when
        nothing came within `timeout` seconds."""
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            return _IDLE
        if isinstance(item, _SequenceDone):
            self.running -= 1
            self._busy.discard(item.contact)
            if item.error is not None and self.error is None:
                self.error = item.error
            return None
        return item

    def close(self) -> None:
        self.stop.set()
        self._executor.shutdown(wait=True)


def always(request: LoopsRequest) -> bool:
    return True


def deliver_sequences(client: LoopsClient, sequences: Iterable[ContactSequence],
                      max_in_flight: int, *, tick: Optional[Callable[[], None]] = None,
                      tick_seconds: float = TICK_SECONDS,
                      fall_back: Callable[[LoopsRequest], bool] = always
                      ) -> Iterator[Delivered]:
    """Send each sequence's requests in order, up to `max_in_flight` sequences at once.

    In: `sequences` of ContactSequence (consumed lazily, only as workers free
    up: it may be a huge GroupByKey iterable). Out: one `Delivered` per
    request, as they complete (in order within a contact, in any order
    across contacts). Within a sequence the next request is sent only after
    the previous one has its outcome, whatever it is. `tick`, if given, is
    called on the consuming thread whenever `tick_seconds` pass without a
    result. `fall_back(request)` says whether an event send Loops refuses
    for want of its contact goes again with its fallback email (deliver_one):
    always, but for a stream's first sends (transforms/delivery/contact_wait.py).

    After a 401 nothing more is sent, and after a stop of the job nothing
    more is started: see the module docstring. Any other exception stops the
    sending too; the results already finished are yielded and the exception
    is re-raised.
    """
    if max_in_flight < 1:
        raise ValueError(f'max_in_flight must be at least 1, got {max_in_flight!r}')
    flight = _Flight(client, max_in_flight, fall_back)
    pending = iter(sequences)
    try:
        while True:
            flight.fill(pending)
            if flight.running == 0:
                break
            item = flight.take(tick_seconds)
            if item is _IDLE:
                if tick is not None:
                    tick()
            elif item is not None:
                yield item
    finally:
        # Reached also when the consumer abandons the generator.
        flight.close()
    if flight.error is not None:
        raise flight.error
    if flight.key_rejected:
        yield from _never_sent(flight.held, pending)


def _never_sent(held: Optional[ContactSequence],
                pending: Iterator[ContactSequence]) -> Iterator[Delivered]:
    if held is not None:
        yield from (_rejected(request) for request in held.requests)
    for sequence in pending:
        yield from (_rejected(request) for request in sequence.requests)


class DeliveryProgress:
    """Periodic progress lines for a delivery: counts only, never contact data.

    In: the total number of requests if known, the rate limit (shown for
    comparison), the interval between lines. `record()` takes each outcome and
    logs at most one line every `interval` seconds; `tick()`, called while
    the writer waits for answers, logs one too when `interval` has passed
    without a line (requests waiting on retries finish nothing for a while);
    `finish()` logs the last line. Line: "<label> sent 1200/5000 (24%),
    9.8 req/s (limit 10), 3 failed, 2 retries, ETA 6m20s" (no percentage or
    ETA without a total), then ", no request finished for 34s" when none did
    for an interval, or ", stopped: 3800 not sent" at the end of a stopped
    delivery. Call it from one thread (the writer records from the consuming one).
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
        self._last_finished = self._started
        self.sent = 0
        self.failed = 0
        self.retries = 0

    def record(self, outcome: Outcome) -> None:
        """Count one finished request; log a line if `interval` has passed."""
        self.sent += 1
        self.retries += max(0, outcome.attempts - 1)
        if outcome.status == 'failed':
            self.failed += 1
        self._last_finished = self._clock()
        self.tick()

    def tick(self) -> None:
        """Log a line if `interval` has passed since the last one."""
        now = self._clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._log(self.line(now))

    def finish(self, not_sent: int = 0) -> None:
        """Log the final line; `not_sent`: requests a stop of the job left unsent."""
        line = self.line(self._clock())
        self._log(f'{line}, stopped: {not_sent} not sent' if not_sent else line)

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
        idle = now - self._last_finished
        waiting = (f', no request finished for {format_duration(idle)}'
                   if idle >= self.interval and self.sent != self.total else '')
        prefix = f'{self.label} ' if self.label else ''
        return (f'{prefix}{sent}, {rate:.1f} req/s (limit {self.rate_limit:g}), '
                f'{self.failed} failed, {self.retries} retries{eta}{waiting}')
