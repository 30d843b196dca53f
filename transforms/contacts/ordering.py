"""A contact's event sends in event-time order, each message once, in bounded memory.

Requests that don't merge (event sends) are grouped by (phase, contact) and
sorted by (stamp, idempotency key). A message comes more than once in two
ways, and each copy after the first is dropped, counted `order/duplicates`:
  - a repeated line (a replay, a file read twice) has its event's stamp and
    key: it lands next to its original, and a request equal to the one
    before it is dropped without remembering anything;
  - a Segment library's retry of a batch that got no answer, or a mobile
    queue's resend days later, repeats the messageId (so the Idempotency-Key)
    with a later receivedAt, and so a timestamp that may differ too: of the
    copies of one key, the one received first is kept, where its own stamp
    puts it. Both copies carry the same userId, so they meet in the
    contact's group.
To find the later copies, the contact's sort keys are also read in
`copy_order` (key, then received time), where the copies of a message are
neighbours: only the later copies are remembered, never every key seen.

A contact's requests reach the grouping as (sort key, encoded request)
pairs, in lists, or, for a contact with many (a bot, a load test, a
server-side "system" userId), as `SortedRun`s: files of pairs already in
order, with their sort keys in copy_order beside them (KEYS_SUFFIX), written
where every worker can read them (the job's temp location), so the shuffle
carries a reference instead of the requests. The ordering merges the runs
and the pairs (spilling to local temporary files past SPILL_SIZE), and the
requests leave in parts of PART_SIZE: part k is a ContactSequence with
`part=k`, which the writer sends only after part k-1. Memory stays bounded
whatever one contact's number of events (it grows only with its later
copies), in the workers and in the runner's shuffle alike.

With a sync state (transforms/state/sync_state.py), `OrderRequests(delivered=...)`
also drops the events whose Idempotency-Key the state says were delivered,
however old: their keys join the contact's group as `DeliveredKeys`; and,
of a contact deleted since, the events from before its deletion: its
tombstone joins the group as `ContactDeleted`. An event the state says Loops
refused (`RefusedKeys`: its key may be spent) is sent under a new key,
derived from its own and when it was refused (`resend_after_refusal`).
"""
import dataclasses
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

from transforms.contacts.merge import count_unsubscribe
from transforms.core.digests import contact_digest, key_digest
from transforms.core.kinds import PHASES
from transforms.core.metrics import BundleCounts
from transforms.core.records import ContactSequence, LoopsRequest, decode_request, derived_key

PART_SIZE = 10_000
SPILL_SIZE = 50_000
# Apart from replay's salts (the failure record's time alone): a state's
# refusal and a failure record of the same answer may carry the same time.
REFUSED_SALT = 'refused-'
RESENT_AFTER_REFUSAL = 'state/refused_events_resent'
# Beside a SortedRun's file, its sort keys in copy_order.
KEYS_SUFFIX = '.keys'


_KEY = operator.itemgetter(0)


def sort_key(request) -> tuple:
    """(event time, receive time, messageId), then the Idempotency-Key: plain
    tuples, which Beam's coders encode natively."""
    return (tuple(request.stamp), request.idempotency_key or '')


def copy_order(key: tuple) -> tuple:
    """The order of sort keys in which the copies of one message (one
    Idempotency-Key) are neighbours, the one received first first."""
    return (key[1], key[0][1], key[0])


def later_copies(keys: Iterable[tuple]) -> set:
    """Sort keys in copy_order -> those of the copies of a message after its
    first (the earliest received). A copy with the first's own sort key is a
    repeated line, which the ordering drops as such; requests without a key
    are never copies of one another."""
    later, first = set(), None
    for key in keys:
        if first is not None and key[1] and key[1] == first[1]:
            if key != first:
                later.add(key)
        else:
            first = key
    return later


def later_copies_among(keys: list) -> set:
    """later_copies of sort keys in any order, all in memory."""
    if len({key[1] for key in keys}) == len(keys):   # most contacts: no message twice
        return set()
    return later_copies(sorted(keys, key=copy_order))


