"""LoopsClient: its retry policy as pure functions and over a scripted caller,
then against a real local LoopsSandbox: every outcome class, retries, secrets."""
import http.server
import pickle
import socket
import threading
import time

import pytest
import requests

from pipeline.local.sandbox import LoopsSandbox
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND
from transforms.core.records import (NO_STAMP, Stamp, contact_upsert, derived_key, event_send,
                                     idempotency_key_for)
from transforms.loops.caller import Answer
from transforms.loops.client import AuthError, LoopsClient, LoopsError, Outcome
from transforms.loops.rate_limit import HEADROOM, PAUSE_SECONDS, TokenBucket
from transforms.loops.retry import (KEY_REJECTED, RETRIES_EXHAUSTED, RetryPolicy, Verdict, classify,
                                    final_outcome, is_permanent_reason, loops_message)

KEY = 'sk-test-5ecret-v4lue-0123456789'


@pytest.fixture
def sandbox():
    with LoopsSandbox(api_key=KEY, rate_limit=None, seed=1) as running:
        yield running


def client_for(sandbox: LoopsSandbox, **options) -> LoopsClient:
    settings = {'rate': 50.0, 'backoff_base': 0.01, 'seed': 3}
    settings.update(options)
    return LoopsClient(sandbox.base_url, KEY, **settings)


def upsert(user: str = 'u1', **extra):
    body = {'email': f'{user}@example.com', 'userId': user, **extra}
    return contact_upsert(body, f'user:{user}', NO_STAMP, 'test')


def event(user: str = 'u1', message_id: str = 'm1'):
    """An event by email (one by userId would go without its email, and
    the client alone sends no fallback): Loops creates its contact."""
    body = {'eventName': 'signedUp', 'email': f'{user}@example.com'}
    return event_send(body, f'email:{user}@example.com', Stamp(0, 0, message_id), 'test',
                      idempotency_key_for(message_id))


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


# ------------------------------------------------------------ the retry policy, pure

@pytest.mark.parametrize('status, keyed, verdict', [
    (200, False, Verdict.DELIVERED), (204, True, Verdict.DELIVERED),
    (409, True, Verdict.ALREADY_DELIVERED), (409, False, Verdict.PERMANENT),
    (400, True, Verdict.PERMANENT), (404, False, Verdict.PERMANENT),
    (405, False, Verdict.PERMANENT), (413, False, Verdict.PERMANENT),
    (302, False, Verdict.PERMANENT),
    (401, False, Verdict.KEY_REJECTED), (401, True, Verdict.KEY_REJECTED),
    (429, True, Verdict.TRANSIENT), (500, False, Verdict.TRANSIENT),
    (503, True, Verdict.TRANSIENT), (None, False, Verdict.TRANSIENT),
])
def test_classify(status, keyed, verdict):
    assert classify(status, keyed) is verdict


@pytest.mark.parametrize('retry, draw, seconds', [
    (0, 0.5, 0.25), (1, 0.5, 0.5), (3, 1.0, 4.0), (10, 1.0, 30.0), (10, 0.0, 0.0),
])
def test_backoff_is_exponential_with_full_jitter_and_a_ceiling(retry, draw, seconds):
    assert RetryPolicy(6, 0.5, 30.0).backoff_seconds(retry, draw) == pytest.approx(seconds)


def test_only_transient_verdicts_are_retried_and_only_while_attempts_are_left():
    policy = RetryPolicy(3)
    assert [policy.retries_left(Verdict.TRANSIENT, n) for n in (1, 2, 3)] == [True, True, False]
    assert not any(policy.retries_left(verdict, 1) for verdict in Verdict
                   if verdict is not Verdict.TRANSIENT)


@pytest.mark.parametrize('arguments', [(0,), (1.5,), (3, -1.0)])
def test_a_policy_that_cannot_work_is_refused(arguments):
    with pytest.raises(ValueError):
        RetryPolicy(*arguments)


