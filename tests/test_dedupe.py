"""DropRepeatedMessages: a message's request seen within the dedupe time is dropped."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.summary import pipeline_counters
from tests.direct_runner_counters import count_every_bundle
from transforms.core.records import Stamp, contact_upsert, event_send
from transforms.segment.dedupe import DropRepeatedMessages, message_id_of, repeat_key


def upsert(message_id: str, plan: str):
    return contact_upsert({'userId': 'a', 'plan': plan}, 'user:a', Stamp(1, 0, message_id),
                          message_id or 'pubsub-1')


def test_the_message_id_is_the_stamps():
    assert message_id_of(upsert('m1', 'pro')) == 'm1'
    assert message_id_of(upsert('', 'pro')) == ''


def test_repeats_within_the_time_are_dropped_later_ones_pass(monkeypatch):
    count_every_bundle(monkeypatch)
    # Forget timers are set at clock() + TTL on TestStream's processing-time
    # axis (a clock fixed at 0), which the test moves on.
    arrivals = (TestStream()
                .advance_watermark_to(0)
                .add_elements([upsert('m1', 'first')])
                .advance_processing_time(5)
                .add_elements([upsert('m1', 'repeat'), upsert('m2', 'other'),
                               upsert('', 'no id'), upsert('', 'no id again')])
                .advance_processing_time(10)          # past the 10 s: m1 is forgotten
                .add_elements([upsert('m1', 'much later')])
                .advance_watermark_to_infinity())
    p = TestPipeline(options=StandardOptions(streaming=True))
    plans = (p | arrivals | DropRepeatedMessages(10, clock=lambda: 0.0)
             | beam.Map(lambda request: request.body['plan']))
    assert_that(plans, equal_to(['first', 'other', 'no id', 'no id again', 'much later']))
    result = p.run()
    result.wait_until_finish()
    assert pipeline_counters(result)['dedupe/duplicates'] == 1


def test_the_requests_of_one_call_mapped_by_several_routes_are_not_repeats_of_each_other(
        monkeypatch):
    count_every_bundle(monkeypatch)
    stamp = Stamp(1, 0, 'm1')
    call = [upsert('m1', 'pro'),
            event_send({'eventName': 'Signed Up', 'userId': 'a'}, 'user:a', stamp, 'm1', 'k-1'),
            event_send({'eventName': 'Trial', 'userId': 'a'}, 'user:a', stamp, 'm1', 'k-2')]
    assert len({repeat_key(request) for request in call}) == 3
    arrivals = (TestStream().advance_watermark_to(0).add_elements(call)
                .advance_processing_time(1).add_elements(call)   # the message again
                .advance_watermark_to_infinity())
    p = TestPipeline(options=StandardOptions(streaming=True))
    passed = (p | arrivals | DropRepeatedMessages(10, clock=lambda: 0.0)
              | beam.Map(lambda request: request.idempotency_key))
    assert_that(passed, equal_to([None, 'k-1', 'k-2']))
    result = p.run()
    result.wait_until_finish()
    assert pipeline_counters(result)['dedupe/duplicates'] == 3


def test_the_time_cannot_be_negative():
    with pytest.raises(ValueError, match='negative'):
        DropRepeatedMessages(-1)
