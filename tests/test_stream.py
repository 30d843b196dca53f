"""The streaming job against the real Pub/Sub emulator and the local Loops sandbox."""
import collections
import json
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipeline import stream
from pipeline.local.sandbox import LoopsSandbox
from tests.pubsub_emulator import pull, runner_kept_pulling, wait_until
from transforms.coalesce import ContactSequence
from transforms.records import contact_upsert
from transforms.write import BatchPerShard

PROJECT = 'segment-loops-test'
USERS = 30
ROUNDS = 3


def identify(user, round_, **traits):
    ts = f'2026-11-0{round_ + 1}T10:00:00.000Z'
    return {'type': 'identify', 'messageId': f'id-{user}-{round_}', 'userId': f'user-{user}',
            'timestamp': ts, 'receivedAt': ts,
            'traits': dict({'email': f'user{user}@example.com'} if round_ == 0 else {}, **traits)}


def track(user, n):
    return {'type': 'track', 'messageId': f'tr-{user}-{n}', 'userId': f'user-{user}',
            'event': 'Order Completed', 'timestamp': '2026-11-04T10:00:00Z',
            'properties': {'orderId': f'o-{user}-{n}', 'total': n * 10}}


def rounds_of_events():
    """Round k: each user's k-th identify (the plan changes, a counter grows, a
    trait is reset to null in the last round) and one track event."""
    for round_ in range(ROUNDS):
        events = []
        for user in range(USERS):
            traits = {'plan': ['free', 'pro', 'business'][round_], 'logins': round_ + 1}
            if round_ == 0:
                traits['nickname'] = f'nick{user}'
            if round_ == ROUNDS - 1:
                traits['nickname'] = None
            events.append(identify(user, round_, **traits))
            events.append(track(user, round_))
        yield events


INVALID = [b'{"type": "identify", "messageId": "bad-1"', b'[1, 2, 3]', b'{"messageId": "no-type"}',
           json.dumps({'type': 'identify', 'messageId': 'anon-1', 'anonymousId': 'a1',
                       'traits': {'email': 'anon@example.com'}}).encode(),
           json.dumps({'type': 'identify', 'messageId': 'bad-email', 'userId': 'user-x',
                       'traits': {'email': 'not an email'}}).encode()]
EXPECTED_REASONS = {'invalid_json': 1, 'not_an_object': 1, 'missing_type': 1,
                    'missing_user_id': 1, 'invalid_email': 1}


@pytest.fixture
def topics(pubsub_emulator):
    from google.cloud import pubsub_v1
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    suffix = str(int(time.time() * 1000))
    names = {
        'events': publisher.topic_path(PROJECT, f'segment-{suffix}'),
        'failures': publisher.topic_path(PROJECT, f'failures-{suffix}'),
        'events_sub': subscriber.subscription_path(PROJECT, f'loops-{suffix}'),
        'failures_sub': subscriber.subscription_path(PROJECT, f'failures-sub-{suffix}'),
    }
    publisher.create_topic(name=names['events'])
    publisher.create_topic(name=names['failures'])
    subscriber.create_subscription(name=names['events_sub'], topic=names['events'])
    subscriber.create_subscription(name=names['failures_sub'], topic=names['failures'])
    yield publisher, subscriber, names
    subscriber.close()


def publish_all(publisher, topic, payloads):
    futures = [publisher.publish(topic, payload) for payload in payloads]
    for future in futures:
        future.result(timeout=30)