@pytest.mark.parametrize('verdict, status, body, error, outcome', [
    (Verdict.DELIVERED, 200, '{}', None, ('delivered', None, None)),
    (Verdict.ALREADY_DELIVERED, 409, '{"message":"used"}', None,
     ('already_delivered', None, None)),
    (Verdict.PERMANENT, 400, '{"message":"Invalid email address."}', None,
     ('failed', 'http_400', 'PUT /x was rejected by Loops: HTTP 400: Invalid email address.')),
    (Verdict.PERMANENT, 413, 'not json', None,
     ('failed', 'http_413', 'PUT /x was rejected by Loops: HTTP 413: not json')),
    (Verdict.PERMANENT, 400, '{"success": false, "error": "Invalid event name"}', None,
     ('failed', 'http_400', 'PUT /x was rejected by Loops: HTTP 400: Invalid event name')),
    (Verdict.PERMANENT, 400, '', None, ('failed', 'http_400', 'PUT /x was rejected by Loops: '
                                                               'HTTP 400')),
    (Verdict.TRANSIENT, 503, '{"message":"down"}', None,
     ('failed', RETRIES_EXHAUSTED, 'PUT /x failed after 4 attempts: HTTP 503: down')),
    (Verdict.TRANSIENT, None, None, 'ReadTimeout: slow',
     ('failed', RETRIES_EXHAUSTED, 'PUT /x failed after 4 attempts: no answer from Loops '
                                   '(ReadTimeout: slow)')),
])
def test_final_outcomes(verdict, status, body, error, outcome):
    made = final_outcome(verdict, status, body, error, 4, 1, 'PUT /x')
    assert (made.status, made.reason, made.message) == outcome
    assert (made.http_status, made.attempts, made.rate_limited) == (status, 4, 1)


# Error bodies in every shape Loops' SDKs and spec show, and what the JS SDK's
# APIError (npm loops 7.3.0, dist/index.cjs:39-63) takes as the message.
@pytest.mark.parametrize('body, text', [
    # OpenAPI spec: ContactFailureResponse (loops-openapi.yaml 4357-4373)
    ('{"success": false, "message": "Invalid email address."}', 'Invalid email address.'),
    # OpenAPI spec: WorkflowFailureResponse, no "success" (8250-8258)
    ('{"message": "Workflow not found."}', 'Workflow not found.'),
    # JS SDK README "testApiKey" and type ApiKeyErrorResponse
    ('{"error": "Invalid API key"}', 'Invalid API key'),
    # JS SDK test "should handle API error response" (LoopsClient.test.ts:407-410)
    ('{"success": false, "error": "Invalid event name"}', 'Invalid event name'),
    # OpenAPI spec: api-key 401, "error" deprecated (82-101)
    ('{"success": false, "message": "Invalid API key", "error": "Invalid API key"}',
     'Invalid API key'),
    # JS SDK README sendTransactionalEmail, nested error
    ('{"success": false, "error": {"path": "dataVariables", "message": "Missing required '
     'fields: login_url"}, "transactionalId": "x"}', 'Missing required fields: login_url'),
    # OpenAPI spec: TransactionalFailure4Response, error without a message (4750-4769)
    ('{"success": false, "message": "Bad data.", "error": {"path": "p", "reason": "r"}}',
     'Bad data.'),
    ('{"success": false, "error": "", "message": "Contact not found."}', 'Contact not found.'),
    # JS SDK tests "non-JSON error responses" (LoopsClient.test.ts:566-621)
    ('<html><body>502 Bad Gateway</body></html>', '502 Bad Gateway'),
    ('Service Unavailable', 'Service Unavailable'),
    ('', None), ('  \n', None), (None, None),
    ('{"success": false}', None), ('[1, 2]', None), ('{"message": 7}', None),
])
def test_loops_words_are_read_from_every_error_shape(body, text):
    assert loops_message(body) == text


def test_a_long_page_is_cut_to_a_line():
    text = loops_message('<html><title>Oops</title><body>' + 'x ' * 500 + '</body></html>')
    assert text.startswith('Oops x x') and text.endswith('...') and len(text) == 200


def test_derived_keys_are_new_stable_and_short():
    key = idempotency_key_for('m1')
    first = derived_key(key, '1700000000123')
    assert first == derived_key(key, '1700000000123')
    assert len({key, first, derived_key(key, '1700000000124'),
                derived_key(idempotency_key_for('m2'), '1700000000123')}) == 4
    assert first.startswith('segment-') and len(first) <= 100


@pytest.mark.parametrize('reason, permanent', [
    ('http_400', True), ('http_413', True), ('http_500', False), (RETRIES_EXHAUSTED, False),
    (KEY_REJECTED, False), ('http_4000', False),
])
def test_permanent_reasons(reason, permanent):
    assert is_permanent_reason(reason) is permanent


