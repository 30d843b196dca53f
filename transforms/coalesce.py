"""Grouping requests per contact: dropping duplicates, ordering, coalescing.

Every request of one contact ends in one ordered sequence, so the writer can
send a contact's requests strictly in event-time order, and all upserts of a
contact can be merged into one request (Loops has no batch endpoint: fewer
requests is the only way to go faster than the rate limit).
"""
import dataclasses
import pickle
from typing import Iterable, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.merge import coalesce_upserts
from transforms.metrics import NAMESPACE
from transforms.records import LoopsRequest

CONTACTS, EVENTS = 'contacts', 'events'


class ContactSequence(NamedTuple):
    """One contact's requests of one kind, in the order they must be sent."""
    contact: str
    requests: tuple


# LoopsRequest's fields in declaration order, so encoding and decoding can't
# drift apart when a field is added.
_REQUEST_FIELDS = tuple(field.name for field in dataclasses.fields(LoopsRequest))


def to_shuffle_bytes(request: LoopsRequest) -> bytes:
    """A request as the bytes GroupByContact shuffles (its fields, pickled)."""
    return pickle.dumps(tuple(getattr(request, name) for name in _REQUEST_FIELDS),
                        pickle.HIGHEST_PROTOCOL)


def from_shuffle_bytes(encoded: bytes) -> LoopsRequest:
    """The request that to_shuffle_bytes encoded."""
    return LoopsRequest(*pickle.loads(encoded))


class Arranged(NamedTuple):
    requests: list
    duplicates: int
    merged: int


def arrange_contact_requests(requests: Iterable[LoopsRequest],
                             coalesce: bool) -> Arranged:
    """Sorts one contact's requests of one kind into event-time order, drops
    repeated messageIds (a Segment duplicate is the same payload, so it is
    always in the same contact's group), and, when `coalesce` is set and the
    requests are upserts, merges them into one.
    """
    ordered = sorted(requests, key=lambda r: r.order)
    seen = set()
    kept = []
    for request in ordered:
        message_id = request.order[2]
        if message_id:
            if message_id in seen:
                continue
            seen.add(message_id)
        kept.append(request)
    duplicates = len(ordered) - len(kept)
    if coalesce and len(kept) > 1 and not kept[0].is_event:
        return Arranged([coalesce_upserts(kept)], duplicates, len(kept) - 1)
    return Arranged(kept, duplicates, 0)


class _ArrangeContact(beam.DoFn):
    def __init__(self, coalesce: bool):
        self._coalesce = coalesce

    def setup(self):
        self._duplicates = Metrics.counter(NAMESPACE, 'coalesce/duplicates')
        self._merged = Metrics.counter(NAMESPACE, 'coalesce/merged')
        self._contacts = Metrics.counter(NAMESPACE, 'coalesce/contact_requests')
        self._events = Metrics.counter(NAMESPACE, 'coalesce/event_requests')

    def process(self, keyed):
        (is_event, contact), encoded = keyed
        arranged = arrange_contact_requests(map(from_shuffle_bytes, encoded), self._coalesce)
        self._duplicates.inc(arranged.duplicates)
        self._merged.inc(arranged.merged)
        sequence = ContactSequence(contact, tuple(arranged.requests))
        if is_event:
            self._events.inc(len(arranged.requests))
            yield beam.pvalue.TaggedOutput(EVENTS, sequence)
        else:
            self._contacts.inc(len(arranged.requests))
            yield sequence


class GroupByContact(beam.PTransform):
    """LoopsRequest -> (contact sequences, event sequences).

    Out: two PCollections of ContactSequence: contact upserts (one merged
    request per contact unless coalesce=False) and event sends, each in
    event-time order per contact, duplicates by messageId dropped and counted.
    """

    def __init__(self, coalesce: bool = True):
        super().__init__()
        self._coalesce = coalesce

    def expand(self, requests):
        arranged = (
            requests
            | 'KeyByContact' >> beam.Map(
                lambda r: ((r.is_event, r.contact), to_shuffle_bytes(r))).with_output_types(
                    Tuple[Tuple[bool, str], bytes])
            | 'GroupByContact' >> beam.GroupByKey()
            | 'OrderAndCoalesce' >> beam.ParDo(_ArrangeContact(self._coalesce)).with_outputs(
                EVENTS, main=CONTACTS))
        return arranged[CONTACTS], arranged[EVENTS]
