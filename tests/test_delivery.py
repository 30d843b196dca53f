"""deliver_sequences against a real LoopsSandbox, also when the job stops;
DeliveryProgress on an injected clock."""
import threading
import time
from collections import Counter, defaultdict

import pytest

from pipeline.local.sandbox import LoopsSandbox
from transforms.core.records import (NO_STAMP, ContactSequence, Stamp, contact_upsert,
                                     derived_key, event_send, idempotency_key_for)
from transforms.core.stop import StopRequested, clear_stop, request_stop
from transforms.delivery.in_flight import (FALLBACK_SALT, Delivered, DeliveryProgress,
                                           deliver_one, deliver_sequences, fallback_request,
                                           in_flight_for)
from transforms.delivery.shard_writer import delivery_failure
from transforms.loops.client import LoopsClient, Outcome

KEY = 'sk-delivery-test-key-42'


def event(user: str, number: int):
    message_id = f'{user}-{number}'
    body = {'eventName': f'step{number}', 'email': f'{user}@example.com', 'userId': user}
    return event_send(body, f'user:{user}', Stamp(number, 0, message_id), 'test',
                      idempotency_key_for(message_id))


def upsert(user: str, **extra):
    body = {'email': f'{user}@example.com', 'userId': user, **extra}
    return contact_upsert(body, f'user:{user}', NO_STAMP, 'test')


def sequence(*requests) -> ContactSequence:
    return ContactSequence(requests[0].contact, tuple(requests))


def contact_sequences(contacts: int, events: int) -> list:
    return [sequence(*(event(f'c{c}', n) for n in range(events))) for c in range(contacts)]


def test_per_contact_order_is_kept_while_contacts_run_concurrently():
    sequences = contact_sequences(contacts=8, events=5)
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.01, 0.05), seed=2) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        delivered = list(deliver_sequences(client, sequences, max_in_flight=4))
        events = sandbox.state()['events']
    assert all(d.outcome.status == 'delivered' for d in delivered)
    assert len(delivered) == len(events) == 40
    stored = defaultdict(list)
    for item in events:
        stored[item['userId']].append(item['eventName'])
    assert stored == {f'c{c}': [f'step{n}' for n in range(5)] for c in range(8)}
    # Concurrency: one contact after another would switch contacts only 7 times.
    arrival = [item['userId'] for item in events]
    assert sum(a != b for a, b in zip(arrival, arrival[1:])) > 7


def test_rate_limit_is_kept_on_the_server_side():
    sequences = [sequence(upsert(f'u{n}')) for n in range(30)]
    with LoopsSandbox(api_key=KEY, rate_limit=10, latency=(0.1, 0.3), seed=1) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=10)
        delivered = list(deliver_sequences(client, sequences, in_flight_for(10)))
        logged = sandbox.state()['requests']
    assert Counter(d.outcome.status for d in delivered) == {'delivered': 30}
    assert [r['status'] for r in logged] == [200] * 30  # not one 429
    times = sorted(r['t'] for r in logged)
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 10


def test_injected_faults_deliver_every_event_exactly_once_or_fail():
    sequences = contact_sequences(contacts=15, events=4)
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.0, 0.02), seed=5,
                      fail_before=0.2, fail_after=0.1, drop_before=0.05,
                      drop_after=0.05) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100, backoff_base=0.01, seed=5)
        delivered = list(deliver_sequences(client, sequences, max_in_flight=6))
        state = sandbox.state()
    # A contact's first event finds no contact and goes again with its email.
    outcomes = {key_sent(d): d.outcome for d in delivered}
    assert len(outcomes) == 60
    assert sum(d.fallback_sent is not None for d in delivered) >= 15
    stored = Counter(item['idempotency_key'] for item in state['events'])
    assert max(stored.values()) == 1
    for key, outcome in outcomes.items():
        if outcome.status == 'failed':
            assert outcome.reason == 'retries_exhausted'
        else:
            assert stored[key] == 1
    # The faults did happen and were retried through.
    assert sum(o.attempts for o in outcomes.values()) > 60
    assert Counter(o.status for o in outcomes.values())['already_delivered'] > 0


