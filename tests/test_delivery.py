"""deliver_sequences against a real LoopsSandbox; DeliveryProgress on an injected clock."""
import time
from collections import Counter, defaultdict

import pytest

from pipeline.local.sandbox import LoopsSandbox
from transforms.delivery import (Delivered, DeliveryProgress, deliver_sequences,
                                 format_duration, in_flight_for)
from transforms.loops_client import AuthError, LoopsClient, Outcome
from transforms.records import contact_upsert, event_send, idempotency_key_for

KEY = 'sk-delivery-test-key-42'


def event(user: str, number: int):
    message_id = f'{user}-{number}'
    body = {'eventName': f'step{number}', 'email': f'{user}@example.com', 'userId': user}
    return event_send(body, user, (number, 0, message_id), 'test', idempotency_key_for(message_id))


def upsert(user: str):
    body = {'email': f'{user}@example.com', 'userId': user}
    return contact_upsert(body, user, (0, 0, ''), 'test')


def contact_sequences(contacts: int, events: int) -> list:
    return [[event(f'c{c}', n) for n in range(events)] for c in range(contacts)]


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
    sequences = [[upsert(f'u{n}')] for n in range(30)]
    with LoopsSandbox(api_key=KEY, rate_limit=10, latency=(0.1, 0.3), seed=1) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=10)
        start = time.monotonic()
        delivered = list(deliver_sequences(client, sequences, in_flight_for(10)))
        elapsed = time.monotonic() - start
        logged = sandbox.state()['requests']
    assert Counter(d.outcome.status for d in delivered) == {'delivered': 30}
    assert [r['status'] for r in logged] == [200] * 30  # not one 429
    times = sorted(r['t'] for r in logged)
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 10
    assert elapsed <= 1.1 * 30 / 10


def test_injected_faults_deliver_every_event_exactly_once_or_fail():
    sequences = contact_sequences(contacts=15, events=4)
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.0, 0.02), seed=5,
                      fail_before=0.2, fail_after=0.1, drop_before=0.05,
                      drop_after=0.05) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100, backoff_base=0.01, seed=5)
        delivered = list(deliver_sequences(client, sequences, max_in_flight=6))
        state = sandbox.state()
    outcomes = {d.request.idempotency_key: d.outcome for d in delivered}
    assert len(outcomes) == 60
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


def test_auth_error_stops_submitting_and_is_raised():
    pulled = []

    def lazy_sequences():
        for n in range(100):
            pulled.append(n)
            yield [upsert(f'u{n}'), upsert(f'u{n}')]

    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        client = LoopsClient(sandbox.base_url, 'sk-not-the-key', rate=100)
        with pytest.raises(AuthError):
            list(deliver_sequences(client, lazy_sequences(), max_in_flight=3))
        logged = sandbox.state()['requests']
    assert len(pulled) <= 3
    assert 1 <= len(logged) <= 3  # each sequence stopped at its first 401


def test_sequences_are_pulled_lazily():
    pulled = []

    def lazy_sequences():
        for n in range(50):
            pulled.append(n)
            yield [upsert(f'u{n}')]

    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        results = deliver_sequences(client, lazy_sequences(), max_in_flight=3)
        first = next(results)
        assert isinstance(first, Delivered) and len(pulled) <= 4
        rest = list(results)
    assert len(rest) == 49 and len(pulled) == 50


def test_progress_is_recorded_for_every_result():
    lines = []
    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        progress = DeliveryProgress(6, 100, interval=3600, log=lines.append, label='backfill')
        sequences = [[upsert('a'), upsert('a@@')], [upsert('b')], [upsert('c')] * 3]
        results = list(deliver_sequences(client, sequences, 2, progress))
    progress.finish()
    assert len(results) == 6
    assert len(lines) == 1
    assert lines[0].startswith('backfill sent 6/6 (100%), ')
    assert ', 1 failed, 0 retries' in lines[0]


@pytest.mark.parametrize('rate, latency, expected', [
    (10, 0.5, 10), (10, 0.3, 6), (1, 0.5, 2), (0.1, 0.5, 2), (100, 0.25, 50),
])
def test_in_flight_for(rate, latency, expected):
    assert in_flight_for(rate, latency) == expected


@pytest.mark.parametrize('seconds, text', [
    (0, '0s'), (45.4, '45s'), (380, '6m20s'), (3599, '59m59s'), (7500, '2h05m'),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


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
