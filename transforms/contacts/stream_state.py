"""A stream's memory of each contact, so that the latest value wins whatever
the order in which Pub/Sub delivers a contact's calls.

Pub/Sub keeps no order: a contact's newer identify can arrive first and an
older one seconds, or days, later. `KeepLatestPerContact` keeps, per contact
key, the stamp of every property it has let through (the contact model's
`stamps_of`, transforms/contacts/model.py) and the contact's latest email,
in Beam keyed state:

- an upsert goes on with only the properties newer than what was let
  through for them (`newer_than`), plus the userId or email that names the
  contact; every older property is dropped (`stream/stale_dropped`, one per
  property), and an upsert left with nothing to set is dropped whole
  (`stream/stale_requests`). A property repeated at the same stamp (a
  redelivered message) is not newer, so it is not sent twice either;
- the consent rule of the contact model applies to what is left
  (`upsert_from_state`): unless `resubscribe`, a `subscribed: true` is held
  back (`held_back/resubscribes`); an opt-out, an upsert's or an event's, is
  counted (`contacts/unsubscribes`);
- an event send that names its contact by userId is given the contact's
  latest email as its fallback email when the memory has one
  (`stream/events_given_email`), in place of the email its own call carried
  (older, or someone else's): never sent with the event, which would set
  the contact's email to it, but only if Loops still has no contact of
  that userId after the writer's wait (transforms/delivery/contact_wait.py).

- a deletion always goes on; the memory then keeps only its stamp (a
  tombstone): a later-arriving call of the contact from before the
  deletion is dropped (`stream/before_deletion`: an upsert of which nothing
  is left, or an event), and one from after it goes on as for a contact
  never seen (the writer sends a contact's requests of one batch before or
  after its deletion by their stamps, transforms/delivery/batching.py).

"Let through" is not "applied by Loops": the writer sends a contact's
requests in the order this step emits them, and a refused upsert is a
failure record (replayable), not something this step learns of.

A contact's memory is forgotten `ttl_seconds` of processing time after its
last request (a processing-time timer, set again on each request;
`stream/contacts_forgotten`). Pub/Sub keeps an unacknowledged message for at
most 7 days, the default: a contact's older call can't arrive later than
that after its newer one. A call that does arrive after its contact was
forgotten is sent as a first one would be.
"""
import dataclasses
import time
from typing import Callable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.typehints import Any, Tuple
from apache_beam.utils.timestamp import Timestamp

from transforms.contacts.merge import EMAIL_PREFIX, count_unsubscribe, upsert_from_state
from transforms.contacts.model import email_of, newer_than, stamps_of, state_of
from transforms.core.metrics import BundleCounts
from transforms.core.records import LoopsRequest

DEFAULT_TTL_SECONDS = 7 * 24 * 3600.0


class ContactMemory(NamedTuple):
    """What a stream has let through for one contact: property -> stamp
    (mailing lists per list id, as in a contact state), its latest email,
    and the stamp of its latest deletion (None: never deleted)."""
    stamps: dict
    email: Optional[str]
    deleted: Optional[tuple] = None


NO_MEMORY = ContactMemory({}, None)


def naming_key(contact: str) -> str:
    """The body key that names a contact of this key: its email for an
    email-only contact, else its userId."""
    return 'email' if contact.startswith(EMAIL_PREFIX) else 'userId'


def admit_upsert(request: LoopsRequest, memory: ContactMemory, resubscribe: bool,
                 counts) -> tuple:
    """An upsert and the contact's memory -> (the upsert to send, or None;
    the memory after it). See the module docstring."""
    state = state_of(request.body, request.stamp)
    if memory.deleted is not None and tuple(request.stamp) <= memory.deleted:
        counts['stream/before_deletion'] += 1
        return None, memory
    fresh = newer_than(state, memory.stamps)
    name = naming_key(request.contact)
    stale = [key for key in state if key not in fresh and key != name]
    counts['stream/stale_dropped'] += len(stale)
    remembered = ContactMemory({**memory.stamps, **stamps_of(fresh)},
                               email_of(fresh) or memory.email, memory.deleted)
    if all(key == name for key in fresh):
        counts['stream/stale_requests'] += 1
        return None, remembered
    if name in state:
        fresh[name] = state[name]
    upsert = upsert_from_state(request.contact, fresh, resubscribe, counts)
    if set(upsert.body) <= {name}:   # nothing left but the consent held back
        return None, remembered
    return dataclasses.replace(upsert, source=request.source), remembered


