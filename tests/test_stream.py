"""The streaming job against the real Pub/Sub emulator and the local Loops sandbox."""
import collections
import contextlib
import json
import os
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipeline import backfill, stream
from pipeline.local.sandbox import LoopsSandbox
from pipeline.options import UsageError
from tests.direct_runner_counters import count_every_bundle
from tests.pubsub_emulator import pull, runner_kept_pulling, wait_until
from transforms.core.records import (ContactSequence, Stamp, contact_upsert, derived_key,
                                     event_send, idempotency_key_for)
from transforms.delivery.batching import BatchPerShard
from transforms.state.files import list_state, read_facts

PROJECT = 'segment-loops-test'
API_KEY = 'stream-test-key'
USERS = 30
ROUNDS = 3


def identify(user, round_, **traits):
    ts = f'2026-11-0{round_ + 1}T10:00:00.000Z'
    return {'type': 'identify', 'messageId': f'id-{user}-{round_}', 'userId': f'user-{user}',
            'timestamp': ts, 'receivedAt': ts,
            'traits': dict({'email': f'user{user}@example.com'} if round_ == 0 else {}, **traits)}


def track(user, n, event='Order Completed', **properties):
    return {'type': 'track', 'messageId': f'tr-{user}-{n}', 'userId': f'user-{user}',
            'event': event, 'timestamp': '2026-11-04T10:00:00Z',
            'properties': {'orderId': f'o-{user}-{n}', 'total': n * 10, **properties}}


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
           json.dumps({'type': 'identify', 'messageId': 'anon-0', 'anonymousId': 'a0',
                       'traits': {'plan': 'free'}}).encode(),
           json.dumps({'type': 'identify', 'messageId': 'bad-email', 'userId': 'user-x',
                       'traits': {'email': 'not an email'}}).encode()]
# The invalid email of user-x costs only itself (invalid_email); the rest of
# its upsert, by a userId Loops does not know and without an email, is then
# refused by Loops (http_400: it cannot create a contact without one).
EXPECTED_REASONS = {'invalid_json': 1, 'not_an_object': 1, 'missing_type': 1,
                    'missing_identity': 1, 'invalid_email': 1, 'http_400': 1}
# An identify with an email and no userId is a lead: a contact by email.
LEAD = json.dumps({'type': 'identify', 'messageId': 'anon-1', 'anonymousId': 'a1',
                   'traits': {'email': 'anon@example.com', 'plan': 'trial'}}).encode()


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


@contextlib.contextmanager
def running_stream(sandbox, topics, tmp_path, *options):
    """The stream on the topics' subscription, its failures to the failures
    topic, while the block runs; a `page` trickle keeps the runner pulling."""
    publisher, _, names = topics
    key_file = tmp_path / 'key'
    key_file.write_text(API_KEY)
    result = stream.start([
        '--subscription', names['events_sub'], '--dead_letter_topic', names['failures'],
        '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file),
        '--rate_limit', '20', '--max_buffering_seconds', '0.5', *options],
        out=open(os.devnull, 'w'))
    try:
        with runner_kept_pulling(publisher, names['events']):
            yield result
    finally:
        result.cancel()


def stream_counters_reach(result, expected: dict, timeout: float = 20) -> dict:
    """The stream's counters once they hold at least `expected` (the runner
    commits a bundle's counts after the bundle), or as they are at `timeout`."""
    def reached():
        counters = stream.stream_counters(result)
        return all(counters.get(name, 0) >= n for name, n in expected.items())
    wait_until(reached, timeout)
    return stream.stream_counters(result)


