"""The sandbox's workflows and event patterns over HTTP: the endpoints as
Loops' JS SDK (npm loops 7.3.0) and OpenAPI spec show them, and the record
of every trigger the account's live workflows set off."""
import json
import os
import signal
import subprocess
import sys
from urllib.parse import quote

import pytest
import requests

from pipeline.local.sandbox import LoopsSandbox, account_fixture

KEY = 'workflow-test-key'
WELCOME = {'id': 'wf_welcome', 'name': 'Welcome', 'status': 'Sending',
           'trigger': {'typeName': 'SignupTrigger'},
           'createdAt': '2026-01-01T00:00:00.000Z', 'updatedAt': '2026-03-01T00:00:00.000Z'}
PRO = {'id': 'wf_pro', 'name': 'Went pro', 'status': 'Sending',
       'updatedAt': '2026-02-01T00:00:00.000Z',
       'trigger': {'typeName': 'ContactPropertyTrigger', 'reEligible': True,
                   'contactPropertyQuery': {'key': 'plan',
                                            'is': {'operator': 'equal', 'value': 'pro'},
                                            'was': {'operator': 'not_equal', 'value': 'pro'}}}}
PAID = {'id': 'wf_paid', 'name': 'Paid', 'status': 'Sending',
        'trigger': {'typeName': 'EventTrigger', 'eventName': 'Order Paid'}}
NEWS = {'id': 'wf_news', 'name': 'News', 'status': 'Sending',
        'trigger': {'typeName': 'AddToListTrigger', 'mailingListId': 'list_news',
                    'reEligible': True}}
PAUSED = {'id': 'wf_paused', 'name': 'Old welcome', 'status': 'Paused',
          'trigger': {'typeName': 'SignupTrigger'}}
DRAFT = {'id': 'wf_draft', 'name': 'Draft paid', 'status': 'Draft',
         'trigger': {'typeName': 'EventTrigger', 'eventName': 'Order Paid'}}
SIGNUP = {'id': 'cle1a2b3c004yl70d5e6f7g8h', 'eventName': 'signup',
          'eventProperties': [{'name': 'plan', 'type': 'string'},
                              {'name': 'trialDays', 'type': 'number'}]}


class Client:
    def __init__(self, sandbox: LoopsSandbox, key: str = KEY):
        self.base_url = sandbox.base_url
        self.session = requests.Session()
        self.session.headers['Authorization'] = f'Bearer {key}'

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=5)

    def send(self, method: str, path: str, body: dict) -> requests.Response:
        return self.session.request(method, self.base_url + path, json=body, timeout=5)


@pytest.fixture
def sandbox():
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME, PRO, PAID, NEWS, PAUSED, DRAFT],
                      event_patterns=[SIGNUP]) as running:
        yield running


@pytest.fixture
def client(sandbox):
    return Client(sandbox)


def triggered(sandbox) -> list:
    return [(t['workflow_id'], t['trigger'], t['email'], t['detail'])
            for t in sandbox.state()['triggers']]


# ------------------------------------------------------------------ endpoints

def test_a_workflow_as_get_workflow_returns_it(client):
    # The shape of the JS SDK README's getWorkflow example.
    assert client.get('/v1/workflows/wf_welcome').json() == {
        'id': 'wf_welcome', 'url': 'https://app.loops.so/workflows/wf_welcome',
        'status': 'Sending', 'name': 'Welcome', 'mailingListId': None,
        'rootNodeId': 'wf_welcome-trigger', 'workflowRevisionId': 'wf_welcome-revision-1',
        'nodes': {'wf_welcome-trigger': {'typeName': 'SignupTrigger',
                                         'nextNodeIds': ['wf_welcome-email']},
                  'wf_welcome-email': {'typeName': 'SendEmailAction', 'nextNodeIds': [],
                                       'emailMessageId': None, 'subject': 'Welcome'}}}
    nodes = client.get('/v1/workflows/wf_pro').json()['nodes']
    assert nodes['wf_pro-trigger'] == {
        'typeName': 'ContactPropertyTrigger', 'nextNodeIds': ['wf_pro-email'],
        'contactPropertyQuery': PRO['trigger']['contactPropertyQuery'], 'reEligible': True}
    assert client.get('/v1/workflows/wf_paid').json()['nodes']['wf_paid-trigger'] == {
        'typeName': 'EventTrigger', 'nextNodeIds': ['wf_paid-email'],
        'eventName': 'Order Paid', 'reEligible': False}
    missing = client.get('/v1/workflows/nope')
    assert (missing.status_code, missing.json()) == (404, {'message': 'Workflow not found.'})