class ScriptedCaller:
    """Answers from a script, one per call, and notes every call."""

    def __init__(self, *answers: Answer):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, method, path, body=None, headers=None) -> Answer:
        self.calls.append((method, path))
        return self.answers.pop(0)


def scripted_client(*answers: Answer, max_attempts: int = 4):
    caller, waits = ScriptedCaller(*answers), []
    client = LoopsClient.from_parts(caller, RetryPolicy(max_attempts, 1.0, 8.0),
                                    TokenBucket(1000, sleep=lambda s: None), seed=5,
                                    sleep=waits.append)
    return client, caller, waits


def test_one_retry_loop_for_send_and_get():
    busy = Answer(429, '{"message":"Rate limit exceeded"}', None, 10, 0)
    client, caller, waits = scripted_client(busy, Answer(None, None, 'ConnectionError: x'),
                                            Answer(200, '{}'), busy, Answer(200, '[1, 2]'))
    assert client.send(upsert()) == Outcome('delivered', 200, None, 3, 1, None, None)
    assert client.get('/v1/lists') == [1, 2]
    assert caller.calls == [('PUT', CONTACT_UPSERT.path)] * 3 + [('GET', '/v1/lists')] * 2
    # Full jitter below each retry's ceiling: 1 s, then 2 s; then 1 s for get's retry.
    assert len(waits) == 3 and all(0 <= wait <= ceiling for wait, ceiling
                                   in zip(waits, (1.0, 2.0, 1.0)))
    assert client.throttler.current_rate < client.throttler.rate * HEADROOM


def test_a_rejected_key_raises_and_is_never_offered_again():
    client, caller, _ = scripted_client(Answer(401, '{"message":"Invalid API key"}'))
    for call in (lambda: client.send(event()), lambda: client.get('/v1/lists')):
        with pytest.raises(AuthError, match='rejected the API key'):
            call()
    assert caller.calls == [('POST', EVENT_SEND.path)]


def test_get_raises_loops_error_for_anything_but_success():
    client, _, _ = scripted_client(Answer(404, '{"message":"Not found"}'),
                                   Answer(200, 'not json'))
    with pytest.raises(LoopsError, match='GET /v1/x was rejected by Loops: HTTP 404: Not found'):
        client.get('/v1/x')
    with pytest.raises(LoopsError, match='non-JSON'):
        client.get('/v1/x')


# ------------------------------------------------------------ against the sandbox

def test_check_key_returns_the_team_name(sandbox):
    assert client_for(sandbox).check_key() == 'Sandbox team'


def test_delivered(sandbox):
    outcome = client_for(sandbox).send(upsert(firstName='Ada'))
    assert outcome == Outcome('delivered', 200, None, 1, 0, None, None)
    [contact] = sandbox.state()['contacts']
    assert (contact['userId'], contact['firstName']) == ('u1', 'Ada')
    [logged] = api_requests(sandbox)
    assert (logged['method'], logged['path'], logged['status']) == (
        'PUT', CONTACT_UPSERT.path, 200)


def test_event_already_sent_with_our_key_is_already_delivered(sandbox):
    client = client_for(sandbox)
    assert client.send(event()).status == 'delivered'
    outcome = client.send(event())
    assert (outcome.status, outcome.http_status, outcome.attempts) == ('already_delivered', 409, 1)
    assert len(sandbox.state()['events']) == 1


@pytest.mark.parametrize('request_, status, loops_says', [
    (upsert(email='not-an-email'), 400, 'Invalid email address.'),
    (upsert(note='x' * 1_100_000), 413, 'Payload too large'),
])
def test_permanent_errors_fail_at_once(sandbox, request_, status, loops_says):
    outcome = client_for(sandbox).send(request_)
    assert outcome.status == 'failed'
    assert (outcome.http_status, outcome.reason, outcome.attempts) == (status, f'http_{status}', 1)
    assert loops_says in outcome.message
    assert loops_says in outcome.response_body
    assert len(api_requests(sandbox)) == 1


@pytest.mark.parametrize('path, status, loops_says', [
    ('/v1/nothing-here', 404, 'Not found'),
    (EVENT_SEND.path, 405, 'Method not allowed'),
])
def test_get_fails_at_once_on_a_permanent_answer(sandbox, path, status, loops_says):
    with pytest.raises(LoopsError, match=f'HTTP {status}: {loops_says}') as raised:
        client_for(sandbox).get(path)
    assert raised.value.http_status == status
    assert len(api_requests(sandbox)) == 1


