"""Events that reach Loops before their contact: held by the stream's writer,
sent again under derived keys when the contact arrives or after a backoff,
and a failure record only once the whole wait is over."""
import collections
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.local.sandbox import LoopsSandbox
from pipeline.summary import pipeline_counters
from tests.direct_runner_counters import count_every_bundle
from transforms.core.digests import key_digest
from transforms.core.records import (ContactSequence, Stamp, contact_upsert, derived_key,
                                     event_send)
from transforms.delivery.contact_wait import (ContactWait, HeldEvent, HeldEvents, resend_request,
                                              waited_out, waits_for_contact)
from transforms.delivery.in_flight import FALLBACK_SALT, Delivered
from transforms.delivery.write import WriteToLoops
from transforms.loops.connection import LoopsConnection
from transforms.loops.credentials import ApiKey
from transforms.loops.retry import Outcome
from transforms.state.files import list_state, read_facts
from transforms.state.recorder import StateRecorder

NOT_FOUND = Outcome('failed', 400, '{"success": false, "message": "Contact not found."}', 1, 0,
                    'http_400', 'POST /v1/events/send was rejected by Loops: HTTP 400: '
                    'Contact not found.')


def event(user: str, message_id: str, **email):
    return event_send({'eventName': 'Signed Up', 'userId': user, **email}, f'user:{user}',
                      Stamp(1, 0, message_id), message_id, f'segment-{message_id}')


def upsert(user: str):
    return contact_upsert({'userId': user, 'email': f'{user}@example.com'}, f'user:{user}',
                          Stamp(2, 0, f'u-{user}'), f'u-{user}')


def test_a_held_event_is_tried_after_5_10_20_seconds_the_last_time_at_the_deadline():
    wait = ContactWait(seconds=60, first_backoff=5)
    tries, at, resends = [], 100.0, 0
    due = wait.next_try(100.0, 0, at)
    while due is not None:
        tries.append(due)
        resends += 1
        due = wait.next_try(100.0, resends, due)
    assert tries == [105, 115, 135, 160]


@pytest.mark.parametrize('seconds, first_backoff', [(0, 5), (600, 0), (-1, 5)])
def test_a_wait_needs_positive_times(seconds, first_backoff):
    with pytest.raises(ValueError, match='positive'):
        ContactWait(seconds, first_backoff)


@pytest.mark.parametrize('request_, outcome, waits', [
    (event('a', 'm1'), NOT_FOUND, True),
    # Loops' words in the other shapes its SDKs read: "error" as text, as an object.
    (event('a', 'm1'), NOT_FOUND._replace(
        response_body='{"success": false, "error": "Contact not found."}'), True),
    (event('a', 'm1'), NOT_FOUND._replace(
        response_body='{"success": false, "error": {"message": "Contact not found."}}'), True),
    (upsert('a'), NOT_FOUND, False),
    (event('a', 'm1'), NOT_FOUND._replace(response_body='{"message": "Invalid email."}'), False),
    (event('a', 'm1'), NOT_FOUND._replace(http_status=404, reason='http_404'), False),
    (event('a', 'm1'), Outcome('delivered', 200, None, 1, 0, None, None), False),
])
def test_only_an_event_refused_for_want_of_its_contact_waits(request_, outcome, waits):
    assert waits_for_contact(Delivered(request_, outcome)) is waits


def test_each_resend_has_a_key_of_its_own_the_same_every_time():
    original = event('a', 'm1')
    first = resend_request(HeldEvent(original, 0, 0.0, 5.0))
    second = resend_request(HeldEvent(original, 1, 0.0, 15.0))
    assert first.idempotency_key == derived_key('segment-m1', 'contact-wait-1')
    assert second.idempotency_key == derived_key('segment-m1', 'contact-wait-2')
    assert resend_request(HeldEvent(original, 0, 3.0, 9.0)) == first
    assert (first.body, first.contact, first.stamp) == (original.body, original.contact,
                                                         original.stamp)
    assert original.idempotency_key == 'segment-m1'


def test_an_event_that_waited_out_says_how_long():
    held = HeldEvent(event('a', 'm1'), 3, 100.0, 160.0)
    failed = waited_out(Delivered(resend_request(held), NOT_FOUND), held, 700.0)
    assert failed.outcome.message.startswith(NOT_FOUND.message)
    assert 'waited 10m00s for its contact, sent 5 times' in failed.outcome.message
    assert failed.outcome.reason == 'http_400' and failed.request.idempotency_key != 'segment-m1'


def test_held_events_come_out_by_contact_or_when_due():
    held = HeldEvents()
    for user, message_id, due in (('a', 'm1', 5.0), ('a', 'm2', 20.0), ('b', 'm3', 10.0)):
        held.add(HeldEvent(event(user, message_id), 0, 0.0, due))
    assert held.next_due() == 5.0
    assert [e.request.stamp.message_id for e in held.take_due(10.0)] == ['m1', 'm3']
    assert held.next_due() == 20.0
    assert [e.request.stamp.message_id for e in held.release(['user:a', 'user:c'])] == ['m2']
    assert held.next_due() is None and held.by_contact == {}