def test_workflows_are_listed_most_recently_updated_first_in_pages():
    many = [{'id': f'wf{n:02}', 'name': f'W{n}', 'status': 'Draft',
             'updatedAt': f'2026-01-{n:02}T00:00:00.000Z',
             'trigger': {'typeName': 'SignupTrigger'}} for n in range(1, 26)]
    with LoopsSandbox(KEY, rate_limit=None, workflows=many) as sandbox:
        client = Client(sandbox)
        first = client.get('/v1/workflows?perPage=10').json()
        assert first['pagination'] == {
            'totalResults': 25, 'returnedResults': 10, 'perPage': 10, 'totalPages': 3,
            'nextCursor': 'wf15',
            'nextPage': f'{sandbox.base_url}/v1/workflows?cursor=wf15&perPage=10'}
        assert first['data'][0] == {'id': 'wf25', 'url': 'https://app.loops.so/workflows/wf25',
                                    'name': 'W25', 'createdAt': '2026-01-01T00:00:00.000Z',
                                    'updatedAt': '2026-01-25T00:00:00.000Z'}
        ids, cursor = [], None
        while True:
            page = client.get('/v1/workflows?perPage=10'
                              + (f'&cursor={cursor}' if cursor else '')).json()
            ids += [item['id'] for item in page['data']]
            cursor = page['pagination']['nextCursor']
            if cursor is None:
                assert page['pagination']['nextPage'] is None
                break
        assert ids == [f'wf{n:02}' for n in range(25, 0, -1)]
        assert client.get('/v1/workflows').json()['pagination']['perPage'] == 20


@pytest.mark.parametrize('query', ['perPage=9', 'perPage=51', 'perPage=x', 'cursor=nope'])
def test_a_bad_page_request_is_refused(client, query):
    for path in ('/v1/workflows', '/v1/event-patterns'):
        refused = client.get(f'{path}?{query}')
        assert refused.status_code == 400 and list(refused.json()) == ['message']


def test_event_patterns_by_id_and_by_name(client):
    listed = client.get('/v1/event-patterns').json()
    assert listed['data'] == [{'id': SIGNUP['id'], 'eventName': 'signup',
                               'incomingWebhookPlatform': None}]
    assert listed['pagination']['totalResults'] == 1
    whole = {**SIGNUP, 'incomingWebhookPlatform': None}
    assert client.get(f'/v1/event-patterns/{SIGNUP["id"]}').json() == whole
    assert client.get('/v1/event-patterns/by-name/signup').json() == whole
    for path in ('/v1/event-patterns/by-name/Signup', '/v1/event-patterns/nope'):
        missing = client.get(path)
        assert (missing.status_code, missing.json()) == (404, {'message':
                                                               'Event pattern not found.'})


def test_an_event_with_a_new_name_becomes_an_event_pattern(client):
    name = 'Order Paid / EU'
    assert client.send('POST', '/v1/events/send', {
        'eventName': name, 'email': 'ada@example.com',
        'eventProperties': {'total': 12.5, 'coupon': 'X', 'gift': False}}).status_code == 200
    pattern = client.get(f'/v1/event-patterns/by-name/{quote(name, safe="")}').json()
    assert (pattern['eventName'], pattern['eventProperties']) == (name, [
        {'name': 'total', 'type': 'number'}, {'name': 'coupon', 'type': 'string'},
        {'name': 'gift', 'type': 'boolean'}])
    assert client.get(f'/v1/event-patterns/{pattern["id"]}').json() == pattern