def key_sent(delivered: Delivered) -> str:
    """The Idempotency-Key of the send a Delivered's outcome is of."""
    return (delivered.fallback_sent or delivered.request).idempotency_key


def test_a_rejected_key_stops_sending_and_every_request_comes_back_unsent():
    pulled = []

    def lazy_sequences():
        for n in range(100):
            pulled.append(n)
            yield sequence(upsert(f'u{n}'), upsert(f'u{n}'))

    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        client = LoopsClient(sandbox.base_url, 'sk-not-the-key', rate=100)
        delivered = list(deliver_sequences(client, lazy_sequences(), max_in_flight=3))
        logged = sandbox.state()['requests']
    assert len(pulled) == 100 and len(delivered) == 200
    assert {(d.outcome.status, d.outcome.reason) for d in delivered} == {('failed', 'key_rejected')}
    assert sum('was not delivered: Loops rejected the API key' in d.outcome.message
               for d in delivered) == len(logged)
    assert all('sk-not-the-key' not in d.outcome.message for d in delivered)
    # Only requests already on their way when the first 401 came were sent:
    # one per sequence in flight, at the most.
    assert 1 <= len(logged) <= 3 and {r['status'] for r in logged} == {401}


def test_sequences_are_pulled_lazily():
    pulled = []

    def lazy_sequences():
        for n in range(50):
            pulled.append(n)
            yield sequence(upsert(f'u{n}'))

    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        results = deliver_sequences(client, lazy_sequences(), max_in_flight=3)
        first = next(results)
        assert isinstance(first, Delivered) and len(pulled) <= 4
        rest = list(results)
    assert len(rest) == 49 and len(pulled) == 50


def test_two_sequences_of_one_contact_are_never_in_flight_together():
    # Three sequences of contact a, in the order given, among others.
    given = [sequence(event('a', 0), event('a', 1)), sequence(event('b', 0)),
             sequence(event('a', 2)), sequence(event('c', 0)), sequence(event('a', 3))]
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.02, 0.05), seed=4) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=200)
        delivered = list(deliver_sequences(client, given, max_in_flight=4))
        events = sandbox.state()['events']
    assert Counter(d.outcome.status for d in delivered) == {'delivered': 6}
    assert [e['eventName'] for e in events if e['userId'] == 'a'] == [
        'step0', 'step1', 'step2', 'step3']


def test_tick_is_called_while_waiting():
    ticks = []
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.3, 0.3)) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        delivered = list(deliver_sequences(client, [sequence(upsert('a'))], 1,
                                           tick=lambda: ticks.append(threading.get_ident()),
                                           tick_seconds=0.05))
    assert len(delivered) == 1 and len(ticks) >= 2
    assert set(ticks) == {threading.get_ident()}   # on the consuming thread


# Every error body shape the sandbox can answer in (pipeline/local/error_shapes.py):
# the split must find Loops' words in each.
SHAPES = ('documented', 'error', 'nested', 'text')


def refusals_against_the_sandbox(*requests, error_shape: str = 'documented') -> tuple:
    with LoopsSandbox(api_key=KEY, rate_limit=None, error_shape=error_shape) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        delivered = [deliver_one(client, request) for request in requests]
        return delivered, sandbox.state()