def test_409_without_our_key_is_a_failure(sandbox):
    client = client_for(sandbox)
    client.send(upsert('a'))
    client.send(upsert('b'))
    # email of contact a, userId of contact b: two different contacts.
    clash = contact_upsert({'email': 'a@example.com', 'userId': 'b'}, 'user:b', NO_STAMP, 'test')
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
    # The second call was refused by the client itself: one 401 in all.
    assert [r['status'] for r in api_requests(sandbox)] == [401]


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
        client = client_for(sandbox, rate=3, max_attempts=12, backoff_base=0.1)
        outcome = client.send(upsert())
    finally:
        stop.set()
        neighbour.join()
    assert outcome.status == 'delivered'
    assert outcome.rate_limited >= 2
    assert outcome.attempts == outcome.rate_limited + 1
    # The bucket paused for the 429s: that wait is reported as throttling.
    assert client.throttled_seconds >= PAUSE_SECONDS


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
    assert len(state['events']) == (1 if request_.spec.keyed else 0)


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


def test_get_returns_json(sandbox):
    client = client_for(sandbox)
    assert [item['id'] for item in client.get('/v1/lists')] == ['list_news', 'list_product']
    assert client.get('/v1/contacts/properties?list=custom') == []


def test_secrets_stay_out_of_reprs_messages_outcomes_and_pickles(sandbox):
    client = client_for(sandbox)
    texts = [repr(client), repr(client.throttler), repr(client.caller)]
    texts.append(repr(client.send(upsert(email='bad'))))
    sandbox.configure(fail_before=1.0)
    texts.append(repr(client_for(sandbox, max_attempts=2).send(upsert())))
    assert 'api_key=' in texts[0]
    texts.append(repr(vars(client)))   # what a traceback's locals would show
    texts.append(repr(vars(client.caller)))
    for text in texts:
        assert KEY not in text
    # A pickle carries the key (a worker needs it), but only inside the auth object.
    assert repr(vars(pickle.loads(pickle.dumps(client)).caller)).count(KEY) == 0


def test_the_key_is_redacted_from_answers(sandbox):
    # The sandbox names the offending property in its answer: here, the key itself.
    outcome = client_for(sandbox).send(upsert(**{KEY: {"nested": 1}}))
    assert outcome.status == 'failed'
    assert KEY not in outcome.response_body and KEY not in outcome.message
    assert '[redacted]' in outcome.response_body


def test_bodies_are_ascii_escaped_json_and_lone_surrogates_are_sent(sandbox):
    # A lone surrogate is valid JSON text ("\ud800") but not valid UTF-8.
    client = client_for(sandbox)
    outcomes = [client.send(upsert(city='São Paulo 紹介')),
                client.send(upsert('u2', odd='x\ud800y'))]
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


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to `target`; notes who called."""
    target = ''
    seen: list = []

    def _answer(self):
        self.seen.append((self.command, self.path, self.headers.get('Authorization')))
        self.send_response(302)
        self.send_header('Location', self.target)
        self.send_header('Content-Length', '0')
        self.end_headers()

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *args):
        pass


def test_redirects_are_not_followed():
    class Handler(_Redirecting):
        seen = []
    servers = [http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler) for _ in range(2)]
    elsewhere = f'http://127.0.0.1:{servers[1].server_address[1]}/collect'
    Handler.target = elsewhere
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base_url = f'http://127.0.0.1:{servers[0].server_address[1]}/api'
        outcome = LoopsClient(base_url, KEY, max_attempts=1).send(upsert())
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert (outcome.status, outcome.reason, outcome.http_status) == ('failed', 'http_302', 302)
    # One request, to the API; none followed the redirect with the key.
    assert Handler.seen == [('PUT', '/api/v1/contacts/update', f'Bearer {KEY}')]


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
        sessions.append(client.caller.session())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(session) for session in sessions}) == 3
    assert client.caller.open_sessions == 3
    client.close()
    assert client.caller.open_sessions == 0


def test_an_account_with_many_properties_reads_whole():
    # Its answer is longer than a failure record keeps of a body.
    custom = [{'key': f'property{n}', 'label': f'Property {n}', 'type': 'string'}
              for n in range(80)]
    with LoopsSandbox(KEY, custom_properties=custom) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        try:
            properties = client.get('/v1/contacts/properties?list=custom')
        finally:
            client.close()
    assert [p['key'] for p in properties] == [f'property{n}' for n in range(80)]
