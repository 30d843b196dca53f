"""The writer DoFn of WriteToLoops: one shard's sequences -> calls to Loops.

`WriteShard` sends a shard's contact sequences with a client of its own
(transforms/delivery/in_flight.py keeps several contacts in flight, each contact's
requests in order, a contact's parts one after another), counts every
outcome, emits a failure record for each request that failed for good and
hands every final outcome to the recorder hook. The stream's writer
(transforms/delivery/contact_wait.py) is this DoFn with state of its own.

The recorder hook: `WriteToLoops(..., recorder=...)` takes an optional
picklable object that sees every final outcome, for recording what was
delivered while the job runs. Its interface (`DeliveryRecorder`):
  open()                    at the start of each bundle
  record(request, outcome)  after each final outcome (refused parts too), on
                            the thread that consumes outcomes (never concurrently)
  maybe_flush()             after each record(), and at least every
                            TICK_SECONDS while the writer waits: the
                            recorder decides whether to flush now
  flush()                   at the end of each bundle, before close()
  close()                   at the end of each bundle (or at teardown, when
                            a bundle failed before its end)
"""
from typing import Callable, Iterable, Iterator, Optional, Protocol, runtime_checkable

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.core.metrics import NAMESPACE, CounterFamily
from transforms.core.records import ContactSequence, LoopsRequest, failure_record
from transforms.delivery.in_flight import (Delivered, DeliveryProgress, always,
                                           deliver_sequences, in_flight_for, steady_pace)
from transforms.loops.client import LoopsClient
from transforms.loops.connection import LoopsConnection
from transforms.loops.retry import Outcome, is_permanent_reason

FAILED = 'failed'
# Counted (deliver/not_sent) for the requests a stop of the job left unsent.
NOT_SENT = 'not_sent'