def test_stream_keeps_loops_current_and_dead_letters_invalid_events(topics, tmp_path):
    publisher, subscriber, names = topics
    all_rounds = list(rounds_of_events())
    with LoopsSandbox(api_key=API_KEY, rate_limit=20, latency=(0.01, 0.05), seed=3) as sandbox:
        with running_stream(sandbox, topics, tmp_path):
            for round_, events in enumerate(all_rounds):
                payloads = [json.dumps(e).encode() for e in events]
                if round_ == 0:
                    payloads += INVALID + [LEAD]
                payloads += payloads[:10]  # at-least-once: some messages come twice
                publish_all(publisher, names['events'], payloads)
                # A user's identifies are published in event-time order, a round
                # apart: Pub/Sub does not order messages, rounds do.
                wait_until(lambda: len(sandbox.state()['events']) >= USERS * (round_ + 1), 60)

            assert wait_until(lambda: len(sandbox.state()['events']) >= USERS * ROUNDS, 60)
            failures = pull(subscriber, names['failures_sub'], sum(EXPECTED_REASONS.values()))
            time.sleep(2)  # anything still in flight (e.g. a wrongly repeated event) lands now
            state = sandbox.state()

    contacts = {c['userId'] or c['email']: c for c in state['contacts']}
    assert set(contacts) == {f'user-{u}' for u in range(USERS)} | {'anon@example.com'}
    for user in range(USERS):
        contact = contacts[f'user-{user}']
        assert contact['email'] == f'user{user}@example.com'
        assert contact['plan'] == 'business' and contact['logins'] == ROUNDS
        assert contact['nickname'] is None and contact['source'] == 'Segment'
    assert contacts['anon@example.com']['plan'] == 'trial'
    sends = collections.Counter(e['idempotency_key'] for e in state['events'])
    assert len(sends) == USERS * ROUNDS and set(sends.values()) == {1}
    assert {(e['userId'], e['eventProperties']['orderId']) for e in state['events']} == {
        (f'user-{u}', f'o-{u}-{n}') for u in range(USERS) for n in range(ROUNDS)}

    reasons = collections.Counter(m.attributes['reason'] for m in failures)
    assert reasons == EXPECTED_REASONS
    for message in failures:
        record = json.loads(message.data)
        assert record['reason'] == message.attributes['reason']
        assert record['stage'] == message.attributes['stage']
        # What failed is kept: the event, or for a delivery failure the request.
        if record['stage'] == 'deliver':
            assert record['reason'] == 'http_400' and json.loads(record['request'])['body'] == {
                'userId': 'user-x', 'source': 'Segment'}
        else:
            assert record['stage'] in ('parse', 'map', 'conform') and record['event']


NEWER_USERS = 10


def newer_identify(user):
    return identify(user, 2, email=f'new{user}@example.com', plan='pro', logins=5,
                    mailingLists={'list_news': False})


def older_identify(user):
    """Two days older than newer_identify: every trait stale, but for users
    below half a nickname and a list the newer call did not set."""
    traits = {'email': f'old{user}@example.com', 'plan': 'free', 'logins': 1,
              'mailingLists': {'list_news': True}}
    if user < NEWER_USERS // 2:
        traits['nickname'] = f'nick{user}'
        traits['mailingLists']['list_product'] = True
    return identify(user, 0, **traits)