def test_stream_keeps_loops_current_and_dead_letters_invalid_events(topics, tmp_path):
    publisher, subscriber, names = topics
    key_file = tmp_path / 'key'
    key_file.write_text('stream-test-key')
    all_rounds = list(rounds_of_events())
    with LoopsSandbox(api_key='stream-test-key', rate_limit=20, latency=(0.01, 0.05),
                      seed=3) as sandbox:
        result = stream.start([
            '--subscription', names['events_sub'], '--dead_letter_topic', names['failures'],
            '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file),
            '--rate_limit', '20', '--max_buffering_seconds', '0.5'], out=open('/dev/null', 'w'))
        try:
            with runner_kept_pulling(publisher, names['events']):
                for round_, events in enumerate(all_rounds):
                    payloads = [json.dumps(e).encode() for e in events]
                    if round_ == 0:
                        payloads += INVALID
                    payloads += payloads[:10]  # at-least-once: some messages come twice
                    publish_all(publisher, names['events'], payloads)
                    # A user's identifies are published in event-time order, a round
                    # apart: Pub/Sub does not order messages, rounds do.
                    wait_until(lambda: len(sandbox.state()['events']) >= USERS * (round_ + 1), 60)

                expected_events = USERS * ROUNDS
                assert wait_until(lambda: len(sandbox.state()['events']) >= expected_events, 60)
                failures = pull(subscriber, names['failures_sub'], len(INVALID))
                time.sleep(2)  # anything still in flight (e.g. a wrongly repeated event) lands now
                state = sandbox.state()
        finally:
            result.cancel()

    contacts = {c['userId']: c for c in state['contacts']}
    assert set(contacts) == {f'user-{u}' for u in range(USERS)}
    for user in range(USERS):
        contact = contacts[f'user-{user}']
        assert contact['email'] == f'user{user}@example.com'
        assert contact['plan'] == 'business' and contact['logins'] == ROUNDS
        assert contact['nickname'] is None and contact['source'] == 'Segment'
    sends = collections.Counter(e['idempotency_key'] for e in state['events'])
    assert len(sends) == USERS * ROUNDS and set(sends.values()) == {1}
    assert {(e['userId'], e['eventProperties']['orderId']) for e in state['events']} == {
        (f'user-{u}', f'o-{u}-{n}') for u in range(USERS) for n in range(ROUNDS)}

    reasons = collections.Counter(m.attributes['reason'] for m in failures)
    assert reasons == EXPECTED_REASONS
    for message in failures:
        record = json.loads(message.data)
        assert record['reason'] == message.attributes['reason']
        assert record['stage'] == message.attributes['stage'] in ('parse', 'map')
        assert record['event']


def upsert_sequence(user, n):
    request = contact_upsert({'userId': user, 'n': n}, user, (n, 0, f'{user}-{n}'), f'{user}-{n}')
    return ContactSequence(user, (request,))


@pytest.mark.parametrize('pause, batches', [
    # 1.1 s after a's first request, past the 1 s bound: a's batch (merged to
    # its latest update) is sent before b arrives.
    (1.1, [[('a', [2])], [('b', [1])]]),
    # 0.5 s: still within the bound, so b joins the same batch.
    (0.5, [[('a', [2]), ('b', [1])]]),
])
def test_no_request_waits_longer_than_the_buffering_time(pause, batches):
    # GroupIntoBatches sets its timer at clock() + bound; a clock fixed at 0
    # puts it on TestStream's processing-time axis, which the test advances.
    fixed_clock = lambda: Timestamp(0)  # noqa: E731
    events = (TestStream()
              .advance_watermark_to(0)
              .add_elements([(0, upsert_sequence('a', 1)), (0, upsert_sequence('a', 2))])
              .advance_processing_time(pause)
              .add_elements([(0, upsert_sequence('b', 1))])
              .advance_processing_time(1.0)   # b's bound passes too
              .advance_watermark_to_infinity())

    with TestPipeline(options=StandardOptions(streaming=True)) as p:
        sent = (p | events
                | BatchPerShard(batch_size=100, max_buffering_seconds=1.0, clock=fixed_clock)
                | beam.Map(lambda shard_batch: sorted(
                    (s.contact, [r.body['n'] for r in s.requests]) for s in shard_batch[1])))
        assert_that(sent, equal_to(batches))