def with_known_email(request: LoopsRequest, memory: ContactMemory, counts) -> LoopsRequest:
    """An event send that names its contact by userId, with the contact's
    latest email as its fallback email when the memory has one."""
    if memory.email is None or 'userId' not in request.body or 'email' in request.body:
        return request
    counts['stream/events_given_email'] += 1
    return dataclasses.replace(request, fallback_email=memory.email)


def admit_deletion(request: LoopsRequest, memory: ContactMemory) -> tuple:
    """A deletion -> (itself, a memory of nothing but the latest deletion's stamp)."""
    deleted = tuple(request.stamp)
    if memory.deleted is not None and memory.deleted > deleted:
        deleted = memory.deleted
    return request, ContactMemory({}, None, deleted)


def admit(request: LoopsRequest, memory: ContactMemory, resubscribe: bool, counts) -> tuple:
    """Any request and its contact's memory -> (what to send or None, the memory after)."""
    spec = request.spec
    if spec.removes_contact:
        return admit_deletion(request, memory)
    if spec.mergeable:
        return admit_upsert(request, memory, resubscribe, counts)
    if memory.deleted is not None and tuple(request.stamp) <= memory.deleted:
        counts['stream/before_deletion'] += 1
        return None, memory
    count_unsubscribe(request.body, counts)
    return with_known_email(request, memory, counts), memory


class _KeepLatest(beam.DoFn):
    MEMORY = ReadModifyWriteStateSpec('memory', PickleCoder())
    FORGET = TimerSpec('forget', TimeDomain.REAL_TIME)

    def __init__(self, ttl_seconds: float, resubscribe: bool, clock: Callable[[], float]):
        self._ttl_seconds = ttl_seconds
        self._resubscribe = resubscribe
        self._clock = clock

    def setup(self):
        self._counts = BundleCounts()

    def process(self, keyed, memory_state=beam.DoFn.StateParam(MEMORY),
                forget=beam.DoFn.TimerParam(FORGET)):
        _, request = keyed
        memory = memory_state.read() or NO_MEMORY
        admitted, remembered = admit(request, memory, self._resubscribe, self._counts)
        if remembered is not memory:
            memory_state.write(remembered)
        forget.set(Timestamp.of(self._clock() + self._ttl_seconds))
        if admitted is not None:
            yield admitted

    def finish_bundle(self):
        self._counts.flush()

    @on_timer(FORGET)
    def forget_contact(self, memory_state=beam.DoFn.StateParam(MEMORY)):
        memory_state.clear()
        self._counts['stream/contacts_forgotten'] += 1


class KeepLatestPerContact(beam.PTransform):
    """LoopsRequest -> LoopsRequest: per contact key, upserts with only the
    properties newer than those already let through, events with the
    contact's latest email as their fallback (see the module docstring).
    Nothing fails here; what is dropped is counted.

    `ttl_seconds`: how long a contact is remembered after its last request
    (processing time; `clock`, in seconds, is for tests). `resubscribe`:
    send `subscribed: true` as the data says.
    """

    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS, resubscribe: bool = True,
                 clock: Optional[Callable[[], float]] = None):
        super().__init__()
        if not ttl_seconds > 0:
            raise ValueError(f'ttl_seconds must be positive, got {ttl_seconds!r}')
        self._ttl_seconds = ttl_seconds
        self._resubscribe = resubscribe
        self._clock = clock or time.time

    def expand(self, requests):
        return (requests
                | 'KeyByContact' >> beam.Map(lambda request: (request.contact, request))
                .with_output_types(Tuple[str, Any])
                | 'LetLatestThrough' >> beam.ParDo(_KeepLatest(
                    self._ttl_seconds, self._resubscribe, self._clock)))