@pytest.mark.parametrize('setting, status', [('forbidden', 403), ('missing', 404)])
def test_a_key_without_workflow_access(sandbox, client, setting, status):
    sandbox.configure(workflow_endpoints=setting)
    for path in ('/v1/workflows', '/v1/workflows/wf_welcome', '/v1/event-patterns',
                 '/v1/event-patterns/by-name/signup'):
        assert client.get(path).status_code == status
    assert client.get('/v1/lists').status_code == 200
    sandbox.configure(workflow_endpoints='available')
    assert client.get('/v1/workflows').status_code == 200


# ------------------------------------------------------------------- triggers

def test_a_contact_created_through_the_api_sets_off_live_signup_workflows(sandbox, client):
    client.send('PUT', '/v1/contacts/update', {'email': 'a@example.com'})
    client.send('POST', '/v1/contacts/create', {'email': 'b@example.com'})
    client.send('POST', '/v1/events/send', {'eventName': 'Visited', 'email': 'c@example.com'})
    client.send('PUT', '/v1/contacts/update', {'email': 'a@example.com', 'firstName': 'Ada'})
    assert triggered(sandbox) == [('wf_welcome', 'SignupTrigger', email, None)
                                  for email in ('a@example.com', 'b@example.com',
                                                'c@example.com')]


def test_seeds_and_csv_imports_set_off_no_signup_workflow():
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME, PRO],
                      contacts=[{'email': 'seed@example.com', 'plan': 'pro'}]) as sandbox:
        sandbox.import_csv('Email,plan\nnew@example.com,free\nseed@example.com,free\n')
        assert sandbox.state()['triggers'] == []
        sandbox.import_csv('Email,plan\nnew@example.com,pro\n')
        assert triggered(sandbox) == [('wf_pro', 'ContactPropertyTrigger', 'new@example.com',
                                       {'key': 'plan', 'was': 'free', 'is': 'pro'})]


def test_a_property_trigger_goes_off_when_was_and_is_both_hold(sandbox, client):
    for plan in ('free', 'pro', 'pro', 'business', 'pro', None):
        client.send('PUT', '/v1/contacts/update', {'email': 'a@example.com', 'plan': plan})
    changes = [t[3] for t in triggered(sandbox) if t[0] == 'wf_pro']
    assert changes == [{'key': 'plan', 'was': 'free', 'is': 'pro'},
                       {'key': 'plan', 'was': 'business', 'is': 'pro'}]


def test_a_contact_created_with_the_value_counts_as_a_change_from_none(sandbox, client):
    client.send('PUT', '/v1/contacts/update', {'email': 'a@example.com', 'plan': 'pro'})
    assert [t[:2] for t in triggered(sandbox)] == [('wf_welcome', 'SignupTrigger'),
                                                   ('wf_pro', 'ContactPropertyTrigger')]


def test_list_and_event_triggers_and_paused_or_draft_workflows_never(sandbox, client):
    email = 'a@example.com'
    client.send('PUT', '/v1/contacts/update', {'email': email})
    for subscribed in (True, True, False, True):
        client.send('PUT', '/v1/contacts/update',
                    {'email': email, 'mailingLists': {'list_news': subscribed}})
    for name in ('Order Paid', 'order paid', 'Order Paid'):
        client.send('POST', '/v1/events/send', {'eventName': name, 'email': email})
    assert [t[0] for t in triggered(sandbox)] == [
        'wf_welcome', 'wf_news', 'wf_news', 'wf_paid']
    assert triggered(sandbox)[1][3] == {'mailingListId': 'list_news'}
    assert triggered(sandbox)[3][3] == {'eventName': 'Order Paid'}


