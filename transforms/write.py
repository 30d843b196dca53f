"""WriteToLoops: contact sequences -> calls to the Loops API, under its rate limit.

Loops allows `rate_limit` requests per second per team and has no batch
endpoint. Requests are keyed into exactly `write_shards` keys (a stable hash
of the contact), so on any runner at most `write_shards` writers run at once,
each owning rate_limit / write_shards through its own token bucket. Within a
writer, several contacts are sent concurrently (one sequential writer cannot
reach 10/s at Loops' 100-300 ms latency), each contact's requests strictly in
order.
"""
import time
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.coalesce import ContactSequence, arrange_contact_requests
from transforms.credentials import ApiKey
from transforms.delivery import DeliveryProgress, deliver_sequences, in_flight_for
from transforms.loops_client import LoopsClient
from transforms.metrics import NAMESPACE, CounterFamily
from transforms.records import failure_record

FAILED = 'failed'


@dataclass(frozen=True)
class LoopsConnection:
    """Where and how fast to write (picklable; the key stays hidden)."""
    base_url: str
    api_key: ApiKey
    rate_limit: float = 10.0
    write_shards: int = 1
    max_attempts: int = 6
    max_in_flight: Optional[int] = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    progress_interval: float = 10.0

    @property
    def shard_rate(self) -> float:
        return self.rate_limit / self.write_shards

    def client(self, rate: Optional[float] = None) -> LoopsClient:
        return LoopsClient(self.base_url, self.api_key.get(),
                           rate=rate if rate is not None else self.shard_rate,
                           max_attempts=self.max_attempts,
                           connect_timeout=self.connect_timeout,
                           read_timeout=self.read_timeout)

    def check_key(self) -> str:
        """GET /v1/api-key before reading any input: a wrong key fails in seconds."""
        client = self.client()
        try:
            return client.check_key()
        finally:
            client.close()


def shard_of(contact: str, shards: int) -> int:
    """A stable shard for a contact: the same on every worker and every run
    (Python's own hash() is salted per process)."""
    return zlib.crc32(contact.encode('utf-8')) % shards


def arrange_batch(sequences: Iterable[ContactSequence]) -> list:
    """A batch of a stream's requests -> one sequence per contact: its upserts
    merged in event-time order, then its event sends in event-time order (the
    contact exists before an event that names it only by userId)."""
    by_contact = {}
    for sequence in sequences:
        by_contact.setdefault(sequence.contact, []).extend(sequence.requests)
    arranged = []
    for contact, requests in by_contact.items():
        upserts = [r for r in requests if not r.is_event]
        sends = [r for r in requests if r.is_event]
        ordered = (arrange_contact_requests(upserts, coalesce=True).requests
                   + arrange_contact_requests(sends, coalesce=False).requests)
        arranged.append(ContactSequence(contact, tuple(ordered)))
    return arranged


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


class _WriteShard(beam.DoFn):
    """(shard, contact sequences) -> one count per shard; failures tagged."""

    def __init__(self, connection: LoopsConnection, label: str):
        self._connection = connection
        self._label = label

    def setup(self):
        self._client = self._connection.client()
        self._counters = CounterFamily('deliver/')
        self._failed_by_reason = CounterFamily('deliver/failed_')

    def teardown(self):
        client = getattr(self, '_client', None)
        if client is not None:
            client.close()

    def process(self, keyed):
        shard, sequences = keyed
        # A GroupByKey result can be iterated again on every runner: counting
        # first gives the progress line a total and an ETA.
        total = sum(len(s.requests) for s in sequences)
        connection = self._connection
        progress = DeliveryProgress(total, connection.shard_rate,
                                    interval=connection.progress_interval,
                                    label=f'{self._label} shard {shard}:')
        in_flight = connection.max_in_flight or in_flight_for(connection.shard_rate)
        sent = 0
        for request, outcome in deliver_sequences(
                self._client, (s.requests for s in sequences), in_flight, progress):
            sent += 1
            self._counters.inc('retries', outcome.attempts - 1)
            self._counters.inc('rate_limited', outcome.rate_limited)
            self._counters.inc(outcome.status)
            if outcome.status != 'failed':
                continue
            self._failed_by_reason.inc(outcome.reason)
            yield beam.pvalue.TaggedOutput(FAILED, failure_record(
                'deliver', outcome.reason, outcome.message or outcome.reason,
                request=request, http_status=outcome.http_status,
                response_body=outcome.response_body, attempts=outcome.attempts,
                source=request.source))
        progress.finish()
        yield shard, sent


class WriteToLoops(beam.PTransform):
    """ContactSequence -> (per-shard sent counts, failure records).

    Batch (the default): a GroupByKey per shard, so the job stays on Beam's
    fast in-process runner locally. Streaming (`max_buffering_seconds` set):
    GroupIntoBatches per shard, so no request waits longer than that before
    it is sent; each batch is merged per contact in event-time order first.

    Sends every request of every sequence to Loops: 2xx is delivered, 409 on
    our idempotency key already delivered, 400/404/405/413 a permanent failure,
    429/5xx/timeouts/connection errors are retried with backoff up to
    `max_attempts` (then `retries_exhausted`). A 401 stops the job.
    The first output has one (shard, sent) per shard when it is done, so a
    later step can wait for it as a side input.
    """

    def __init__(self, connection: LoopsConnection, label: str = 'requests', *,
                 max_buffering_seconds: Optional[float] = None, batch_size: int = 500,
                 clock=None):
        super().__init__()
        self._connection = connection
        self._label = label
        self._max_buffering_seconds = max_buffering_seconds
        self._batch_size = batch_size
        self._clock = clock

    def expand(self, sequences):
        shards = self._connection.write_shards
        keyed = sequences | 'KeyByShard' >> beam.Map(lambda s: (shard_of(s.contact, shards), s))
        if self._max_buffering_seconds is None:
            grouped = keyed | 'GroupByShard' >> beam.GroupByKey()
        else:
            grouped = keyed | 'BatchPerShard' >> BatchPerShard(
                self._batch_size, self._max_buffering_seconds, self._clock)
        written = grouped | 'SendToLoops' >> beam.ParDo(
            _WriteShard(self._connection, self._label)).with_outputs(FAILED, main='sent')
        return written.sent, written[FAILED]


class WriteContactsThenEvents(beam.PTransform):
    """(contact sequences, event sequences) -> failure records.

    Sends every contact upsert, then, once all of them are done, every event
    send: an event that names its contact only by userId then never fails
    for lack of a contact the same run creates.
    """

    def __init__(self, connection: LoopsConnection, label_prefix: str = ''):
        super().__init__()
        self._connection = connection
        self._label_prefix = label_prefix

    def expand(self, contacts_and_events):
        contacts, events = contacts_and_events
        contacts_done, contact_failures = contacts | 'WriteContacts' >> WriteToLoops(
            self._connection, label=f'{self._label_prefix}contacts')
        events_after_contacts = events | 'WaitForContacts' >> beam.Map(
            lambda sequence, _done: sequence, beam.pvalue.AsList(contacts_done))
        _, event_failures = events_after_contacts | 'WriteEvents' >> WriteToLoops(
            self._connection, label=f'{self._label_prefix}events')
        return (contact_failures, event_failures) | 'DeliveryFailures' >> beam.Flatten()


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
