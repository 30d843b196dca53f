"""The stream's look-up of event sends in the sync state: a late copy of a
delivered message is found by its key in its day's facts, read once per
worker and listed again after the refresh interval."""
import datetime
import os
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.contacts.ordering import resend_after_refusal
from transforms.core.records import Stamp, event_send, idempotency_key_for
from transforms.loops.retry import Outcome
from transforms.state import delivered_events
from transforms.state.delivered_events import (DAY_EDGE_MS, DeliveredEventFacts,
                                               DropDeliveredEvents, days_of)
from transforms.state.recorder import StateRecorder

DELIVERED = Outcome('delivered', 200, '{}', 1, 0, None, None)
REFUSED = Outcome('failed', 400, '{"message": "Invalid event name"}', 1, 0, 'http_400',
                  'Invalid event name')
NOV_4 = int(datetime.datetime(2026, 11, 4, tzinfo=datetime.timezone.utc).timestamp() * 1000)
HOUR_MS = 3600 * 1000


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def send(user, message_id, event_ms, received_ms=None):
    return event_send({'eventName': 'Signed Up', 'userId': user}, f'user:{user}',
                      Stamp(event_ms, received_ms or event_ms, message_id), message_id,
                      idempotency_key_for(message_id))


def record(prefix, *requests, outcome=DELIVERED):
    """What a stream's writers record for `requests` ending with `outcome`: one log file."""
    recorder = StateRecorder(prefix, 'run')
    recorder.open()
    for request in requests:
        recorder.record(request, outcome)
    recorder.close()


@pytest.mark.parametrize('event_ms, days', [
    (NOV_4 + 12 * HOUR_MS, ('2026-11-04',)),
    (NOV_4 + 5 * 60 * 1000, ('2026-11-04', '2026-11-03')),
    (NOV_4 - 5 * 60 * 1000, ('2026-11-03', '2026-11-04')),
    (NOV_4 + DAY_EDGE_MS, ('2026-11-04',)),
    (0, ('1970-01-01',)),
])
def test_an_event_is_looked_for_in_its_day_and_near_midnight_the_next(event_ms, days):
    assert days_of(event_ms) == days


def test_a_later_copy_of_a_delivered_event_is_found_and_a_new_event_is_not(tmp_path):
    prefix = str(tmp_path / 'state')
    original = send('u1', 'm1', NOV_4 + 10 * HOUR_MS)
    record(prefix, original)
    facts = DeliveredEventFacts(prefix, refresh_seconds=30)

    # Received two days later, its timestamp 40 ms off: the same key.
    assert facts.delivered(send('u1', 'm1', NOV_4 + 10 * HOUR_MS + 40, NOV_4 + 58 * HOUR_MS))
    assert not facts.delivered(send('u1', 'm2', NOV_4 + 10 * HOUR_MS))
    # The same messageId on another contact is not that delivery.
    assert not facts.delivered(send('u2', 'm1', NOV_4 + 10 * HOUR_MS))


def test_a_copy_across_midnight_from_its_original_is_found(tmp_path):
    prefix = str(tmp_path / 'state')
    record(prefix, send('u1', 'm1', NOV_4 - 20))
    facts = DeliveredEventFacts(prefix, refresh_seconds=30)
    assert facts.delivered(send('u1', 'm1', NOV_4 + 20))


def test_what_was_delivered_since_is_found_once_the_refresh_interval_passed(tmp_path):
    prefix = str(tmp_path / 'state')
    clock = FakeClock()
    facts = DeliveredEventFacts(prefix, refresh_seconds=30, clock=clock)
    event = send('u1', 'm1', NOV_4 + 10 * HOUR_MS)
    assert not facts.delivered(event)          # the day is read: nothing there yet

    record(prefix, event)
    clock.now = 29
    assert not facts.delivered(event)          # the day's listing is fresh enough
    clock.now = 30
    assert facts.delivered(event)              # listed again: the new file is read


def test_only_the_most_recently_used_days_are_kept(tmp_path):
    prefix = str(tmp_path / 'state')
    clock = FakeClock()
    facts = DeliveredEventFacts(prefix, refresh_seconds=1000, clock=clock, max_days=2)
    events = [send('u1', f'm{day}', NOV_4 + day * 24 * HOUR_MS + 10 * HOUR_MS)
              for day in range(3)]
    for event in events:
        assert not facts.delivered(event)
    record(prefix, *events)
    # Days 1 and 2 are kept, listed before their facts were written and
    # fresh; day 0 was forgotten, so it is read again (and day 1 forgotten).
    assert [facts.delivered(events[day]) for day in (0, 2, 1)] == [True, False, True]


def test_a_file_deleted_after_the_listing_is_skipped(tmp_path, monkeypatch):
    prefix = str(tmp_path / 'state')
    event = send('u1', 'm1', NOV_4 + 10 * HOUR_MS)
    record(prefix, event)
    (log,) = [os.path.join(root, name) for root, _, names in os.walk(prefix)
              for name in names if '/events/' in root]
    listed = delivered_events.day_files(prefix, '2026-11-04')
    os.remove(log)
    monkeypatch.setattr(delivered_events, 'day_files', lambda *_: listed)
    assert not DeliveredEventFacts(prefix, refresh_seconds=30).delivered(event)


def test_a_copy_of_an_event_loops_refused_goes_again_under_a_new_key(tmp_path):
    prefix = str(tmp_path / 'state')
    refused, delivered = send('u1', 'm1', NOV_4 + HOUR_MS), send('u1', 'm2', NOV_4 + HOUR_MS)
    record(prefix, refused, outcome=REFUSED)
    record(prefix, delivered)
    new = send('u1', 'm3', NOV_4 + HOUR_MS)
    refused_ms = DeliveredEventFacts(prefix, refresh_seconds=30).refused_at(refused)
    assert abs(refused_ms - time.time() * 1000) < 60_000
    assert DeliveredEventFacts(prefix, refresh_seconds=30).refused_at(delivered) is None

    with TestPipeline() as p:
        out = (p | beam.Create([refused, delivered, new])
               | DropDeliveredEvents(prefix, refresh_seconds=30)
               | beam.Map(lambda r: (r.source, r.idempotency_key, r.own_key)))
        assert_that(out, equal_to([
            ('m1', resend_after_refusal(refused, refused_ms).idempotency_key,
             refused.idempotency_key),
            ('m3', new.idempotency_key, None)]))
    counters = p.result.metrics().query()['counters']
    counts = {c.key.metric.name: c.committed for c in counters}
    assert counts['state/refused_events_resent'] == 1
    assert counts['state/events_already_sent'] == 1

