"""Events that reach Loops before their contact: held by the stream's writer,
and sent again.

An event send that names its contact only by userId gets `400 Contact not
found.` while the identify that creates the contact is still on its way or
in a later batch. Every signup does this: Segment sends identify and
track('Signed Up') together, and Pub/Sub delivers them in either order.

`WriteShardWaitingForContacts` (the stream's writer DoFn) therefore holds
such an event in its shard's keyed state instead of failing it, and sends it
again
- at once after the batch in which any request of that contact was accepted
  by Loops (its upsert, usually: the contact exists now);
- otherwise after a wait that doubles, `ContactWait.first_backoff` (5 s),
  10 s, 20 s, ... on a processing-time timer, the last try `ContactWait.seconds`
  (`--contact_wait_seconds`, 600) after the first refusal. That last try
  goes with the event's fallback email when it has one (the email its call
  carried, `LoopsRequest.fallback_email`): the contact never came, so Loops
  creates it from the event, as a backfill would (transforms/delivery/in_flight.py).
  Refused then too, it is a failure record (stage deliver, reason http_400,
  Loops' message and how long it waited).
A shard's contacts are all written by that shard's writer, one batch after
another, so the writer sees every upsert its held events wait for.

Loops may spend an Idempotency-Key on a refused request, so re-send n goes out
under `derived_key(original key, 'contact-wait-<n>')`: a new key, the same
for the same n, so a retried bundle (whose state starts again from before
it) repeats the same keys and gets 409 (already delivered), never a second
event; the last try's re-send with its fallback email goes under
derived_key(that re-send's key, 'fallback-email'). A released event is
recorded (--state) under its own key. Counters: `stream/events_held`
(first refusals held), `stream/events_released` (held events Loops then
accepted), `stream/events_waited_out` (held events failed after the whole
wait), and the writer's `deliver/sent_with_fallback_email`.
"""
import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.core.metrics import CounterFamily
from transforms.core.records import ContactSequence, LoopsRequest, derived_key
from transforms.core.text import format_duration
from transforms.delivery.in_flight import Delivered, no_such_contact
from transforms.delivery.shard_writer import WriteShard

RESEND_SALT = 'contact-wait-'


@dataclass(frozen=True)
class ContactWait:
    """How long a held event waits for its contact: re-sent `first_backoff`
    seconds after its refusal, then after twice as long each time, the last
    time `seconds` after the first refusal."""
    seconds: float = 600.0
    first_backoff: float = 5.0

    def __post_init__(self):
        if not self.seconds > 0 or not self.first_backoff > 0:
            raise ValueError('a contact wait needs positive seconds and first_backoff, got '
                             f'{self.seconds!r} and {self.first_backoff!r}')

    def next_try(self, first_refused: float, resends: int, now: float) -> Optional[float]:
        """When to send a held event again after `resends` re-sends (times in
        seconds), or None when its wait is over."""
        deadline = first_refused + self.seconds
        if now >= deadline:
            return None
        return min(now + self.first_backoff * 2 ** resends, deadline)


class HeldEvent(NamedTuple):
    """An event waiting for its contact: the request as first sent (with its
    own Idempotency-Key), the re-sends made so far, when Loops first refused
    it and when it is due again (seconds of processing time)."""
    request: LoopsRequest
    resends: int
    first_refused: float
    due: float


def waits_for_contact(delivered: Delivered) -> bool:
    """Whether Loops refused an event because it has no such contact (yet)."""
    return no_such_contact(delivered.request, delivered.outcome)


def never(request: LoopsRequest) -> bool:
    return False


def resend_request(held: HeldEvent) -> LoopsRequest:
    """The held event as its next re-send goes out: under
    derived_key(original key, 'contact-wait-<n>') for re-send n."""
    key = derived_key(held.request.idempotency_key, f'{RESEND_SALT}{held.resends + 1}')
    return dataclasses.replace(held.request, headers=held.request.spec.headers(key))


def waited_out(delivered: Delivered, held: HeldEvent, now: float) -> Delivered:
    """The last refusal of an event whose contact never came, its message
    saying how long the event waited and how often it was sent."""
    outcome = delivered.outcome
    message = (f'{outcome.message} (the event waited '
               f'{format_duration(now - held.first_refused)} for its contact, sent '
               f'{held.resends + 2} times; see --contact_wait_seconds)')
    return Delivered(delivered.request, outcome._replace(message=message))


