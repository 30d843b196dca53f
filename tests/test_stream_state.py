"""The stream's per-contact memory: the latest value of every property wins,
whatever the order in which a contact's calls arrive."""
import collections

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.summary import pipeline_counters
from tests.direct_runner_counters import count_every_bundle
from transforms.contacts.stream_state import NO_MEMORY, KeepLatestPerContact, admit, admit_upsert
from transforms.core.records import Stamp, contact_upsert, event_send

A = 'user:a'


def upsert(at: int, contact: str = A, **body):
    identity = {'email': contact[len('email:'):]} if contact.startswith('email:') else {
        'userId': contact[len('user:'):]}
    return contact_upsert({**identity, **body}, contact, Stamp(at, 0, f'u{at}'), f'u{at}')


def event(message_id: str, contact: str = A, **body):
    return event_send({'eventName': 'Signed Up', 'userId': contact[len('user:'):], **body},
                      contact, Stamp(1, 0, message_id), message_id, f'segment-{message_id}')


def admitted(*requests, resubscribe=True):
    """Requests of one contact in order of arrival -> (what goes on, counts)."""
    memory, counts, sent = NO_MEMORY, collections.Counter(), []
    for request in requests:
        request, memory = admit(request, memory, resubscribe, counts)
        sent.append(request)
    return sent, counts


def test_an_older_upsert_sends_only_what_is_newer_than_what_was_sent():
    newer = upsert(20, plan='pro', email='new@example.com', mailingLists={'news': False})
    older = upsert(10, plan='free', email='old@example.com', nickname='Al',
                   mailingLists={'news': True, 'product': True})
    (first, second), counts = admitted(newer, older)
    assert first.body == newer.body
    assert second.body == {'userId': 'a', 'nickname': 'Al', 'mailingLists': {'product': True}}
    assert (second.stamp, second.source, second.headers) == (older.stamp, 'u10', older.headers)
    assert counts['stream/stale_dropped'] == 3   # plan, email, list news


def test_an_upsert_with_nothing_newer_is_dropped_whole_and_a_repeat_too():
    newer = upsert(20, plan='pro')
    sent, counts = admitted(newer, upsert(10, plan='free'), newer)
    assert sent == [newer, None, None]
    assert (counts['stream/stale_requests'], counts['stream/stale_dropped']) == (2, 2)


def test_an_early_arrival_is_sent_whole_and_the_later_call_wins_property_by_property():
    (first, second), counts = admitted(upsert(10, plan='free', city='Oslo'),
                                       upsert(20, plan='pro'))
    assert first.body == {'userId': 'a', 'plan': 'free', 'city': 'Oslo'}
    assert second.body == {'userId': 'a', 'plan': 'pro'}
    assert counts['stream/stale_dropped'] == 0


def test_an_email_only_contact_is_named_by_its_email_even_when_that_is_old():
    contact = 'email:lead@example.com'
    (_, second), _ = admitted(upsert(20, contact, plan='pro'),
                              upsert(10, contact, plan='free', city='Oslo'))
    assert second.body == {'email': 'lead@example.com', 'city': 'Oslo'}


def test_an_event_by_user_id_gets_the_contacts_latest_email_as_its_fallback_only():
    sent, counts = admitted(event('m0'), upsert(20, email='new@example.com'),
                            upsert(10, email='old@example.com', plan='free'),
                            event('m1'), event('m2', email='own@example.com'))
    assert 'email' not in sent[0].body and sent[0].fallback_email is None
    # Never in the body, where it would set the contact's email; its own
    # email (older, or someone else's) gives way to the latest one.
    assert [(r.body, r.fallback_email) for r in sent[3:]] == [
        ({'eventName': 'Signed Up', 'userId': 'a'}, 'new@example.com')] * 2
    assert sent[3].idempotency_key == 'segment-m1'
    assert counts['stream/events_given_email'] == 2


@pytest.mark.parametrize('resubscribe, subscribed_sent', [(True, True), (False, None)])
def test_a_resubscribe_is_held_back_only_when_asked(resubscribe, subscribed_sent):
    sent, counts = admitted(upsert(10, subscribed=True, plan='pro'), upsert(20, subscribed=True),
                            resubscribe=resubscribe)
    assert sent[0].body.get('subscribed') is subscribed_sent
    assert (sent[1] is None) is (not resubscribe)
    assert counts['held_back/resubscribes'] == (0 if resubscribe else 2)


def test_an_unsubscribe_is_always_sent():
    (request,), counts = admitted(upsert(10, subscribed=False), resubscribe=False)
    assert request.body['subscribed'] is False and counts['contacts/unsubscribes'] == 1


def test_an_unsubscribe_sent_with_an_event_is_counted_too():
    (request,), counts = admitted(event('m1', subscribed=False), resubscribe=False)
    assert request.body['subscribed'] is False and counts['contacts/unsubscribes'] == 1


def test_the_memory_keeps_stamps_and_the_latest_email():
    counts = collections.Counter()
    _, memory = admit_upsert(upsert(20, email='new@example.com', plan='pro'), NO_MEMORY, True,
                             counts)
    _, memory = admit_upsert(upsert(10, email='old@example.com', city='Oslo'), memory, True,
                             counts)
    assert memory.email == 'new@example.com'
    assert memory.stamps == {'userId': (20, 0, 'u20'), 'email': (20, 0, 'u20'),
                             'plan': (20, 0, 'u20'), 'city': (10, 0, 'u10')}


def bodies(requests):
    return requests | beam.Map(lambda request: (request.contact, request.body))


def test_in_a_pipeline_late_arrivals_are_dropped_until_the_contact_is_forgotten(
        monkeypatch):
    count_every_bundle(monkeypatch)
    # The forget timer is set at clock() + TTL; a clock fixed at 0 puts it on
    # TestStream's processing-time axis, which the test moves on.
    arrivals = (TestStream()
                .advance_watermark_to(0)
                .add_elements([upsert(20, plan='pro', email='a@example.com')])
                .advance_processing_time(10)
                .add_elements([upsert(10, plan='free', city='Oslo')])
                .advance_processing_time(10)
                .add_elements([upsert(5, plan='trial')])
                .advance_processing_time(10)
                .add_elements([event('m1')])
                .advance_processing_time(10)
                .add_elements([upsert(1, 'user:b', plan='free')])
                .advance_processing_time(100)   # past the TTL: the memory is gone
                .add_elements([upsert(5, plan='trial')])
                .advance_watermark_to_infinity())
    p = TestPipeline(options=StandardOptions(streaming=True))
    sent = p | arrivals | KeepLatestPerContact(ttl_seconds=60, clock=lambda: 0.0)
    assert_that(bodies(sent), equal_to([
        (A, {'userId': 'a', 'plan': 'pro', 'email': 'a@example.com'}),
        (A, {'userId': 'a', 'city': 'Oslo'}),
        (A, {'eventName': 'Signed Up', 'userId': 'a'}),
        ('user:b', {'userId': 'b', 'plan': 'free'}),
        (A, {'userId': 'a', 'plan': 'trial'}),
    ]))
    result = p.run()
    result.wait_until_finish()
    counters = pipeline_counters(result)
    assert counters['stream/stale_dropped'] == 2          # plan at 10, plan at 5
    assert counters['stream/stale_requests'] == 1         # the upsert at 5
    assert counters['stream/events_given_email'] == 1
    # a after the TTL, b, and a again when the stream ends (timers fire then)
    assert counters['stream/contacts_forgotten'] == 3

