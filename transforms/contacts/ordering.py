"""A contact's event sends in event-time order, each once, in bounded memory.

Requests that don't merge (event sends) are grouped by (phase, contact) and
sorted by (stamp, idempotency key). A Segment duplicate repeats its event's
payload, so it has the same stamp and key and lands next to its original:
dropping a request equal to the one before it removes every duplicate
without remembering what was seen.

A contact's requests reach the grouping as (sort key, encoded request)
pairs, in lists, or, for a contact with many (a bot, a load test, a
server-side "system" userId), as `SortedRun`s: files of pairs already in
order, written where every worker can read them (the job's temp location),
so the shuffle carries a reference instead of the requests. The ordering
merges the runs and the pairs (spilling to a local temporary file past
SPILL_SIZE), and the requests leave in parts of PART_SIZE: part k is a
ContactSequence with `part=k`, which the writer sends only after part k-1.
Memory stays bounded whatever one contact's number of events, in the
workers and in the runner's shuffle alike.

With a sync state (transforms/state/sync_state.py), `OrderRequests(delivered=...)`
also drops the events whose Idempotency-Key the state says were delivered,
however old: their keys join the contact's group as `DeliveredKeys`; and,
of a contact deleted since, the events from before its deletion: its
tombstone joins the group as `ContactDeleted`.
"""
import heapq
import itertools
import operator
import pickle
import tempfile
import uuid
from typing import Iterable, Iterator, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.digests import contact_digest, key_digest
from transforms.core.kinds import PHASES
from transforms.core.metrics import BundleCounts
from transforms.core.records import ContactSequence, decode_request

PART_SIZE = 10_000
SPILL_SIZE = 50_000


_KEY = operator.itemgetter(0)


def sort_key(request) -> tuple:
    """(event time, receive time, messageId), then the Idempotency-Key: plain
    tuples, which Beam's coders encode natively."""
    return (tuple(request.stamp), request.idempotency_key or '')


class SortedRun(NamedTuple):
    """A file of one contact's (sort key, encoded request) pairs in sort-key order."""
    path: str
    count: int


def write_run(directory: str, pairs: list) -> SortedRun:
    """Sorts (sort key, encoded request) `pairs` and writes them to a new
    file under `directory` (any Beam file system)."""
    pairs.sort(key=_KEY)
    path = FileSystems.join(directory, f'run-{uuid.uuid4().hex}')
    with FileSystems.create(path) as out:
        for pair in pairs:
            pickle.dump(pair, out, pickle.HIGHEST_PROTOCOL)
    return SortedRun(path, len(pairs))


def remove_runs(directory: str) -> None:
    """Deletes the SortedRuns under `directory` (after the job that read them)."""
    found = FileSystems.match([FileSystems.join(directory, 'run-*')])[0].metadata_list
    if found:
        FileSystems.delete([metadata.path for metadata in found])
    if FileSystems.exists(directory):
        FileSystems.delete([directory])


def _read_pairs(readable) -> Iterator[tuple]:
    while True:
        try:
            yield pickle.load(readable)
        except EOFError:
            return


def read_run(run: SortedRun) -> Iterator[tuple]:
    """The pairs of a SortedRun, in order."""
    with FileSystems.open(run.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        yield from _read_pairs(f)


def in_order(values: Iterable, spill_size: int = SPILL_SIZE) -> Iterator[tuple]:
    """(sort key, encoded request) pairs and SortedRuns -> (sort key, request)
    in sort-key order; at most `spill_size` pairs are held in memory."""
    runs, buffer = [], []
    for value in values:
        if type(value) is SortedRun:
            runs.append(read_run(value))
            continue
        buffer.append(value)
        if len(buffer) >= spill_size:
            runs.append(_spill(buffer))
            buffer = []
    buffer.sort(key=_KEY)
    if runs:
        buffer = heapq.merge(buffer, *runs, key=_KEY)
    return ((key, decode_request(encoded)) for key, encoded in buffer)


def _spill(buffer: list) -> Iterator[tuple]:
    """Sorts `buffer` into a local temporary file (removed once read); ->
    its pairs, in order."""
    buffer.sort(key=_KEY)
    run = tempfile.TemporaryFile()
    for pair in buffer:
        pickle.dump(pair, run, pickle.HIGHEST_PROTOCOL)
    run.seek(0)
    return _read_local(run)


def _read_local(run) -> Iterator[tuple]:
    with run:
        yield from _read_pairs(run)


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


class ContactDeleted(NamedTuple):
    """The stamp of a contact's deletion, from the sync state's tombstone."""
    stamp: tuple


def after_deletion(ordered: Iterable[tuple], deleted: tuple, counts) -> Iterator[tuple]:
    """The (sort key, request) pairs stamped after `deleted` (the sort key's
    first part); the others are counted as `state/events_before_deletion`."""
    for pair in ordered:
        if pair[0][0] <= deleted:
            counts['state/events_before_deletion'] += 1
            continue
        yield pair


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
        deleted = max((value.stamp for value in lists if isinstance(value, ContactDeleted)),
                      default=None)
        held = itertools.chain.from_iterable(
            value for value in lists if not isinstance(value, (DeliveredKeys, ContactDeleted)))
        pairs = without_repeats(in_order(held, self._spill_size), self._counts)
        if delivered:
            pairs = not_delivered(pairs, delivered, self._counts)
        if deleted is not None:
            pairs = after_deletion(pairs, deleted, self._counts)
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
    """((phase, contact), [(sort key, encoded request) or SortedRun, ...]) ->
    {phase: PCollection of ContactSequence}, each contact's requests in
    event-time order, each once.
    Counts `order/requests` and `order/duplicates`.

    `delivered` (optional): a PCollection of ((phase, contact digest),
    DeliveredKeys or ContactDeleted) (transforms/state/sync_state.py,
    DeliveredEvents): those requests, and a deleted contact's requests from
    before its deletion, are dropped (counted `state/events_already_sent`,
    `state/events_before_deletion`)."""

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