B_KEYS = [derived_key('segment-m2', f'contact-wait-{n}') for n in (1, 2, 3, 4)]
C_KEYS = [derived_key('segment-m3', f'contact-wait-{n}') for n in (1, 2, 3, 4)]


def failure_summary(record: dict) -> tuple:
    """A failure record -> (stage, reason, status, key, names Loops' message, the wait)."""
    message = record['message']
    return (record['stage'], record['reason'], record['http_status'],
            json.loads(record['request'])['headers']['Idempotency-Key'],
            'Contact not found.' in message,
            message[message.index('waited'):message.index(';')] if 'waited' in message else '')


# Loops' words in every error body shape the sandbox can answer in
# (pipeline/local/error_shapes.py): the wait must read "Contact not found" in each.
@pytest.mark.parametrize('error_shape', ['documented', 'error', 'nested', 'text'])
def test_in_a_pipeline_an_event_waits_for_its_contact_or_fails_after_the_wait(
        monkeypatch, tmp_path, error_shape):
    count_every_bundle(monkeypatch)
    # a's track arrives first; its identify 16 s later (after two refused
    # re-sends). b's identify never comes, nor c's, but c's track carried an
    # email: its last try goes with it. Timers are set on a clock fixed at
    # 0, TestStream's processing-time axis, which the test moves on.
    arrivals = (TestStream()
                .advance_watermark_to(0)
                .add_elements([ContactSequence('user:a', (event('a', 'm1'),)),
                               ContactSequence('user:b', (event('b', 'm2'),)),
                               ContactSequence('user:c', (event('c', 'm3',
                                                                email='c@example.com'),))])
                .advance_processing_time(1)
                .advance_processing_time(5)     # 5 s: both sent again, refused again
                .advance_processing_time(10)    # 15 s: again
                .add_elements([ContactSequence('user:a', (upsert('a'),))])
                .advance_processing_time(1)     # a's upsert is delivered: a's event goes
                .advance_processing_time(20)    # 35 s: b and c again
                .advance_processing_time(10)    # 40 s: b's and c's last try, at the deadline
                .advance_watermark_to_infinity())
    with LoopsSandbox('wait-key', rate_limit=None, error_shape=error_shape) as sandbox:
        connection = LoopsConnection(sandbox.base_url, ApiKey('wait-key'), rate_limit=50)
        p = TestPipeline(options=StandardOptions(streaming=True))
        written = p | arrivals | WriteToLoops(
            connection, 'stream', max_buffering_seconds=0.5, batch_size=10,
            contact_wait=ContactWait(40), clock=lambda: 0.0,
            recorder=StateRecorder(str(tmp_path / 'state'), 'run'))
        assert_that(written.failures | beam.Map(failure_summary), equal_to([
            ('deliver', 'http_400', 400, B_KEYS[3], True,
             'waited 40s for its contact, sent 5 times')]))
        result = p.run()
        result.wait_until_finish()
        state = sandbox.state()

    a_keys = [derived_key('segment-m1', f'contact-wait-{n}') for n in (1, 2, 3)]
    sends = [(r['idempotency_key'], r['status']) for r in state['requests']
             if r['path'] == '/v1/events/send']
    assert [s for s in sends if s[0] in ['segment-m1'] + a_keys] == [
        ('segment-m1', 400), (a_keys[0], 400), (a_keys[1], 400), (a_keys[2], 200)]
    assert [s for s in sends if s[0] in ['segment-m2'] + B_KEYS] == [
        ('segment-m2', 400)] + [(key, 400) for key in B_KEYS]
    with_email = derived_key(C_KEYS[3], FALLBACK_SALT)
    assert [s for s in sends if s[0] in ['segment-m3', with_email] + C_KEYS] == [
        ('segment-m3', 400)] + [(key, 400) for key in C_KEYS] + [(with_email, 200)]
    assert [(e['userId'], e['idempotency_key']) for e in state['events']] == [
        ('a', a_keys[2]), ('c', with_email)]
    assert [(c['userId'], c['email']) for c in state['contacts']] == [
        ('a', 'a@example.com'), ('c', 'c@example.com')]
    # The sync state records a's and c's events under their own keys, which
    # a later copy of their message carries.
    recorded = read_facts(list_state(str(tmp_path / 'state')))
    assert frozenset().union(*(facts.events for (partition, _), facts in recorded.items()
                               if partition != 'contacts')) == {
        key_digest('segment-m1'), key_digest('segment-m3')}

    counters = pipeline_counters(result)
    assert collections.Counter({name: n for name, n in counters.items()
                                if name.startswith('stream/')}) == {
        'stream/events_held': 3, 'stream/events_released': 2, 'stream/events_waited_out': 1}
    assert counters['deliver/delivered'] == 3 and counters['deliver/failed_http_400'] == 1
    assert counters['deliver/sent_with_fallback_email'] == 1