def test_a_newer_identify_that_arrives_first_is_never_overwritten_by_an_older_one(
        topics, tmp_path, monkeypatch):
    count_every_bundle(monkeypatch)
    publisher, subscriber, names = topics
    users = range(NEWER_USERS)

    def contacts():
        return {c['userId']: c for c in sandbox.state()['contacts']}

    sync_state = str(tmp_path / 'state') + '/'
    with LoopsSandbox(api_key=API_KEY, rate_limit=20, latency=(0.01, 0.05), seed=4) as sandbox:
        with running_stream(sandbox, topics, tmp_path, '--state', sync_state) as result:
            publish_all(publisher, names['events'],
                        [json.dumps(newer_identify(u)).encode() for u in users])
            assert wait_until(lambda: len(contacts()) == NEWER_USERS, 60)
            upserts_before = sum(r['path'] == '/v1/contacts/update'
                                 for r in sandbox.state()['requests'])
            publish_all(publisher, names['events'],
                        [json.dumps(older_identify(u)).encode() for u in users])
            half = NEWER_USERS // 2
            assert wait_until(lambda: sum('nickname' in c for c in contacts().values()) == half,
                              60)
            counters = stream_counters_reach(result, {'stream/stale_requests': half})
            state = sandbox.state()
        failures = pull(subscriber, names['failures_sub'], 1, timeout=2)

    for user in users:
        contact = {c['userId']: c for c in state['contacts']}[f'user-{user}']
        assert (contact['email'], contact['plan'], contact['logins']) == (
            f'new{user}@example.com', 'pro', 5)
        # Loops keeps the lists a contact is on (loops-openapi.yaml 4210-4215).
        if user < half:
            assert contact['nickname'] == f'nick{user}'
            assert contact['mailingLists'] == {'list_product': True}
        else:
            assert 'nickname' not in contact
            assert contact['mailingLists'] == {}
    # Only the users with a nickname were sent anything for their older call.
    upserts_after = sum(r['path'] == '/v1/contacts/update' for r in state['requests'])
    assert upserts_after - upserts_before == half
    # Per older call: email, plan, logins, source and one list were stale.
    assert counters['stream/stale_dropped'] == 5 * NEWER_USERS
    assert counters['stream/stale_requests'] == half
    assert failures == []

    # A backfill of the older identifies sharing the stream's --state sends
    # nothing: every value is older than one the stream applied, or is one
    # the stream applied itself.
    archive = tmp_path / 'older.jsonl'
    archive.write_text(''.join(json.dumps(older_identify(u)) + '\n' for u in users))
    summary = backfill.run(['--input', str(archive), '--state', sync_state,
                            '--dry_run', str(tmp_path / 'dry' / 'requests'),
                            '--dead_letter', str(tmp_path / 'dry-dl') + '/'],
                           out=open(os.devnull, 'w'))
    assert (summary['contacts'], summary['contacts_unchanged']) == (0, NEWER_USERS)


SIGNUPS = 8


def signed_up(user):
    """A signup's track: it names its contact by userId alone."""
    return {'type': 'track', 'messageId': f'signup-{user}', 'userId': f'user-{user}',
            'event': 'Signed Up', 'timestamp': '2026-11-04T10:00:00Z',
            'properties': {'plan': 'trial'}}


def test_events_that_arrive_before_their_contact_are_delivered_once_when_it_comes(
        topics, tmp_path, monkeypatch):
    count_every_bundle(monkeypatch)
    publisher, subscriber, names = topics
    users = range(SIGNUPS)

    def refused_sends():
        return sum(r['path'] == '/v1/events/send' and r['status'] == 400
                   for r in sandbox.state()['requests'])

    with LoopsSandbox(api_key=API_KEY, rate_limit=20, latency=(0.01, 0.05), seed=5) as sandbox:
        with running_stream(sandbox, topics, tmp_path) as result:
            publish_all(publisher, names['events'], [json.dumps(signed_up(u)).encode()
                                                     for u in users])
            # Loops has refused every track (no such contact yet) before the
            # identifies are even published.
            assert wait_until(lambda: refused_sends() >= SIGNUPS, 60)
            publish_all(publisher, names['events'], [json.dumps(identify(u, 0)).encode()
                                                     for u in users])
            assert wait_until(lambda: len(sandbox.state()['events']) >= SIGNUPS, 60)
            counters = stream_counters_reach(result, {'stream/events_released': SIGNUPS})
            time.sleep(2)  # anything still in flight (a wrongly repeated event) lands now
            state = sandbox.state()
        failures = pull(subscriber, names['failures_sub'], 1, timeout=2)

    assert failures == []
    assert len(state['events']) == SIGNUPS
    for event in state['events']:
        original = idempotency_key_for(f'signup-{event["userId"][len("user-"):]}')
        resends = [derived_key(original, f'contact-wait-{n}') for n in range(1, 8)]
        assert event['idempotency_key'] in resends
        assert (event['eventName'], event['eventProperties']) == ('Signed Up', {'plan': 'trial'})
    assert {e['userId'] for e in state['events']} == {f'user-{u}' for u in users}
    assert counters['stream/events_held'] == SIGNUPS
    assert counters['stream/events_released'] == SIGNUPS
    assert counters.get('stream/events_waited_out', 0) == 0
    assert counters.get('deliver/failed', 0) == 0


