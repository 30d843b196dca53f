"""A contact's event sends in event-time order, each once, in bounded memory.

Requests that don't merge (event sends) are grouped by (phase, contact) and
sorted by (stamp, idempotency key). A Segment duplicate repeats its event's
payload, so it has the same stamp and key and lands next to its original:
dropping a request equal to the one before it removes every duplicate
without remembering what was seen.

A contact with more requests than SPILL_SIZE (a bot, a load test, a
server-side "system" userId) is sorted in runs written to temporary files
and merged back in order, and its requests leave in parts of PART_SIZE:
part k is a ContactSequence with `part=k`, which the writer sends only after
part k-1. Memory stays bounded whatever one contact's number of events.

With a sync state (transforms/sync_state.py), `OrderRequests(delivered=...)`
also drops the events whose Idempotency-Key the state says were delivered,
however old: their keys join the contact's group as `DeliveredKeys`.
"""
import heapq
import itertools
import pickle
import tempfile
from typing import Iterable, Iterator, Optional

import apache_beam as beam

from transforms.kinds import PHASES
from transforms.metrics import BundleCounts
from transforms.records import ContactSequence, decode_request, encode_request
from transforms.state_facts import contact_digest, key_digest

PART_SIZE = 10_000
SPILL_SIZE = 50_000


def sort_key(request) -> tuple:
    return (request.stamp, request.idempotency_key or '')


def in_order(encoded: Iterable[bytes], spill_size: int = SPILL_SIZE) -> Iterator:
    """Encoded requests -> (sort key, request) in sort-key order; at most
    `spill_size` requests are held in memory at once."""
    runs = []
    buffer = []
    sequence = itertools.count()   # ties never compare the requests themselves
    for value in encoded:
        request = decode_request(value)
        buffer.append((sort_key(request), next(sequence), request))
        if len(buffer) >= spill_size:
            runs.append(_spill(buffer))
            buffer = []
    buffer.sort(key=lambda item: item[:2])
    if not runs:
        return ((key, request) for key, _, request in buffer)
    runs.append(_spill(buffer))
    return ((key, decode_request(value))
            for key, _, value in heapq.merge(*(_read_run(run) for run in runs)))


def _spill(buffer: list):
    """Sorts `buffer` and writes it to a temporary file (removed when closed)."""
    buffer.sort(key=lambda item: item[:2])
    run = tempfile.TemporaryFile()
    for key, number, request in buffer:
        pickle.dump((key, number, encode_request(request)), run, pickle.HIGHEST_PROTOCOL)
    run.seek(0)
    return run


def _read_run(run) -> Iterator[tuple]:
    with run:
        while True:
            try:
                yield pickle.load(run)
            except EOFError:
                return


def without_repeats(ordered: Iterable[tuple], counts) -> Iterator[tuple]:
    """The (sort key, request) pairs of `ordered`, each sort key once; the
    repeats are counted as `order/duplicates`."""
    previous = None
    for pair in ordered:
        if pair[0] == previous:
            counts['order/duplicates'] += 1
            continue
        previous = pair[0]
        yield pair


class DeliveredKeys(frozenset):
    """Digests (state_facts.key_digest) of a contact's Idempotency-Keys that
    the sync state says were delivered."""


def not_delivered(ordered: Iterable[tuple], delivered: frozenset, counts) -> Iterator[tuple]:
    """The (sort key, request) pairs whose Idempotency-Key (the sort key's
    second part) is not among the `delivered` digests; the others are
    counted as `state/events_already_sent`."""
    for pair in ordered:
        key = pair[0][1]
        if key and key_digest(key) in delivered:
            counts['state/events_already_sent'] += 1
            continue
        yield pair


def in_parts(contact: Optional[str], requests: Iterable,
             part_size: int = PART_SIZE) -> Iterator:
    """Ordered requests -> ContactSequences of at most `part_size`, numbered
    (`contact` None: the requests' own)."""
    requests = iter(requests)
    for part in itertools.count():
        chunk = tuple(itertools.islice(requests, part_size))
        if not chunk:
            return
        yield ContactSequence(chunk[0].contact if contact is None else contact, chunk, part)


class _OrderContactRequests(beam.DoFn):
    def __init__(self, part_size: int, spill_size: int):
        self._part_size = part_size
        self._spill_size = spill_size

    def setup(self):
        self._counts = BundleCounts()

    def process(self, keyed):
        (phase, contact), lists = keyed
        delivered = DeliveredKeys().union(
            *(value for value in lists if isinstance(value, DeliveredKeys)))
        encoded = itertools.chain.from_iterable(
            value for value in lists if not isinstance(value, DeliveredKeys))
        pairs = without_repeats(in_order(encoded, self._spill_size), self._counts)
        if delivered:
            pairs = not_delivered(pairs, delivered, self._counts)
        requests = (request for _, request in pairs)
        # Keyed by the contact's digest when joined with delivered keys.
        if not isinstance(contact, str):
            contact = None
        for sequence in in_parts(contact, requests, self._part_size):
            self._counts['order/requests'] += len(sequence.requests)
            yield phase, sequence

    def finish_bundle(self):
        self._counts.flush()


class OrderRequests(beam.PTransform):
    """((phase, contact), [encoded request, ...]) -> {phase: PCollection of
    ContactSequence}, each contact's requests in event-time order, each once.
    Counts `order/requests` and `order/duplicates`.

    `delivered` (optional): a PCollection of ((phase, contact digest),
    DeliveredKeys) (transforms/sync_state.py, DeliveredEvents): those
    requests are dropped (counted `state/events_already_sent`)."""

    def __init__(self, part_size: int = PART_SIZE, spill_size: int = SPILL_SIZE,
                 delivered: Optional[beam.PCollection] = None):
        super().__init__()
        self._part_size = part_size
        self._spill_size = spill_size
        self._delivered = delivered

    def expand(self, keyed_requests):
        if self._delivered is not None:
            keyed_requests = (
                keyed_requests
                | 'KeyByContactDigest' >> beam.Map(
                    lambda keyed: ((keyed[0][0], contact_digest(keyed[0][1])), keyed[1])),
                self._delivered) | 'WithDeliveredKeys' >> beam.Flatten()
        ordered = (
            keyed_requests
            | 'GroupByContact' >> beam.GroupByKey()
            | 'SortAndDropRepeats' >> beam.ParDo(
                _OrderContactRequests(self._part_size, self._spill_size)))
        by_phase = ordered | 'ByPhase' >> beam.Partition(
            lambda phase_sequence, _: PHASES.index(phase_sequence[0]), len(PHASES))
        return {phase: by_phase[i] | f'Phase{phase}' >> beam.Values()
                for i, phase in enumerate(PHASES)}
