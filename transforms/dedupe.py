"""Dropping repeated Segment messages in a stream, for a bounded time.

Pub/Sub delivers at least once and Segment itself sends duplicates. A batch
backfill drops them inside each contact's group (transforms.coalesce); a
stream cannot wait for a whole group, so it remembers each messageId for
`ttl_seconds` of processing time in keyed state and drops repeats seen in
that time. Idempotency keys on event sends are the second line of defence
for repeats that arrive later than that.
"""
import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.metrics import NAMESPACE


class _DropRepeats(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec('seen', BooleanCoder())
    FORGET = TimerSpec('forget', TimeDomain.REAL_TIME)

    def __init__(self, ttl_seconds: float):
        self._ttl = Duration(seconds=ttl_seconds)

    def setup(self):
        self._duplicates = Metrics.counter(NAMESPACE, 'dedupe/duplicates')

    def process(self, keyed, seen=beam.DoFn.StateParam(SEEN),
                forget=beam.DoFn.TimerParam(FORGET)):
        _, request = keyed
        if seen.read():
            self._duplicates.inc()
            return
        seen.write(True)
        forget.set(Timestamp.now() + self._ttl)
        yield request

    @on_timer(FORGET)
    def forget_message(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class DropRepeatedMessages(beam.PTransform):
    """LoopsRequest -> LoopsRequest, without repeats of a messageId seen in the
    last `ttl_seconds`. Requests of events without a messageId pass through.
    Repeats are counted (`dedupe/duplicates`), not failures."""

    def __init__(self, ttl_seconds: float):
        super().__init__()
        self._ttl_seconds = ttl_seconds

    def expand(self, requests):
        with_id = requests | 'HasMessageId' >> beam.Partition(
            lambda request, _: 0 if request.order[2] else 1, 2)
        deduplicated = (
            with_id[0]
            | 'KeyByMessageId' >> beam.Map(lambda request: (request.order[2], request))
            | 'DropRepeats' >> beam.ParDo(_DropRepeats(self._ttl_seconds)))
        return (deduplicated, with_id[1]) | 'Rejoin' >> beam.Flatten()