@runtime_checkable
class DeliveryRecorder(Protocol):
    """What WriteToLoops calls on its `recorder` (see the module docstring)."""

    def open(self) -> None: ...

    def record(self, request: LoopsRequest, outcome: Outcome) -> None: ...

    def maybe_flush(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


FALLBACK_NOTE = (' (sent again with its fallback email: Loops had no contact of its userId, '
                 '"Contact not found")')


def delivery_failure(delivered: Delivered) -> dict:
    """The failure record (stage `deliver`) of a request that failed for
    good. Of an event sent again with its fallback email, the record holds
    that re-send when Loops may have applied it (no answer, a stop): a
    replay sends it again under its key, answered 409 if so; else the event
    as first sent, which a replay sends as the writer did."""
    request, outcome = delivered.request, delivered.outcome
    message = outcome.message or outcome.reason
    if delivered.fallback_sent is not None:
        message += FALLBACK_NOTE
        if not is_permanent_reason(outcome.reason):
            request = delivered.fallback_sent
    return failure_record(
        'deliver', outcome.reason, message, request=request,
        http_status=outcome.http_status, response_body=outcome.response_body,
        attempts=outcome.attempts, source=request.source)


class _Recording:
    """The writer's side of the recorder hook; does nothing without a recorder."""

    def __init__(self, recorder: Optional[DeliveryRecorder]):
        self._recorder = recorder
        self._open = False

    def open(self) -> None:
        if self._recorder is not None and not self._open:
            self._recorder.open()
            self._open = True

    def record(self, delivered: Delivered) -> None:
        if self._recorder is not None:
            self._recorder.record(delivered.request, delivered.outcome)
            self._recorder.maybe_flush()

    def tick(self) -> None:
        if self._recorder is not None:
            self._recorder.maybe_flush()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._recorder.flush()
            self._recorder.close()


class WriteShard(beam.DoFn):
    """(shard, contact sequences) -> (shard, requests sent) once the shard is
    written; failure records tagged FAILED."""

    def __init__(self, connection: LoopsConnection, label: str,
                 client_factory: Optional[Callable[[], LoopsClient]] = None,
                 recorder: Optional[DeliveryRecorder] = None):
        self._connection = connection
        self._label = label
        self._client_factory = client_factory or connection.client
        self._recorder = recorder

    def setup(self):
        steady_pace()
        self._client = self._client_factory()
        self._in_flight = (self._connection.max_in_flight
                           or in_flight_for(self._connection.shard_rate))
        self._counters = CounterFamily('deliver/')
        self._failed_by_reason = CounterFamily('deliver/failed_')
        self._throttled_ms = Metrics.counter(NAMESPACE, 'deliver/throttled_ms')
        self._throttled_reported_ms = 0
        self._recording = _Recording(self._recorder)

    def start_bundle(self):
        self._recording.open()

    def finish_bundle(self):
        self._recording.close()

    def teardown(self):
        recording = getattr(self, '_recording', None)
        if recording is not None:
            recording.close()
        client = getattr(self, '_client', None)
        if client is not None:
            client.close()

    def process(self, keyed):
        shard, sequences = keyed
        sent = 0
        for delivered in self._deliver(shard, sequences):
            sent += 1
            yield from self._finish(delivered)
        yield shard, sent

    def _deliver(self, shard, sequences: Iterable[ContactSequence],
                 fall_back: Callable[[LoopsRequest], bool] = always) -> Iterator[Delivered]:
        """Sends a shard's sequences, part by part; one Delivered per request
        sent (`fall_back` as in deliver_sequences). What a stop of the job
        leaves unsent is counted (`deliver/not_sent`)."""
        # A GroupByKey result can be iterated again on every runner: one
        # pass to count (a total for the progress line) and find the parts,
        # then one pass per part.
        total, parts = 0, set()
        for sequence in sequences:
            total += len(sequence.requests)
            parts.add(sequence.part)
        progress = DeliveryProgress(total, self._connection.shard_rate,
                                    interval=self._connection.progress_interval,
                                    label=f'{self._label} shard {shard}:')

        def tick():
            self._recording.tick()
            progress.tick()

        finished = 0
        for part in sorted(parts):
            in_part = (sequence for sequence in sequences if sequence.part == part)
            for delivered in self._send(in_part, tick, fall_back):
                finished += 1
                progress.record(delivered.outcome)
                yield delivered
        if total > finished:
            self._counters.inc(NOT_SENT, total - finished)
        progress.finish(not_sent=total - finished)

    def _send(self, sequences: Iterable[ContactSequence],
              tick: Optional[Callable[[], None]] = None,
              fall_back: Callable[[LoopsRequest], bool] = always) -> Iterator[Delivered]:
        """deliver_sequences with this writer's client; `fall_back` as there."""
        return deliver_sequences(self._client, sequences, self._in_flight,
                                 tick=tick or self._recording.tick, fall_back=fall_back)

    def _finish(self, delivered: Delivered):
        """Count, record and (if it failed) emit the failure record of one final result."""
        for part in delivered.refused:
            self._counters.inc('refused_parts')
            self._recording.record(part)
            yield beam.pvalue.TaggedOutput(FAILED, delivery_failure(part))
        outcome = delivered.outcome
        self._count_attempts(outcome)
        if delivered.fallback_sent is not None:
            self._counters.inc('sent_with_fallback_email')
        self._counters.inc(outcome.status)
        self._recording.record(delivered)
        if outcome.status == 'failed':
            self._failed_by_reason.inc(outcome.reason)
            yield beam.pvalue.TaggedOutput(FAILED, delivery_failure(delivered))

    def _count_attempts(self, outcome: Outcome) -> None:
        """Retries, 429s and throttled time of one request's attempts."""
        self._counters.inc('retries', max(0, outcome.attempts - 1))
        self._counters.inc('rate_limited', outcome.rate_limited)
        total_ms = int(self._client.throttled_seconds * 1000)
        if total_ms > self._throttled_reported_ms:
            self._throttled_ms.inc(total_ms - self._throttled_reported_ms)
            self._throttled_reported_ms = total_ms
