"""LoopsClient against a real local LoopsSandbox: every outcome class, retries, secrets."""
import pickle
import socket
import threading
import time

import pytest
import requests

from pipeline.local.sandbox import LoopsSandbox
from transforms.loops_client import AuthError, LoopsClient, LoopsError, Outcome
from transforms.records import (CONTACT_UPDATE_PATH, EVENT_SEND_PATH, LoopsRequest,
                                contact_upsert, event_send, idempotency_key_for)

KEY = 'sk-test-5ecret-v4lue-0123456789'


@pytest.fixture
def sandbox():
    with LoopsSandbox(api_key=KEY, rate_limit=None, seed=1) as running:
        yield running


def client_for(sandbox: LoopsSandbox, **options) -> LoopsClient:
    settings = {'rate': 50.0, 'backoff_base': 0.01, 'seed': 3}
    settings.update(options)
    return LoopsClient(sandbox.base_url, KEY, **settings)


def upsert(user: str = 'u1', **extra) -> LoopsRequest:
    body = {'email': f'{user}@example.com', 'userId': user, **extra}
    return contact_upsert(body, user, (0, 0, ''), 'test')


def event(user: str = 'u1', message_id: str = 'm1') -> LoopsRequest:
    body = {'eventName': 'signedUp', 'email': f'{user}@example.com', 'userId': user}
    return event_send(body, user, (0, 0, message_id), 'test', idempotency_key_for(message_id))


def healing(sandbox: LoopsSandbox, **healed):
    """A sleep that restores the sandbox's settings the first time anyone waits."""
    calls = []

    def sleep(seconds: float) -> None:
        if not calls:
            sandbox.configure(**healed)
        calls.append(seconds)
        time.sleep(seconds)
    return sleep


def api_requests(sandbox: LoopsSandbox) -> list:
    return sandbox.state()['requests']


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def test_check_key_returns_the_team_name(sandbox):
    assert client_for(sandbox).check_key() == 'Sandbox team'


def test_delivered(sandbox):
    outcome = client_for(sandbox).send(upsert(firstName='Ada'))
    assert outcome == Outcome('delivered', 200, None, 1, 0, None, None)
    [contact] = sandbox.state()['contacts']
    assert (contact['userId'], contact['firstName']) == ('u1', 'Ada')
    [logged] = api_requests(sandbox)
    assert (logged['method'], logged['path'], logged['status']) == ('PUT', CONTACT_UPDATE_PATH, 200)


def test_event_already_sent_with_our_key_is_already_delivered(sandbox):
    client = client_for(sandbox)
    assert client.send(event()).status == 'delivered'
    outcome = client.send(event())
    assert (outcome.status, outcome.http_status, outcome.attempts) == ('already_delivered', 409, 1)
    assert len(sandbox.state()['events']) == 1


@pytest.mark.parametrize('request_, status, loops_says', [
    (upsert(email='not-an-email'), 400, 'Invalid email address.'),
    (LoopsRequest('PUT', '/v1/no-such-endpoint', {'userId': 'u1'}), 404, 'Not found'),
    (LoopsRequest('PUT', EVENT_SEND_PATH, {'eventName': 'x', 'userId': 'u1'}), 405,
     'Method not allowed'),
    (upsert(note='x' * 1_100_000), 413, 'Payload too large'),
])
def test_permanent_errors_fail_at_once(sandbox, request_, status, loops_says):
    outcome = client_for(sandbox).send(request_)
    assert outcome.status == 'failed'
    assert (outcome.http_status, outcome.reason, outcome.attempts) == (status, f'http_{status}', 1)
    assert loops_says in outcome.message
    assert loops_says in outcome.response_body
    assert len(api_requests(sandbox)) == 1


def test_409_without_our_key_is_a_failure(sandbox):
    client = client_for(sandbox)
    client.send(upsert('a'))
    client.send(upsert('b'))
    # email of contact a, userId of contact b: two different contacts.
    clash = contact_upsert({'email': 'a@example.com', 'userId': 'b'}, 'b', (0, 0, ''), 'test')
    outcome = client.send(clash)
    assert (outcome.status, outcome.reason, outcome.http_status) == ('failed', 'http_409', 409)
    assert 'different contacts' in outcome.message


def test_rejected_key_raises_auth_error_without_the_key(sandbox):
    wrong = 'sk-wrong-key-abcdef'
    client = LoopsClient(sandbox.base_url, wrong)
    for call in (lambda: client.send(upsert()), client.check_key):
        with pytest.raises(AuthError, match='rejected the API key') as raised:
            call()
        assert wrong not in str(raised.value)
    assert [r['status'] for r in api_requests(sandbox)] == [401, 401]


def test_429_storm_then_success(sandbox):
    sandbox.configure(rate_limit=3)
    stop = threading.Event()

    def noisy_neighbour():
        # Another client of the team keeps the window full for 1.5 s.
        with requests.Session() as session:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline and not stop.is_set():
                session.get(sandbox.base_url + '/v1/api-key',
                            headers={'Authorization': f'Bearer {KEY}'})
                time.sleep(0.02)

    neighbour = threading.Thread(target=noisy_neighbour)
    neighbour.start()
    try:
        time.sleep(0.2)
        outcome = client_for(sandbox, rate=3, max_attempts=12, backoff_base=0.1).send(upsert())
    finally:
        stop.set()
        neighbour.join()
    assert outcome.status == 'delivered'
    assert outcome.rate_limited >= 2
    assert outcome.attempts == outcome.rate_limited + 1


