"""The stream's check against the sync state: an event send the state
records as delivered is not sent again, however late its copy arrives.

Segment's libraries re-send a batch that got no answer, and mobile ones
queue calls for days: a message can reach the stream again long after the
stream forgot its messageId (--dedupe_seconds), or after a restart. Its
copy has the same Idempotency-Key, and the state's event facts
(transforms/state/facts.py) hold the digest of every key delivered, filed
by the event's UTC day. `DropDeliveredEvents` looks each event send up
there (counted `state/events_already_sent`, as in a backfill).

The cheapest way to ask: each worker process reads the partitions of the
days its events fall on when it first needs them and keeps them
(`DeliveredEventFacts`, shared by the process's threads), at most
MAX_CACHED_DAYS days, the least recently used forgotten first. A key not
found there is looked for again in the files written since, when the day
was last listed more than `refresh_seconds` ago (the writers' flush
interval, --state_flush_seconds: what the stream delivered reaches the
state after about as long). A copy that arrives after --dedupe_seconds
but before its original's delivery is in the state and listed is sent;
Loops then answers 409 on its key, spent within 24 hours (counted
`already_delivered`), so it is not delivered twice either.

An event the state records as refused by Loops (a 4xx, which may have
spent its key) and not delivered since goes again under a new key, as a
backfill sends it (transforms/contacts/ordering.py, resend_after_refusal),
counted `state/refused_events_resent`: under its own key Loops would answer
with the refusal it keeps for that key.

A copy's timestamp may differ from its original's by the difference in
network delay (Segment corrects it by sentAt and receivedAt): within
DAY_EDGE_MS of midnight the neighbouring day is looked at too.
"""
import collections
import threading
import time
from typing import Any, Callable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from transforms.contacts.ordering import RESENT_AFTER_REFUSAL, resend_after_refusal
from transforms.core.digests import contact_digest, key_digest
from transforms.core.metrics import NAMESPACE
from transforms.core.records import LoopsRequest
from transforms.segment.timestamps import DAY_MS
from transforms.state.files import day_files, event_day, read_facts_file

MAX_CACHED_DAYS = 4
DAY_EDGE_MS = 3600 * 1000


def days_of(event_ms: int) -> tuple:
    """The event days whose facts may hold an event at `event_ms`: its own,
    and the neighbouring one within DAY_EDGE_MS of midnight."""
    days = [event_day(event_ms)]
    into_day = max(0, event_ms) % DAY_MS
    if into_day < DAY_EDGE_MS and event_ms >= DAY_MS:
        days.append(event_day(event_ms - DAY_MS))
    elif into_day >= DAY_MS - DAY_EDGE_MS:
        days.append(event_day(event_ms + DAY_MS))
    return tuple(days)


class _Day:
    """One event day's delivered facts (contact digest + key digest), its
    refusals (the same -> when Loops refused it, the latest), the files they
    were read from, and when the day was last listed."""

    def __init__(self):
        self.facts = set()
        self.refused = {}
        self.files = set()
        self.listed_at: Optional[float] = None


class DeliveredEventFacts:
    """The state's event facts under `prefix`, read by event day on demand
    and kept (see the module docstring). Safe to share between threads."""

    def __init__(self, prefix: str, refresh_seconds: float,
                 clock: Callable[[], float] = time.monotonic,
                 max_days: int = MAX_CACHED_DAYS):
        self._prefix = prefix
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._max_days = max_days
        self._days = collections.OrderedDict()
        self._lock = threading.Lock()

    def delivered(self, request: LoopsRequest) -> bool:
        """Whether the state records `request` (an event send) as delivered."""
        found = self._find(request, lambda held, fact: True if fact in held.facts else None)
        return found is True

    def refused_at(self, request: LoopsRequest) -> Optional[int]:
        """When Loops last refused `request` (an event send), in epoch ms, as
        the state records it; None when it did not."""
        return self._find(request, lambda held, fact: held.refused.get(fact))

    def _find(self, request: LoopsRequest, found_in: Callable) -> Any:
        """What `found_in(day, fact)` finds (None: nothing) for the request's
        fact in the first of its days that has it, a day listed again when
        its refresh interval passed; else None."""
        key = request.idempotency_key
        if not key:
            return None
        fact = contact_digest(request.contact) + key_digest(key)
        with self._lock:
            for day in days_of(request.stamp.event_ms):
                held = self._day(day)
                found = found_in(held, fact)
                if found is None and self._clock() - held.listed_at >= self._refresh_seconds:
                    self._read_new_files(day, held)
                    found = found_in(held, fact)
                if found is not None:
                    return found
        return None

    def _day(self, day: str) -> _Day:
        held = self._days.get(day)
        if held is not None:
            self._days.move_to_end(day)
            return held
        held = self._days[day] = _Day()
        if len(self._days) > self._max_days:
            self._days.popitem(last=False)
        self._read_new_files(day, held)
        return held

    def _read_new_files(self, day: str, held: _Day) -> None:
        held.listed_at = self._clock()
        for metadata in day_files(self._prefix, day):
            if metadata.path in held.files:
                continue
            try:
                for contact, facts in read_facts_file(metadata.path):
                    held.facts.update(contact + event for event in facts.events)
                    for key, refused_ms in facts.refused:
                        fact = contact + key
                        held.refused[fact] = max(refused_ms, held.refused.get(fact, -1))
            except OSError:
                # Folded into a snapshot and deleted since the listing: the
                # snapshot is in the next one.
                continue
            held.files.add(metadata.path)


class _DropDelivered(beam.DoFn):
    def __init__(self, prefix: str, refresh_seconds: float):
        self._prefix = prefix
        self._refresh_seconds = refresh_seconds
        self._shared = Shared()

    def setup(self):
        self._facts = self._shared.acquire(
            lambda: DeliveredEventFacts(self._prefix, self._refresh_seconds),
            tag=(self._prefix, self._refresh_seconds))
        self._already_sent = Metrics.counter(NAMESPACE, 'state/events_already_sent')
        self._resent = Metrics.counter(NAMESPACE, RESENT_AFTER_REFUSAL)

    def process(self, request: LoopsRequest):
        if not request.spec.mergeable:
            if self._facts.delivered(request):
                self._already_sent.inc()
                return
            refused_ms = self._facts.refused_at(request)
            if refused_ms is not None:
                self._resent.inc()
                request = resend_after_refusal(request, refused_ms)
        yield request


class DropDeliveredEvents(beam.PTransform):
    """LoopsRequest -> LoopsRequest, without the event sends the sync state
    under `prefix` records as delivered (counted `state/events_already_sent`),
    and those it records as refused under a new key (counted
    `state/refused_events_resent`); a day's files are listed again at most
    every `refresh_seconds`."""

    def __init__(self, prefix: str, refresh_seconds: float):
        super().__init__()
        if not refresh_seconds > 0:
            raise ValueError(f'refresh_seconds must be positive, got {refresh_seconds!r}')
        self._prefix = prefix
        self._refresh_seconds = refresh_seconds

    def expand(self, requests):
        return requests | 'DropDelivered' >> beam.ParDo(
            _DropDelivered(self._prefix, self._refresh_seconds))