class SortedRun(NamedTuple):
    """A file of one contact's (sort key, encoded request) pairs in sort-key
    order; its sort keys in copy_order are in `path` + KEYS_SUFFIX."""
    path: str
    count: int


def write_run(directory: str, pairs: list) -> SortedRun:
    """Sorts (sort key, encoded request) `pairs` and writes them, and their
    sort keys in copy_order, to new files under `directory` (any Beam file
    system)."""
    pairs.sort(key=_KEY)
    path = FileSystems.join(directory, f'run-{uuid.uuid4().hex}')
    with FileSystems.create(path) as out:
        _dump_all(pairs, out)
    with FileSystems.create(path + KEYS_SUFFIX) as out:
        _dump_all(sorted(map(_KEY, pairs), key=copy_order), out)
    return SortedRun(path, len(pairs))


def remove_runs(directory: str) -> None:
    """Deletes the SortedRuns under `directory` (after the job that read them)."""
    found = FileSystems.match([FileSystems.join(directory, 'run-*')])[0].metadata_list
    if found:
        FileSystems.delete([metadata.path for metadata in found])
    if FileSystems.exists(directory):
        FileSystems.delete([directory])


def _dump_all(items: Iterable, out) -> None:
    for item in items:
        pickle.dump(item, out, pickle.HIGHEST_PROTOCOL)


def _read_items(readable) -> Iterator:
    while True:
        try:
            yield pickle.load(readable)
        except EOFError:
            return


def _read_file(path: str) -> Iterator:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        yield from _read_items(f)


def read_run(run: SortedRun) -> Iterator[tuple]:
    """The pairs of a SortedRun, in order."""
    return _read_file(run.path)


def read_run_keys(run: SortedRun) -> Iterator[tuple]:
    """The sort keys of a SortedRun, in copy_order."""
    return _read_file(run.path + KEYS_SUFFIX)


def in_order(values: Iterable, spill_size: int = SPILL_SIZE) -> tuple:
    """(sort key, encoded request) pairs and SortedRuns -> (the pairs as
    (sort key, request) in sort-key order, the sort keys of later copies
    (`later_copies`)); at most `spill_size` pairs are held in memory. The
    later copies are found before the first pair is read."""
    runs, key_runs, buffer = [], [], []
    for value in values:
        if type(value) is SortedRun:
            runs.append(read_run(value))
            key_runs.append(read_run_keys(value))
            continue
        buffer.append(value)
        if len(buffer) >= spill_size:
            pairs, keys = _spill(buffer)
            runs.append(pairs)
            key_runs.append(keys)
            buffer = []
    keys = [pair[0] for pair in buffer]
    if key_runs:
        keys.sort(key=copy_order)
        later = later_copies(heapq.merge(keys, *key_runs, key=copy_order))
    else:
        later = later_copies_among(keys)
    buffer.sort(key=_KEY)
    if runs:
        buffer = heapq.merge(buffer, *runs, key=_KEY)
    return ((key, decode_request(encoded)) for key, encoded in buffer), later


def _spill(buffer: list) -> tuple:
    """Sorts `buffer` into a local temporary file, and its sort keys in
    copy_order into another (each removed once read); -> (its pairs in
    order, its keys in copy_order)."""
    buffer.sort(key=_KEY)
    return (_local_run(buffer), _local_run(sorted(map(_KEY, buffer), key=copy_order)))


def _local_run(items: list) -> Iterator:
    run = tempfile.TemporaryFile()
    _dump_all(items, run)
    run.seek(0)
    return _read_local(run)


def _read_local(run) -> Iterator:
    with run:
        yield from _read_items(run)


def without_repeats(ordered: Iterable[tuple], later: set, counts) -> Iterator[tuple]:
    """The (sort key, request) pairs of `ordered`, each sort key once and
    none of the `later` copies (in_order gives both); what is dropped is
    counted as `order/duplicates`."""
    previous = None
    for pair in ordered:
        key = pair[0]
        if key == previous or (later and key in later):
            counts['order/duplicates'] += 1
            continue
        previous = key
        yield pair