@pytest.mark.parametrize('fault, request_, expected', [
    ('fail_before', upsert(), 'delivered'),
    ('fail_after', upsert(), 'delivered'),
    ('fail_after', event(), 'already_delivered'),
    ('drop_before', event(), 'delivered'),
    ('drop_after', event(), 'already_delivered'),
    ('slow_after', event(), 'already_delivered'),
])
def test_transient_fault_then_success(sandbox, fault, request_, expected):
    sandbox.configure(**{fault: 1.0}, slow_seconds=1.0)
    client = client_for(sandbox, read_timeout=0.3, sleep=healing(sandbox, **{fault: 0.0}))
    outcome = client.send(request_)
    assert (outcome.status, outcome.attempts) == (expected, 2)
    state = sandbox.state()
    assert len(state['contacts']) == 1
    assert len(state['events']) == (1 if request_.is_event else 0)


@pytest.mark.parametrize('fault, http_status, says', [
    ('fail_before', 500, 'HTTP 500: Internal server error'),
    ('drop_before', None, 'no answer from Loops (ConnectionError'),
    ('slow_after', None, 'no answer from Loops (ReadTimeout'),
])
def test_retries_exhausted(sandbox, fault, http_status, says):
    sandbox.configure(**{fault: 1.0}, slow_seconds=1.0)
    outcome = client_for(sandbox, max_attempts=3, read_timeout=0.3).send(upsert())
    assert (outcome.status, outcome.reason) == ('failed', 'retries_exhausted')
    assert (outcome.attempts, outcome.http_status) == (3, http_status)
    assert 'failed after 3 attempts' in outcome.message and says in outcome.message
    assert len(api_requests(sandbox)) == 3


def test_unreachable_server_exhausts_retries_and_check_key_says_so():
    client = LoopsClient(f'http://127.0.0.1:{unused_port()}/api', KEY, max_attempts=2,
                         backoff_base=0.01)
    outcome = client.send(upsert())
    assert (outcome.status, outcome.reason, outcome.attempts) == ('failed', 'retries_exhausted', 2)
    with pytest.raises(LoopsError, match='no answer') as raised:
        client.check_key()
    assert raised.value.http_status is None
    assert KEY not in outcome.message and KEY not in str(raised.value)


def test_get_returns_json_and_raises_on_errors(sandbox):
    client = client_for(sandbox)
    assert [item['id'] for item in client.get('/v1/lists')] == ['list_news', 'list_product']
    assert client.get('/v1/contacts/properties?list=custom') == []
    with pytest.raises(LoopsError, match='HTTP 404') as raised:
        client.get('/v1/nothing-here')
    assert raised.value.http_status == 404


def test_secrets_stay_out_of_reprs_messages_and_outcomes(sandbox):
    client = client_for(sandbox)
    texts = [repr(client), repr(client.bucket)]
    texts.append(repr(client.send(upsert(email='bad'))))
    sandbox.configure(fail_before=1.0)
    texts.append(repr(client_for(sandbox, max_attempts=2).send(upsert())))
    assert 'api_key=' in texts[0]
    texts.append(repr(vars(client)))   # what a traceback's locals would show
    for text in texts:
        assert KEY not in text


def test_unicode_and_lone_surrogates_are_sent_not_crashed_on(sandbox):
    # A lone surrogate is valid JSON text ("\ud800") but not valid UTF-8.
    client = client_for(sandbox)
    outcomes = [client.send(upsert(city='São Paulo 紹介')), client.send(upsert('u2', odd='x\ud800y'))]
    assert [o.status for o in outcomes] == ['delivered', 'delivered']
    stored = {c['userId']: c for c in sandbox.state()['contacts']}
    assert stored['u1']['city'] == 'São Paulo 紹介'


@pytest.mark.parametrize('base_url', [
    'http://app.loops.so/api', 'http://10.1.2.3/api', 'http://127.0.0.1.example.com/api',
    'ftp://127.0.0.1/api', 'app.loops.so/api',
])
def test_unsafe_base_urls_are_refused(base_url):
    with pytest.raises(ValueError) as raised:
        LoopsClient(base_url, KEY)
    assert KEY not in str(raised.value)


@pytest.mark.parametrize('base_url', [
    'https://app.loops.so/api', 'http://127.0.0.1:8787/api', 'http://127.5.6.7/api',
    'http://localhost:8787/api/', 'http://[::1]:8787/api',
])
def test_safe_base_urls_are_accepted(base_url):
    assert LoopsClient(base_url, KEY).base_url == base_url.rstrip('/')


def test_picklable_before_and_after_use(sandbox):
    client = client_for(sandbox)
    fresh = pickle.loads(pickle.dumps(client))
    assert fresh.send(upsert('a')).status == 'delivered'
    used = pickle.loads(pickle.dumps(fresh))
    assert used.send(upsert('b')).status == 'delivered'
    used.close()
    assert used.send(upsert('c')).status == 'delivered'


def test_one_session_per_thread_kept_alive(sandbox):
    client = client_for(sandbox)
    sessions = []

    def work():
        for user in ('x', 'y'):
            client.send(upsert(user))
        sessions.append(client._session())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(session) for session in sessions}) == 3
    assert len(client._sessions) == 3
    client.close()
    assert client._sessions == []
