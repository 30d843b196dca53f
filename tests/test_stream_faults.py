"""The stream under injected faults (Pub/Sub emulator and the local Loops
sandbox: 5xx after processing, dropped connections, an outage): every valid
message reaches Loops once, every invalid one is a failure record."""
import collections
import json
import os
import time

from pipeline import stream
from pipeline.local.sandbox import LoopsSandbox
from tests.pubsub_emulator import pull, runner_kept_pulling, wait_until
from tests.test_faults import NEW_CONTACT, outage_after
from transforms.contacts.model import body_of, merge, state_of
from transforms.core.records import RawEvent
from transforms.mapping.language import default_mapping
from transforms.mapping.processor import EventProcessor, Selection

PROJECT = 'segment-loops-faults'
API_KEY = 'stream-fault-test-key'
STREAM_USERS = 12


def stream_events():
    """Per user an identify and two tracks carrying the email, so that an event
    arriving before its contact's upsert still finds (or creates) the contact:
    Pub/Sub does not keep order. (A refused event whose answer is lost to a
    5xx is ambiguous on retry: see the stream's notes on 409.)"""
    for user in range(STREAM_USERS):
        email = f'user{user}@example.com'
        ts = '2026-11-02T10:00:00.000Z'
        yield {'type': 'identify', 'messageId': f'id-{user}', 'userId': f'user-{user}',
               'timestamp': ts, 'traits': {'email': email, 'plan': 'pro', 'seats': user,
                                           'address': {'city': 'Berlin'}}}
        for n in range(2):
            yield {'type': 'track', 'messageId': f'tr-{user}-{n}', 'userId': f'user-{user}',
                   'event': 'Order Completed', 'timestamp': ts,
                   'properties': {'orderId': f'o-{user}-{n}', 'total': n + 0.5, 'email': email}}


INVALID = [b'{"type": "identify"', b'[1]', json.dumps({'type': 'identify', 'messageId': 'x',
                                                       'traits': {}}).encode()]


def expected_loops(events) -> tuple:
    """What Loops must hold, from the stream's own per-event path and the
    contact model: ({userId: contact}, {Idempotency-Key: event body})."""
    processor = EventProcessor(Selection(('identify', 'track'), None, default_mapping()))
    states, sends = collections.defaultdict(dict), {}
    for n, event in enumerate(events):
        raw = RawEvent('expected', n + 1, json.dumps(event))
        (request,) = processor.process(raw, collections.Counter()).requests
        if request.spec.mergeable:
            states[request.body['userId']] = merge(states[request.body['userId']],
                                                   state_of(request.body, request.stamp))
        else:
            sends[request.idempotency_key] = request.body
    return {user: {**NEW_CONTACT, **body_of(state)} for user, state in states.items()}, sends


def test_stream_loses_nothing_and_repeats_nothing(pubsub_emulator, tmp_path):
    from google.cloud import pubsub_v1
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    suffix = str(int(time.time() * 1000))
    topic = publisher.topic_path(PROJECT, f'events-{suffix}')
    subscription = subscriber.subscription_path(PROJECT, f'loops-{suffix}')
    failures_topic = publisher.topic_path(PROJECT, f'failures-{suffix}')
    failures_sub = subscriber.subscription_path(PROJECT, f'failures-{suffix}')
    publisher.create_topic(name=topic)
    publisher.create_topic(name=failures_topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    subscriber.create_subscription(name=failures_sub, topic=failures_topic)
    events = list(stream_events())
    contacts, sends = expected_loops(events)
    payloads = [json.dumps(e).encode() for e in events] + INVALID
    payloads += payloads[:8]  # at-least-once: some messages come twice
    for future in [publisher.publish(topic, p) for p in payloads]:
        future.result(timeout=30)
    key_file = tmp_path / 'key'
    key_file.write_text(API_KEY)

    with LoopsSandbox(API_KEY, rate_limit=5, latency=(0.002, 0.01), seed=5,
                      fail_after=0.15, drop_before=0.1) as sandbox:
        outage_after(sandbox, 20, 1.0)
        result = stream.start([
            '--subscription', subscription, '--dead_letter_topic', failures_topic,
            '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file),
            '--rate_limit', '40', '--max_attempts', '15', '--read_timeout', '2',
            '--max_buffering_seconds', '0.5'], out=open(os.devnull, 'w'))
        try:
            with runner_kept_pulling(publisher, topic):
                assert wait_until(lambda: len(sandbox.state()['events']) >= len(sends), 90)
                failure_messages = pull(subscriber, failures_sub, len(INVALID))
                time.sleep(2)  # anything still in flight (a wrongly repeated event) lands now
                state = sandbox.state()
                failure_messages += pull(subscriber, failures_sub, 1, timeout=2)
        finally:
            result.cancel()
            subscriber.close()

    # Every valid message is a contact or an event in Loops, exactly once, and
    # the faults happened.
    held = {c['userId']: {k: v for k, v in c.items() if k != 'id'} for c in state['contacts']}
    assert held == contacts
    assert collections.Counter(e['idempotency_key'] for e in state['events']) == {
        key: 1 for key in sends}
    for event in state['events']:
        body = sends[event['idempotency_key']]
        assert (event['eventName'], event['userId'], event['eventProperties']) == (
            body['eventName'], body['userId'], body['eventProperties'])
    assert {429, 500, 409, None} <= {r['status'] for r in state['requests']}
    # Every invalid message is a failure record that says why; nothing failed
    # to be delivered.
    records = [json.loads(m.data) for m in failure_messages]
    assert sorted(r['reason'] for r in records) == ['invalid_json', 'missing_identity',
                                                    'not_an_object']
    for record in records:
        assert record['stage'] in ('parse', 'map') and record['message'], record
        assert record['event'] is not None and record['source'], record
