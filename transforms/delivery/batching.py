"""A stream's requests in batches per shard, each contact's merged in order.

A stream writes as it reads: `BatchPerShard` emits a shard's batch when it is
full or its oldest request has waited long enough, and `arrange_batch` turns
the batch into one sequence per contact, phase by phase (transforms/core/kinds.py:
the contact exists before an event that names it only by userId), the
requests of a mergeable kind folded into one. A deletion of the contact
splits its requests by stamp: those from before it are sent (arranged so)
before it, those from after it after it, never merged across it.
"""
import bisect
import itertools
import time
from typing import Iterable, List

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.contacts.model import body_of, latest_stamp, merge, stamps_of, state_of
from transforms.core.metrics import NAMESPACE
from transforms.core.records import ContactSequence, LoopsRequest


def merge_requests(requests: List[LoopsRequest]) -> LoopsRequest:
    """Requests of one mergeable kind and contact -> one request: per
    property the value with the latest stamp; the sources comma-joined.
    Several requests merged carry each property's own stamp (`stamps`), for
    a delivery recorder."""
    if len(requests) == 1:
        return requests[0]
    state = merge(*(state_of(request.body, request.stamp) for request in requests))
    last = requests[-1]
    return LoopsRequest(last.kind, body_of(state), last.headers, last.contact,
                        latest_stamp(state),
                        ','.join(request.source for request in requests if request.source),
                        stamps_of(state))


def arrange_contact(requests: Iterable[LoopsRequest]) -> List[LoopsRequest]:
    """One contact's requests -> the order to send them: around its
    deletions by stamp (each deletion once), and between them phase by
    phase, each kind's in event-time order, a mergeable kind's merged into
    one, a repeated messageId sent once."""
    requests = list(requests)
    deletions = _once_each(sorted((r for r in requests if r.spec.removes_contact),
                                  key=lambda r: r.stamp))
    if not deletions:
        return _arrange_between_deletions(requests)
    between = [[] for _ in range(len(deletions) + 1)]
    deleted_at = [deletion.stamp for deletion in deletions]
    for request in requests:
        if not request.spec.removes_contact:
            between[bisect.bisect_left(deleted_at, request.stamp)].append(request)
    arranged = _arrange_between_deletions(between[0])
    for deletion, after in zip(deletions, between[1:]):
        arranged.append(deletion)
        arranged.extend(_arrange_between_deletions(after))
    return arranged


def _once_each(deletions: List[LoopsRequest]) -> List[LoopsRequest]:
    """Deletions in stamp order, a repeated one (the same stamp) once."""
    return [deletion for i, deletion in enumerate(deletions)
            if i == 0 or deletion.stamp != deletions[i - 1].stamp]


def _arrange_between_deletions(requests: List[LoopsRequest]) -> List[LoopsRequest]:
    ordered = sorted(requests, key=lambda r: (r.spec.phase, r.kind, r.stamp))
    arranged = []
    for _, group in itertools.groupby(ordered, key=lambda r: r.kind):
        group = list(group)
        if group[0].spec.mergeable:
            arranged.append(merge_requests(group))
            continue
        seen = set()
        for request in group:
            message_id = request.stamp.message_id
            if message_id and message_id in seen:
                continue
            seen.add(message_id)
            arranged.append(request)
    return arranged


def arrange_batch(sequences: Iterable[ContactSequence]) -> List[ContactSequence]:
    """A batch of a stream's sequences -> one sequence per contact (arrange_contact)."""
    by_contact = {}
    for sequence in sequences:
        by_contact.setdefault(sequence.contact, []).extend(sequence.requests)
    return [ContactSequence(contact, tuple(arrange_contact(requests)))
            for contact, requests in by_contact.items()]


class _ArrangeBatch(beam.DoFn):
    def setup(self):
        self._merged = Metrics.counter(NAMESPACE, 'batch/merged')

    def process(self, keyed):
        shard, sequences = keyed
        sequences = list(sequences)
        arranged = arrange_batch(sequences)
        self._merged.inc(sum(len(s.requests) for s in sequences)
                         - sum(len(s.requests) for s in arranged))
        yield shard, arranged


class BatchPerShard(beam.PTransform):
    """(shard, ContactSequence) -> (shard, [ContactSequence, one per contact]).

    Emits a shard's batch when it holds `batch_size` sequences or when its
    oldest has waited `max_buffering_seconds` (processing time; `clock` is
    for tests), whichever comes first.
    """

    def __init__(self, batch_size: int, max_buffering_seconds: float, clock=None):
        super().__init__()
        self._batch_size = batch_size
        self._max_buffering_seconds = max_buffering_seconds
        self._clock = clock

    def expand(self, keyed):
        return (
            keyed
            | 'GroupIntoBatches' >> beam.GroupIntoBatches(
                self._batch_size, max_buffering_duration_secs=self._max_buffering_seconds,
                clock=self._clock or time.time)
            | 'MergePerContact' >> beam.ParDo(_ArrangeBatch()))