def delete_message(user, day):
    """Segment's forwarded deletion (segment-docs src/partners/subscriptions/build-functions.md)."""
    at = f'2026-11-{day:02d}T10:00:00.000Z'
    return {'type': 'delete', 'channel': 'server', 'messageId': f'delete-{user}',
            'projectId': 'abcd123', 'userId': f'user-{user}', 'context': [], 'integrations': [],
            'receivedAt': at, 'sentAt': at, 'originalTimestamp': at, 'timestamp': at}


def test_a_delete_message_deletes_its_contact_and_only_later_calls_bring_it_back(
        topics, tmp_path, monkeypatch):
    count_every_bundle(monkeypatch)
    publisher, subscriber, names = topics

    def contacts():
        return {c['userId'] for c in sandbox.state()['contacts']}

    sync_state = str(tmp_path / 'state') + '/'
    with LoopsSandbox(api_key=API_KEY, rate_limit=20, latency=(0.01, 0.05), seed=6) as sandbox:
        with running_stream(sandbox, topics, tmp_path, '--state', sync_state) as result:
            publish_all(publisher, names['events'],
                        [json.dumps(identify(u, 0)).encode() for u in range(3)])
            assert wait_until(lambda: len(contacts()) == 3, 60)
            # user-9 was never a contact: Loops answers 404, already gone.
            publish_all(publisher, names['events'],
                        [json.dumps(delete_message(u, 5)).encode() for u in (0, 1, 9)])
            assert wait_until(lambda: contacts() == {'user-2'}, 60)
            # Arriving after the deletion: user-0's call from before it, user-1's from after.
            publish_all(publisher, names['events'], [
                json.dumps(identify(0, 1, plan='pro')).encode(),
                json.dumps(identify(1, 5, email='user1@example.com', plan='pro')).encode()])
            assert wait_until(lambda: contacts() == {'user-1', 'user-2'}, 60)
            counters = stream_counters_reach(result, {'stream/before_deletion': 1,
                                                      'deliver/already_gone': 1})
            state = sandbox.state()
        failures = pull(subscriber, names['failures_sub'], 1, timeout=2)

    assert failures == []
    assert counters['map/contact_deletions'] == 3
    assert (counters['stream/before_deletion'], counters['deliver/already_gone']) == (1, 1)
    assert counters.get('deliver/failed', 0) == 0
    user_1 = next(c for c in state['contacts'] if c['userId'] == 'user-1')
    assert (user_1['email'], user_1['plan']) == ('user1@example.com', 'pro')
    # A backfill sharing the stream's state does not bring user-0 back from history.
    archive = tmp_path / 'history.jsonl'
    archive.write_text(json.dumps(identify(0, 0, plan='free')) + '\n')
    summary = backfill.run(['--input', str(archive), '--state', sync_state,
                            '--dry_run', str(tmp_path / 'dry' / 'requests'),
                            '--dead_letter', str(tmp_path / 'dry-dl') + '/'],
                           out=open(os.devnull, 'w'))
    assert (summary['contacts'], summary['contacts_before_deletion']) == (0, 1)