class HeldEvents:
    """A shard's held events by contact; `by_contact` is what its state keeps."""

    def __init__(self, by_contact: Optional[dict] = None):
        self.by_contact = {contact: list(events) for contact, events in
                           (by_contact or {}).items()}

    def add(self, event: HeldEvent) -> None:
        self.by_contact.setdefault(event.request.contact, []).append(event)

    def release(self, contacts: Iterable[str]) -> list:
        """Takes out every event of `contacts`."""
        return [event for contact in contacts for event in self.by_contact.pop(contact, ())]

    def take_due(self, now: float) -> list:
        """Takes out every event due by `now`."""
        due = []
        for contact in list(self.by_contact):
            events = self.by_contact[contact]
            due += [event for event in events if event.due <= now]
            waiting = [event for event in events if event.due > now]
            if waiting:
                self.by_contact[contact] = waiting
            else:
                del self.by_contact[contact]
        return due

    def next_due(self) -> Optional[float]:
        return min((event.due for events in self.by_contact.values() for event in events),
                   default=None)


class WriteShardWaitingForContacts(WriteShard):
    """The stream's WriteShard: events Loops refuses for want of their
    contact are held in the shard's state and sent again (module docstring).
    `clock` gives processing time in seconds (for tests: TestStream's axis)."""
    HELD = ReadModifyWriteStateSpec('held', PickleCoder())
    WAKE = TimerSpec('wake', TimeDomain.REAL_TIME)

    def __init__(self, connection, label, client_factory=None, recorder=None, *,
                 wait: ContactWait, clock: Optional[Callable[[], float]] = None):
        super().__init__(connection, label, client_factory, recorder)
        self._wait = wait
        self._clock = clock or time.time

    def setup(self):
        super().setup()
        self._waiting = CounterFamily('stream/')

    def process(self, keyed, held_state=beam.DoFn.StateParam(HELD),
                wake=beam.DoFn.TimerParam(WAKE)):
        shard, sequences = keyed
        now = float(self._clock())
        held = HeldEvents(held_state.read())
        accepted, sent = set(), 0
        # A first refusal is held, not sent again with its fallback email.
        for delivered in self._deliver(shard, sequences, fall_back=never):
            sent += 1
            # A deletion is no sign that the contact now exists.
            if (delivered.outcome.status != 'failed'
                    and not delivered.request.spec.removes_contact):
                accepted.add(delivered.request.contact)
            if waits_for_contact(delivered):
                held.add(HeldEvent(delivered.request, 0, now, self._wait.next_try(now, 0, now)))
                self._waiting.inc('events_held')
            else:
                yield from self._finish(delivered)
        yield from self._send_again(held.release(accepted), held, now)
        self._keep(held, held_state, wake)
        yield shard, sent

    @on_timer(WAKE)
    def send_due(self, fired=beam.DoFn.TimestampParam,
                 held_state=beam.DoFn.StateParam(HELD), wake=beam.DoFn.TimerParam(WAKE)):
        # A timer fires at or after the time it was set for (under TestStream
        # the clock may stand still while the test moves processing time on).
        now = max(float(self._clock()), float(fired))
        held = HeldEvents(held_state.read())
        yield from self._send_again(held.take_due(now), held, now)
        self._keep(held, held_state, wake)

    def _send_again(self, events: list, held: HeldEvents, now: float):
        """Re-sends `events`, each contact's in event-time order; holds again
        those still refused for want of their contact, until their wait is
        over; a last try goes with its fallback email."""
        by_key, by_contact, last_tries = {}, {}, set()
        for event in sorted(events, key=lambda e: (e.request.contact, e.request.stamp)):
            request = resend_request(event)
            by_key[request.idempotency_key] = event
            by_contact.setdefault(request.contact, []).append(request)
            if self._wait.next_try(event.first_refused, event.resends + 1, now) is None:
                last_tries.add(request.idempotency_key)
        sequences = [ContactSequence(contact, tuple(requests))
                     for contact, requests in by_contact.items()]

        def last_try(request: LoopsRequest) -> bool:
            return request.idempotency_key in last_tries

        for delivered in self._send(sequences, fall_back=last_try) if sequences else ():
            event = by_key[delivered.request.idempotency_key]
            if waits_for_contact(delivered):
                due = self._wait.next_try(event.first_refused, event.resends + 1, now)
                if due is not None:
                    held.add(event._replace(resends=event.resends + 1, due=due))
                    continue
                self._waiting.inc('events_waited_out')
                delivered = waited_out(delivered, event, now)
            elif delivered.outcome.status != 'failed':
                self._waiting.inc('events_released')
                # Recorded under the event's own key, the one a later copy of
                # its message carries (transforms/state/delivered_events.py).
                delivered = delivered._replace(request=dataclasses.replace(
                    delivered.request, headers=event.request.headers))
            yield from self._finish(delivered)

    def _keep(self, held: HeldEvents, held_state, wake) -> None:
        next_due = held.next_due()
        if next_due is None:
            held_state.clear()
            wake.clear()
        else:
            held_state.write(held.by_contact)
            wake.set(Timestamp.of(next_due))