@pytest.mark.parametrize('error_shape', SHAPES)
def test_a_refused_part_of_an_upsert_costs_only_itself(error_shape):
    [bio, lists], state = refusals_against_the_sandbox(
        upsert('a', firstName='Ada', bio={'nested': 1}),
        upsert('b', plan='pro', mailingLists={'list_news': True, 'list_gone': True}),
        error_shape=error_shape)
    assert (bio.outcome.status, bio.outcome.attempts) == ('delivered', 1)
    assert bio.request.body == {'email': 'a@example.com', 'userId': 'a', 'firstName': 'Ada'}
    [part] = bio.refused
    assert part.request.body == {'userId': 'a', 'email': 'a@example.com', 'bio': {'nested': 1}}
    assert (part.outcome.status, part.outcome.reason, part.outcome.http_status) == (
        'failed', 'http_400', 400)
    assert 'Invalid value for "bio"' in part.outcome.message
    assert lists.outcome.status == 'delivered'
    assert lists.request.body['mailingLists'] == {'list_news': True}
    [part] = lists.refused
    assert part.request.body == {'userId': 'b', 'email': 'b@example.com',
                                 'mailingLists': {'list_gone': True}}
    assert 'Unknown mailing list id: list_gone.' in part.outcome.message
    contacts = {c['userId']: c for c in state['contacts']}
    assert contacts['a']['firstName'] == 'Ada' and 'bio' not in contacts['a']
    assert contacts['b']['plan'] == 'pro'
    assert [r['status'] for r in state['requests']] == [400, 200, 400, 200]


@pytest.mark.parametrize('error_shape', SHAPES)
def test_a_refused_part_is_split_off_once_and_a_refusal_naming_nothing_stays_whole(
        error_shape):
    [twice, ghost, event_], state = refusals_against_the_sandbox(
        upsert('a', id='x', bio={'nested': 1}),
        contact_upsert({'userId': 'ghost', 'plan': 'pro'}, 'user:ghost', NO_STAMP, 'test'),
        event_send({'eventName': 'x', 'userId': 'a', 'eventProperties': {'n': {'deep': 1}}},
                   'user:a', NO_STAMP, 'test', 'segment-k'),
        error_shape=error_shape)
    # The first refusal names "id"; the rest, sent once more, is refused for "bio".
    assert [d.request.body for d in twice.refused] == [
        {'userId': 'a', 'email': 'a@example.com', 'id': 'x'}]
    assert twice.request.body == {'email': 'a@example.com', 'userId': 'a', 'bio': {'nested': 1}}
    assert (twice.outcome.reason, 'Invalid value for "bio"' in twice.outcome.message) == (
        'http_400', True)
    # Nothing in the body named; an event (not mergeable): one failure each.
    assert (ghost.refused, ghost.outcome.reason) == ((), 'http_400')
    assert (event_.refused, event_.outcome.reason) == ((), 'http_400')
    assert [r['status'] for r in state['requests']] == [400, 400, 400, 400]


@pytest.mark.parametrize('error_shape', SHAPES)
def test_an_event_goes_with_its_email_only_when_loops_does_not_know_its_user_id(error_shape):
    new_user, known_user, invitee = (
        event_send({'eventName': name, 'userId': user, 'email': email}, f'user:{user}',
                   NO_STAMP, 'test', f'segment-{number}')
        for number, (name, user, email) in enumerate([
            ('Visited', 'n', 'n@example.com'), ('Ordered', 'a', 'a.old@example.com'),
            ('Invited', 'a', 'guest@example.com')]))
    assert (known_user.body, known_user.fallback_email) == (
        {'eventName': 'Ordered', 'userId': 'a'}, 'a.old@example.com')
    [_, created, found, invited], state = refusals_against_the_sandbox(
        upsert('a'), new_user, known_user, invitee, error_shape=error_shape)
    assert created.outcome.status == 'delivered'
    assert created.request == new_user   # as first sent, under its own key
    assert created.fallback_sent == fallback_request(new_user)
    assert created.fallback_sent.body == {'eventName': 'Visited', 'userId': 'n',
                                          'email': 'n@example.com'}
    assert found.fallback_sent is None and invited.fallback_sent is None
    assert {c['userId']: c['email'] for c in state['contacts']} == {
        'a': 'a@example.com', 'n': 'n@example.com'}
    keys = [(r['status'], r['idempotency_key']) for r in state['requests']
            if r['path'] == '/v1/events/send']
    assert keys == [(400, 'segment-0'), (200, derived_key('segment-0', FALLBACK_SALT)),
                    (200, 'segment-1'), (200, 'segment-2')]