def test_a_workflow_with_a_mailing_list_takes_only_its_contacts():
    listed = {**WELCOME, 'mailingListId': 'list_product'}
    with LoopsSandbox(KEY, rate_limit=None, workflows=[listed]) as sandbox:
        client = Client(sandbox)
        client.send('PUT', '/v1/contacts/update', {'email': 'a@example.com'})
        client.send('PUT', '/v1/contacts/update', {'email': 'b@example.com',
                                                   'mailingLists': {'list_product': True}})
        assert [t[2] for t in triggered(sandbox)] == ['b@example.com']


def test_reset_forgets_the_triggers_but_keeps_the_workflows(sandbox, client):
    client.send('PUT', '/v1/contacts/update', {'email': 'a@example.com'})
    sandbox.reset()
    assert sandbox.state()['triggers'] == []
    client.send('PUT', '/v1/contacts/update', {'email': 'a@example.com'})
    assert len(sandbox.state()['triggers']) == 1
    entry = sandbox.state()['triggers'][0]
    assert entry == {'workflow_id': 'wf_welcome', 'workflow_name': 'Welcome',
                     'trigger': 'SignupTrigger', 'contact_id': entry['contact_id'],
                     'email': 'a@example.com', 'userId': None, 'detail': None}


# ------------------------------------------------------------------- fixtures

@pytest.mark.parametrize('workflow, says', [
    ({'name': 'x', 'status': 'Live', 'trigger': {'typeName': 'SignupTrigger'}}, 'status'),
    ({'status': 'Sending', 'trigger': {'typeName': 'SignupTrigger'}}, 'name'),
    ({'name': 'x', 'status': 'Sending'}, 'trigger'),
    ({'name': 'x', 'status': 'Sending', 'trigger': {'typeName': 'TimerAction'}}, 'trigger'),
    ({'name': 'x', 'status': 'Sending', 'trigger': {'typeName': 'EventTrigger'}}, 'eventName'),
    ({'name': 'x', 'status': 'Sending', 'trigger': {
        'typeName': 'ContactPropertyTrigger', 'contactPropertyQuery': {
            'key': 'd', 'is': {'operator': 'between', 'value': 'a'},
            'was': {'operator': 'any', 'value': ''}}}}, 'between'),
    ({'name': 'x', 'status': 'Sending', 'trigger': {'typeName': 'SignupTrigger'},
      'colour': 'red'}, 'unknown keys'),
])
def test_a_workflow_fixture_that_cannot_be_served_is_refused(workflow, says):
    with pytest.raises(ValueError, match=says):
        LoopsSandbox(KEY, workflows=[workflow])


def test_an_account_file_gives_the_constructor_arguments(tmp_path):
    path = tmp_path / 'account.json'
    path.write_text(json.dumps({'team_name': 'Acme', 'workflows': [WELCOME],
                                'event_patterns': [SIGNUP]}))
    with LoopsSandbox(KEY, rate_limit=None, **account_fixture(str(path))) as sandbox:
        client = Client(sandbox)
        assert client.get('/v1/api-key').json()['teamName'] == 'Acme'
        assert [w['id'] for w in client.get('/v1/workflows').json()['data']] == ['wf_welcome']
    path.write_text(json.dumps({'workflow': []}))
    with pytest.raises(ValueError, match='unknown keys'):
        account_fixture(str(path))


def test_the_command_serves_an_account_file(tmp_path):
    path = tmp_path / 'account.json'
    path.write_text(json.dumps({'team_name': 'Acme', 'workflows': [WELCOME]}))
    env = dict(os.environ, LOOPS_API_KEY=KEY)
    process = subprocess.Popen(
        [sys.executable, '-m', 'pipeline.local.sandbox_cli', '--port', '0', '--account',
         str(path), '--error_shape', 'error', '--workflow_endpoints', 'forbidden'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base_url = process.stdout.readline().split()[-1]
        headers = {'Authorization': f'Bearer {KEY}'}
        assert requests.get(base_url + '/v1/api-key', headers=headers,
                            timeout=5).json()['teamName'] == 'Acme'
        refused = requests.get(base_url + '/v1/workflows', headers=headers, timeout=5)
        assert (refused.status_code, refused.json()) == (
            403, {'success': False, 'error': 'This API key has no access to workflows.'})
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