class DeliveredKeys(frozenset):
    """Digests (state_facts.key_digest) of a contact's Idempotency-Keys that
    the sync state says were delivered."""


class RefusedKeys(frozenset):
    """(key digest, refused epoch ms) pairs of a contact's events that the
    sync state says Loops refused."""


def latest_refusals(refused: Iterable[frozenset]) -> dict:
    """RefusedKeys of one contact -> key digest: its latest refusal (ms)."""
    latest = {}
    for pairs in refused:
        for digest, refused_ms in pairs:
            if refused_ms > latest.get(digest, -1):
                latest[digest] = refused_ms
    return latest


def resend_after_refusal(request: LoopsRequest, refused_ms: int) -> LoopsRequest:
    """An event Loops refused at `refused_ms`, as it goes again: under
    derived_key(its key, 'refused-<ms>'), a key Loops never saw (the same
    for the same refusal, so a rerun after a crash repeats it and gets 409,
    never a second event), its own key kept as `own_key`."""
    key = request.idempotency_key
    new_key = derived_key(key, f'{REFUSED_SALT}{refused_ms}')
    return dataclasses.replace(request, headers=request.spec.headers(new_key), own_key=key)


def after_refusals(ordered: Iterable[tuple], refused: dict, counts) -> Iterator[tuple]:
    """The (sort key, request) pairs, those whose key digest is in `refused`
    (digest -> refused ms) sent under a new key (resend_after_refusal),
    counted as `state/refused_events_resent` (a request None, which a plain
    loop keeps when it only counts, stays None)."""
    for order, request in ordered:
        key = order[1]
        refused_ms = refused.get(key_digest(key)) if key else None
        if refused_ms is not None:
            counts[RESENT_AFTER_REFUSAL] += 1
            if request is not None:
                request = resend_after_refusal(request, refused_ms)
        yield order, request


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
        refused = latest_refusals(value for value in lists if isinstance(value, RefusedKeys))
        deleted = max((value.stamp for value in lists if isinstance(value, ContactDeleted)),
                      default=None)
        held = itertools.chain.from_iterable(
            value for value in lists
            if not isinstance(value, (DeliveredKeys, RefusedKeys, ContactDeleted)))
        pairs = without_repeats(*in_order(held, self._spill_size), self._counts)
        if delivered:
            pairs = not_delivered(pairs, delivered, self._counts)
        if deleted is not None:
            pairs = after_deletion(pairs, deleted, self._counts)
        if refused:
            pairs = after_refusals(pairs, refused, self._counts)
        requests = (request for _, request in pairs)
        # Keyed by the contact's digest when joined with delivered keys.
        if not isinstance(contact, str):
            contact = None
        for sequence in in_parts(contact, requests, self._part_size):
            self._counts['order/requests'] += len(sequence.requests)
            for request in sequence.requests:
                count_unsubscribe(request.body, self._counts)
            yield phase, sequence

    def finish_bundle(self):
        self._counts.flush()


class OrderRequests(beam.PTransform):
    """((phase, contact), [(sort key, encoded request) or SortedRun, ...]) ->
    {phase: PCollection of ContactSequence}, each contact's requests in
    event-time order, each once.
    Counts `order/requests`, `order/duplicates` and the opt-outs among them
    (`contacts/unsubscribes`: an event's contact fields can carry one).

    `delivered` (optional): a PCollection of ((phase, contact digest),
    DeliveredKeys, RefusedKeys or ContactDeleted) (transforms/state/sync_state.py,
    DeliveredEvents): those requests, and a deleted contact's requests from
    before its deletion, are dropped (counted `state/events_already_sent`,
    `state/events_before_deletion`); refused ones are sent under a new key
    (`state/refused_events_resent`)."""

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