@pytest.mark.parametrize('reason, status, recorded', [
    # Loops may have applied the re-send: a replay sends it again, 409 if so.
    ('retries_exhausted', 503, 'fallback'),
    ('stopped', 503, 'fallback'),
    # Refused: a replay sends the event as the writer did, by userId first.
    ('http_400', 400, 'event'),
])
def test_the_failure_record_of_a_fallback_holds_what_a_replay_must_send(reason, status,
                                                                        recorded):
    event = event_send({'eventName': 'Visited', 'userId': 'n', 'email': 'n@example.com'},
                       'user:n', NO_STAMP, 'test', 'segment-0')
    fallback = fallback_request(event)
    outcome = Outcome('failed', status, None, 6, 0, reason, 'POST /v1/events/send failed')
    record = delivery_failure(Delivered(event, outcome, fallback_sent=fallback))
    expected = {'fallback': fallback, 'event': event}[recorded]
    assert record['request'] == expected.to_json()
    assert 'sent again with its fallback email' in record['message']


def test_an_event_whose_fallback_is_not_allowed_comes_back_refused():
    request = event_send({'eventName': 'Visited', 'userId': 'n', 'email': 'n@example.com'},
                         'user:n', NO_STAMP, 'test', 'segment-0')
    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        held = deliver_one(client, request, fall_back=False)
        assert sandbox.state()['contacts'] == []
    assert (held.outcome.reason, held.fallback_sent) == ('http_400', None)
    assert 'Contact not found' in held.outcome.message


@pytest.mark.parametrize('rate, latency, expected', [
    (10, 0.5, 10), (10, 0.3, 6), (1, 0.5, 2), (0.1, 0.5, 2), (100, 0.25, 50),
])
def test_in_flight_for(rate, latency, expected):
    assert in_flight_for(rate, latency) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def outcome(status: str = 'delivered', attempts: int = 1) -> Outcome:
    return Outcome(status, 200, None, attempts, 0, None, None)


def test_progress_lines_at_most_once_per_interval_and_at_the_end():
    clock, lines = FakeClock(), []
    progress = DeliveryProgress(5000, 10, interval=10, clock=clock, log=lines.append,
                                label='events')
    for n in range(1200):
        clock.now = (n + 1) / 9.8
        status = 'failed' if n in (5, 50, 500) else 'delivered'
        progress.record(outcome(status, attempts=2 if n in (7, 8) else 1))
    assert len(lines) == 12
    assert lines[0].startswith('events sent 98/5000 (1%), 9.8 req/s (limit 10)')
    progress.finish()
    assert lines[-1] == ('events sent 1200/5000 (24%), 9.8 req/s (limit 10), '
                         '3 failed, 2 retries, ETA 6m28s')


def test_progress_without_a_total_has_no_percentage_or_eta():
    clock, lines = FakeClock(), []
    progress = DeliveryProgress(None, 2.5, interval=1, clock=clock, log=lines.append)
    clock.now = 4.0
    progress.record(outcome())
    progress.record(outcome())
    progress.finish()
    assert lines == ['sent 1, 0.2 req/s (limit 2.5), 0 failed, 0 retries',
                     'sent 2, 0.5 req/s (limit 2.5), 0 failed, 0 retries']


def test_progress_line_has_no_contact_data():
    lines = []
    progress = DeliveryProgress(1, 10, clock=FakeClock(), log=lines.append)
    progress.record(Outcome('failed', 400, '{"message": "bad a@example.com"}', 1, 0,
                            'http_400', 'rejected: a@example.com'))
    progress.finish()
    assert '@' not in lines[0] and lines[0].endswith(', done')


