"""Dropping repeated Segment messages in a stream, for a bounded time.

Pub/Sub delivers at least once and Segment itself sends duplicates. A batch
backfill drops them inside each contact's group (transforms/contacts/ordering.py); a
stream cannot wait for a whole group, so it remembers each request of a
messageId (`repeat_key`: a call the mapping's routes map several times gives
several requests) for `ttl_seconds` of processing time in keyed state and
drops repeats seen in that time. Behind it, the stream's per-contact state never sends a
property again at the same stamp (transforms/contacts/stream_state.py); an
event send's later copy is dropped by the sync state, which records every
event delivered (--state, transforms/state/delivered_events.py), and else
Loops refuses its Idempotency-Key within 24 hours.
"""
import time
from typing import Callable, Optional

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.typehints import Any, Tuple
from apache_beam.utils.timestamp import Timestamp

from transforms.core.metrics import NAMESPACE


def message_id_of(request) -> str:
    """The Segment messageId a request came from ('' when the event had none)."""
    return request.stamp.message_id


def repeat_key(request) -> str:
    """What a request is known by among the repeats of its message: the
    messageId, and what sets it apart from the other requests of the same
    call (its kind, its contact and its Idempotency-Key)."""
    return '\x1f'.join((request.stamp.message_id, request.kind, request.contact,
                        request.idempotency_key or ''))


class _DropRepeats(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec('seen', BooleanCoder())
    FORGET = TimerSpec('forget', TimeDomain.REAL_TIME)

    def __init__(self, ttl_seconds: float, clock: Callable[[], float]):
        self._ttl_seconds = ttl_seconds
        self._clock = clock

    def setup(self):
        self._duplicates = Metrics.counter(NAMESPACE, 'dedupe/duplicates')

    def process(self, keyed, seen=beam.DoFn.StateParam(SEEN),
                forget=beam.DoFn.TimerParam(FORGET)):
        _, request = keyed
        if seen.read():
            self._duplicates.inc()
            return
        seen.write(True)
        forget.set(Timestamp.of(self._clock() + self._ttl_seconds))
        yield request

    @on_timer(FORGET)
    def forget_message(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class DropRepeatedMessages(beam.PTransform):
    """LoopsRequest -> LoopsRequest, without repeats of a message's request
    seen in the last `ttl_seconds` (processing time; `clock`, in seconds, is
    for tests).
    Requests of events without a messageId pass through. Repeats are counted
    (`dedupe/duplicates`), not failures."""

    def __init__(self, ttl_seconds: float, clock: Optional[Callable[[], float]] = None):
        super().__init__()
        if not ttl_seconds >= 0:
            raise ValueError(f'ttl_seconds must not be negative, got {ttl_seconds!r}')
        self._ttl_seconds = ttl_seconds
        self._clock = clock or time.time

    def expand(self, requests):
        with_id = requests | 'HasMessageId' >> beam.Partition(
            lambda request, _: 0 if message_id_of(request) else 1, 2)
        deduplicated = (
            with_id[0]
            | 'KeyByMessageId' >> beam.Map(lambda request: (repeat_key(request), request))
            .with_output_types(Tuple[str, Any])
            | 'DropRepeats' >> beam.ParDo(_DropRepeats(self._ttl_seconds, self._clock)))
        return (deduplicated, with_id[1]) | 'Rejoin' >> beam.Flatten()