def test_with_state_a_late_copy_of_a_delivered_event_is_not_sent_again(
        topics, tmp_path, monkeypatch):
    count_every_bundle(monkeypatch)
    publisher, subscriber, names = topics
    sync_state = str(tmp_path / 'state') + '/'
    signup = dict(track(0, 1), receivedAt='2026-11-04T10:00:00.120Z',
                  sentAt='2026-11-04T10:00:00.100Z')
    # A mobile queue re-sends it days later: the same messageId, a later
    # sentAt and receivedAt, a timestamp a few milliseconds off.
    late_copy = dict(signup, receivedAt='2026-11-06T08:00:00.160Z',
                     sentAt='2026-11-06T08:00:00.100Z', timestamp='2026-11-04T10:00:00.040Z')
    opted_out = dict(track(0, 3), integrations={'All': False})

    def sends_of(message_id):
        key = idempotency_key_for(message_id)
        return [r['status'] for r in sandbox.state()['requests']
                if r['path'] == '/v1/events/send' and r['idempotency_key'] == key]

    def recorded():
        return any(partition != 'contacts' and facts.events
                   for (partition, _), facts in read_facts(list_state(sync_state)).items())

    with LoopsSandbox(api_key=API_KEY, rate_limit=20, latency=(0.01, 0.05), seed=6) as sandbox:
        with running_stream(sandbox, topics, tmp_path, '--state', sync_state,
                            '--state_flush_seconds', '0.5', '--dedupe_seconds', '1') as result:
            publish_all(publisher, names['events'], [json.dumps(identify(0, 0)).encode()])
            assert wait_until(lambda: len(sandbox.state()['contacts']) == 1, 60)
            publish_all(publisher, names['events'], [json.dumps(signup).encode()])
            assert wait_until(lambda: sends_of('tr-0-1') == [200] and recorded(), 60)
            time.sleep(2)   # past --dedupe_seconds: only the state remembers it now
            publish_all(publisher, names['events'], [json.dumps(e).encode() for e in (
                late_copy, track(0, 2), opted_out)])
            assert wait_until(lambda: sends_of('tr-0-2') == [200], 60)
            counters = stream_counters_reach(
                result, {'state/events_already_sent': 1, 'filter/integrations_off': 1})
            time.sleep(1)   # a wrongly sent copy would land now
            assert sends_of('tr-0-1') == [200] and sends_of('tr-0-3') == []

    assert counters['state/events_already_sent'] == 1
    assert counters['filter/integrations_off'] == 1
    assert counters.get('dedupe/duplicates', 0) == 0
    assert counters.get('deliver/already_delivered', 0) == 0


SEGMENT_DATA = os.path.join(os.path.dirname(__file__), 'data', 'segment')
LIVE_LISTS = [{'id': 'cm_newsletter', 'name': 'Newsletter', 'description': None, 'isPublic': True},
              {'id': 'cm_product', 'name': 'Product', 'description': None, 'isPublic': True},
              {'id': 'cm_beta', 'name': 'Beta', 'description': None, 'isPublic': True}]