@pytest.fixture
def stop_afterwards():
    """Clears the process's stop flag after a test that requests a stop."""
    yield
    clear_stop()


def stop_when(sandbox, requests: int) -> threading.Thread:
    """Requests a stop (as a signal handler would) once the sandbox has seen `requests`."""
    def watch():
        while len(sandbox.state()['requests']) < requests:
            time.sleep(0.005)
        request_stop()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def seeded(contacts: int) -> list:
    """The contacts of contact_sequences, for a sandbox that has them already."""
    return [{'userId': f'c{c}', 'email': f'c{c}@example.com'} for c in range(contacts)]


def test_a_stop_lets_the_requests_in_flight_finish_and_starts_no_more(stop_afterwards):
    sequences = contact_sequences(contacts=10, events=3)
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.2, 0.2),
                      contacts=seeded(10)) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        stop_when(sandbox, 4)
        delivered = list(deliver_sequences(client, sequences, max_in_flight=4))
        logged = sandbox.state()['requests']
    # Every request sent got its answer back; none started after the stop.
    assert len(delivered) == len(logged) and 4 <= len(logged) <= 8
    assert {d.outcome.status for d in delivered} == {'delivered'}
    assert {r['status'] for r in logged} == {200}
    # What was sent of each contact is the start of its sequence, in order.
    sent = defaultdict(list)
    for item in delivered:
        sent[item.request.contact].append(item.request)
    for contact, requests in sent.items():
        given = next(s.requests for s in sequences if s.contact == contact)
        assert tuple(requests) == given[:len(requests)]


def test_a_stop_before_the_fallback_leaves_the_refusal_as_the_events_outcome(stop_afterwards):
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.2, 0.2)) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        stop_when(sandbox, 1)
        delivered = deliver_one(client, event('n', 0))
        logged = sandbox.state()['requests']
    assert (delivered.outcome.reason, delivered.fallback_sent) == ('http_400', None)
    assert 'Contact not found' in delivered.outcome.message
    assert [r['status'] for r in logged] == [400]


def test_a_stop_ends_a_retry_wait_with_the_answer_so_far(stop_afterwards):
    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        sandbox.outage(60)
        client = LoopsClient(sandbox.base_url, KEY, rate=100, max_attempts=6,
                             backoff_base=20, seed=1)
        threading.Timer(0.5, request_stop).start()
        started = time.monotonic()
        outcome = client.send(upsert('a'))
        waited = time.monotonic() - started
        with pytest.raises(StopRequested, match='was not sent: the job is stopping'):
            client.send(upsert('b'))
        logged = sandbox.state()['requests']
    assert waited < 2
    assert (outcome.status, outcome.reason) == ('failed', 'stopped')
    assert outcome.attempts == len(logged) >= 1
    assert outcome.message.startswith('PUT /v1/contacts/update was not retried after')
    assert 'the job was stopping' in outcome.message


def test_progress_lines_go_on_while_requests_wait_on_retries():
    clock, lines = FakeClock(), []
    progress = DeliveryProgress(100, 10, interval=10, clock=clock, log=lines.append,
                                label='contacts')
    progress.record(outcome())
    for second in range(2, 37, 2):   # an outage: the writer ticks every 2 s, nothing finishes
        clock.now = float(second)
        progress.tick()
    assert lines == [
        'contacts sent 1/100 (1%), 0.1 req/s (limit 10), 0 failed, 0 retries, ETA 16m30s, '
        'no request finished for 10s',
        'contacts sent 1/100 (1%), 0.1 req/s (limit 10), 0 failed, 0 retries, ETA 33m00s, '
        'no request finished for 20s',
        'contacts sent 1/100 (1%), 0.0 req/s (limit 10), 0 failed, 0 retries, ETA 49m30s, '
        'no request finished for 30s']
    progress.finish(not_sent=99)
    assert lines[-1].endswith(', stopped: 99 not sent')