def test_the_stream_maps_calls_by_a_destinations_subscriptions(topics, tmp_path):
    publisher, subscriber, names = topics
    with open(os.path.join(SEGMENT_DATA, 'subscriptions_live_calls.json'), encoding='utf-8') as f:
        calls = [call['event'] for call in json.load(f)['calls']]
    subscriptions = os.path.join(SEGMENT_DATA, 'subscriptions_live_setup.json')
    with LoopsSandbox(api_key=API_KEY, rate_limit=20, mailing_lists=LIVE_LISTS) as sandbox:
        with running_stream(sandbox, topics, tmp_path, '--segment_subscriptions', subscriptions):
            publish_all(publisher, names['events'], [json.dumps(call).encode() for call in calls])

            def landed():
                state = sandbox.state()
                contacts = {contact['userId']: contact for contact in state['contacts']}
                return (len(state['events']) >= 3 and 'user-9' in contacts
                        and contacts['user-2'].get('plan') and contacts['user-3'].get('plan'))
            assert wait_until(landed, 60)
            failures = pull(subscriber, names['failures_sub'], 3)
            time.sleep(2)  # anything still in flight lands now
            state = sandbox.state()

    contacts = {contact['userId']: contact for contact in state['contacts']}
    assert set(contacts) == {'user-1', 'user-2', 'user-3', 'user-9'}
    # The Signed Up track both sent its event and updated its contact (a @template
    # user group, a literal source, the newsletter list from its properties).
    grace = contacts['user-2']
    assert (grace['email'], grace['firstName'], grace['userGroup'], grace['source'],
            grace['plan'], grace['mailingLists']) == (
        'grace@example.com', 'Grace', 'team plan', 'Signed Up form', 'team',
        {'cm_newsletter': True})
    assert contacts['user-3']['firstName'] == '42'
    assert sorted((e['userId'], e['eventName']) for e in state['events']) == [
        ('user-2', 'Order Completed'), ('user-2', 'Signed Up'), ('user-3', 'Signed Up')]
    assert sorted((m.attributes['stage'], m.attributes['reason'],
                   json.loads(m.data)['message'].split(': ', 1)[1]) for m in failures) == [
        ('map', 'action_refused', 'Contact Email must be a valid email address string but it '
                                  'was not.'),
        ('map', 'action_refused', 'Contact Email must be a valid email address string but it '
                                  'was not.'),
        ('map', 'action_refused', "The root value is missing the required field 'userId'.")]


def job_of(tmp_path, *options):
    key_file = tmp_path / 'key'
    key_file.write_text(API_KEY)
    args, beam_args = stream.stream_parser().parse_known_args([
        '--subscription', f'projects/{PROJECT}/subscriptions/loops',
        '--loops_base_url', 'http://127.0.0.1:9/api', '--loops_api_key_file', str(key_file),
        *options])
    return stream.job_from_args(args, PipelineOptions(beam_args))


def test_the_stream_sends_live_intent_and_events_of_any_age_unless_told(tmp_path):
    job = job_of(tmp_path)
    assert (job.resubscribe, job.policy.max_event_age_ms, job.policy.require_user_id) == (
        True, None, False)
    assert (job.contact_state_ttl_seconds, job.contact_wait_seconds) == (7 * 86400, 600)
    job = job_of(tmp_path, '--resubscribe=false', '--max_event_age', '24h', '--identity',
                 'user_id', '--contact_state_ttl', '2h', '--contact_wait_seconds', '0')
    assert (job.resubscribe, job.policy.max_event_age_ms, job.policy.require_user_id) == (
        False, 86400 * 1000, True)
    assert (job.contact_state_ttl_seconds, job.contact_wait_seconds) == (7200, 0)


@pytest.mark.parametrize('options, says', [
    (['--contact_state_ttl', 'none'], '--contact_state_ttl'),
    (['--contact_state_ttl', 'soon'], '--contact_state_ttl'),
    (['--contact_wait_seconds', '-1'], '--contact_wait_seconds'),
    (['--dedupe_seconds', '-5'], '--dedupe_seconds'),
])
def test_the_stream_refuses_durations_it_cannot_use(tmp_path, options, says):
    with pytest.raises(UsageError, match=says):
        job_of(tmp_path, *options)


def test_an_events_age_is_taken_when_the_stream_reads_it():
    policy = stream.ArrivalPolicy(max_event_age_ms=3600 * 1000, now_ms=0)
    now_ms = int(time.time() * 1000)

    assert policy.too_old(track_request(now_ms - 2 * 3600 * 1000))
    assert not policy.too_old(track_request(now_ms - 60 * 1000))
    assert not stream.ArrivalPolicy(now_ms=0).too_old(track_request(0))


def track_request(event_ms):
    return event_send({'eventName': 'Order Completed', 'userId': 'u'}, 'user:u',
                      Stamp(event_ms, 0, 'm'), 'm', 'segment-m')


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
