"""The Loops sandbox, over real HTTP: the API it imitates, its limits and its faults."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from pipeline.local.sandbox import LoopsSandbox

API_KEY = 'test-key-0123'
EMAIL = 'ada@example.com'
TOO_LONG = 'Some body key or value is longer than allowable'


class Client:
    """A keep-alive session against one sandbox, authenticated unless told otherwise."""

    def __init__(self, sandbox: LoopsSandbox, api_key: str = API_KEY):
        self.base_url = sandbox.base_url
        self.session = requests.Session()
        self.session.headers['Authorization'] = f'Bearer {api_key}'

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault('timeout', 5)
        return self.session.request(method, self.base_url + path, **kwargs)

    def update(self, body: dict) -> requests.Response:
        return self.call('PUT', '/v1/contacts/update', json=body)

    def event(self, body: dict, key: str | None = None) -> requests.Response:
        headers = {'Idempotency-Key': key} if key is not None else {}
        return self.call('POST', '/v1/events/send', json=body, headers=headers)


@pytest.fixture
def sandbox():
    with LoopsSandbox(API_KEY, rate_limit=None, seed=1) as running:
        yield running


@pytest.fixture
def client(sandbox):
    return Client(sandbox)


def only_contact(sandbox: LoopsSandbox) -> dict:
    contacts = sandbox.state()['contacts']
    assert len(contacts) == 1, contacts
    return contacts[0]


# ----------------------------------------------------------------------- auth

def test_api_key_check_answers_the_team_name(client):
    response = client.call('GET', '/v1/api-key')
    assert response.status_code == 200
    assert response.json() == {'success': True, 'teamName': 'Sandbox team'}


@pytest.mark.parametrize('authorization', [
    None, f'Bearer {API_KEY}x', f'Basic {API_KEY}', API_KEY, f'bearer  {API_KEY}',
])
def test_a_bad_authorization_header_gets_401(sandbox, authorization):
    headers = {'Authorization': authorization} if authorization else {}
    response = requests.get(sandbox.base_url + '/v1/api-key', headers=headers, timeout=5)
    assert response.status_code == 401
    # loops-openapi.yaml 82-101: "error" is there, deprecated.
    assert response.json() == {'success': False, 'message': 'Invalid API key',
                               'error': 'Invalid API key'}
    assert sandbox.state()['requests'][0]['status'] == 401


@pytest.mark.parametrize('method, path, status', [
    ('GET', '/v1/nothing-here', 404),
    ('GET', '/v1/events/send', 405),
    ('DELETE', '/v1/contacts/update', 405),
])
def test_unknown_paths_and_wrong_methods(client, method, path, status):
    response = client.call(method, path)
    assert response.status_code == status
    assert response.json()['success'] is False


@pytest.mark.parametrize('authorized', [True, False])
def test_every_answer_is_json_with_rate_limit_headers(sandbox, authorized):
    client = Client(sandbox, API_KEY if authorized else 'wrong')
    for path in ('/v1/api-key', '/v1/unknown', '/v1/lists'):
        response = client.call('GET', path)
        assert response.headers['Content-Type'] == 'application/json'
        assert int(response.headers['x-ratelimit-remaining']) >= 0
        assert int(response.headers['x-ratelimit-limit']) > 0


# ---------------------------------------------------------------- error shapes

# Each shape as Loops' spec and SDKs show it (pipeline/local/error_shapes.py).
@pytest.mark.parametrize('shape, refused, key_rejected, workflow_missing', [
    ('documented', {'success': False, 'message': 'Contact not found.'},
     {'success': False, 'message': 'Invalid API key', 'error': 'Invalid API key'},
     {'message': 'Workflow not found.'}),
    ('message', {'success': False, 'message': 'Contact not found.'},
     {'success': False, 'message': 'Invalid API key'},
     {'success': False, 'message': 'Workflow not found.'}),
    ('error', {'success': False, 'error': 'Contact not found.'}, {'error': 'Invalid API key'},
     {'success': False, 'error': 'Workflow not found.'}),
    ('nested', {'success': False, 'error': {'message': 'Contact not found.'}},
     {'success': False, 'error': {'message': 'Invalid API key'}},
     {'success': False, 'error': {'message': 'Workflow not found.'}}),
])
def test_errors_come_in_the_shape_set(sandbox, shape, refused, key_rejected,
                                      workflow_missing):
    sandbox.configure(error_shape=shape)
    client = Client(sandbox)
    answer = client.event({'eventName': 'Paid', 'userId': 'nobody'})
    assert (answer.status_code, answer.json()) == (400, refused)
    answer = Client(sandbox, 'wrong').call('GET', '/v1/lists')
    assert (answer.status_code, answer.json()) == (401, key_rejected)
    answer = client.call('GET', '/v1/workflows/nope')
    assert (answer.status_code, answer.json()) == (404, workflow_missing)


def test_errors_as_plain_text(sandbox):
    sandbox.configure(error_shape='text')
    answer = Client(sandbox).event({'eventName': 'Paid', 'userId': 'nobody'})
    assert (answer.status_code, answer.text) == (400, 'Contact not found.')
    assert answer.headers['Content-Type'].startswith('text/plain')
    assert Client(sandbox).call('GET', '/v1/api-key').json()['success'] is True


def test_an_unknown_shape_is_refused(sandbox):
    with pytest.raises(ValueError, match='error_shape'):
        sandbox.configure(error_shape='xml')
    with pytest.raises(ValueError, match='error_shape'):
        LoopsSandbox(error_shape='xml')


# ----------------------------------------------------------------- validation

VALID = {'email': EMAIL}


@pytest.mark.parametrize('method, path, body, headers, message', [
    ('PUT', '/v1/contacts/update', b'not json', {}, 'must be a JSON object'),
    ('PUT', '/v1/contacts/update', b'[1, 2]', {}, 'must be a JSON object'),
    ('PUT', '/v1/contacts/update', b'{"email": "ada@example.com", "score": NaN}', {},
     'must be a JSON object'),
    ('PUT', '/v1/contacts/update', {'email': 'ada.example.com'}, {}, 'Invalid email'),
    ('PUT', '/v1/contacts/update', {'email': 'ada@example'}, {}, 'Invalid email'),
    ('PUT', '/v1/contacts/update', {'firstName': 'Ada'}, {}, 'email or a userId'),
    ('PUT', '/v1/contacts/update', {**VALID, 'tags': ['a', 'b']}, {}, 'nested objects'),
    ('PUT', '/v1/contacts/update', {**VALID, 'address': {'city': 'Paris'}}, {},
     'nested objects'),
    ('PUT', '/v1/contacts/update', {**VALID, 'bio': 'x' * 501}, {}, TOO_LONG),
    ('PUT', '/v1/contacts/update', {**VALID, 'k' * 501: 1}, {}, TOO_LONG),
    ('PUT', '/v1/contacts/update', {**VALID, 'teamId': 't1'}, {}, 'reserved'),
    ('PUT', '/v1/contacts/update', {**VALID, 'id': 'c1'}, {}, 'reserved'),
    ('PUT', '/v1/contacts/update', {**VALID, 'subscribed': 'yes'}, {},
     'Invalid value for "subscribed": '),
    ('PUT', '/v1/contacts/update', {**VALID, 'mailingLists': ['list_news']}, {},
     'Invalid value for "mailingLists": '),
    ('PUT', '/v1/contacts/update', {**VALID, 'mailingLists': {'list_news': 'true'}}, {},
     'Invalid value for "mailingLists": '),
    ('PUT', '/v1/contacts/update', {'email': EMAIL, 'userId': ''}, {},
     'Invalid value for "userId": '),
    ('PUT', '/v1/contacts/update', {**VALID, 'mailingLists': {'list_gone': True}}, {},
     'Unknown mailing list id: list_gone'),
    ('POST', '/v1/contacts/create', {'userId': 'u1'}, {}, 'email is required'),
    ('POST', '/v1/events/send', VALID, {}, 'eventName is required'),
    ('POST', '/v1/events/send', {'eventName': 'Signed Up'}, {}, 'email or a userId'),
    ('POST', '/v1/events/send', {**VALID, 'eventName': 'x', 'eventProperties': 'pro'}, {},
     'Invalid value for "eventProperties": '),
    ('POST', '/v1/events/send', {**VALID, 'eventName': 'x', 'eventProperties': {'a': [1]}},
     {}, 'nested objects'),
    ('POST', '/v1/events/send',
     {**VALID, 'eventName': 'x', 'eventProperties': {'note': 'x' * 501}}, {}, TOO_LONG),
    ('POST', '/v1/events/send', {**VALID, 'eventName': 'x', 'plan': {'a': 1}}, {},
     'nested objects'),
    ('POST', '/v1/events/send', {**VALID, 'eventName': 'x', 'updatedAt': 1}, {}, 'reserved'),
    ('POST', '/v1/events/send', {**VALID, 'eventName': 'x'}, {'Idempotency-Key': 'k' * 101},
     'at most 100'),
    ('GET', '/v1/contacts/find', None, {}, 'exactly one'),
    ('GET', '/v1/contacts/find?email=ada@example.com&userId=u1', None, {}, 'exactly one'),
    ('POST', '/v1/contacts/delete', {}, {}, 'exactly one'),
    ('POST', '/v1/contacts/delete', {'email': EMAIL, 'userId': 'u1'}, {}, 'exactly one'),
])
def test_invalid_requests_get_400_and_store_nothing(client, sandbox, method, path, body,
                                                     headers, message):
    if isinstance(body, bytes):
        response = client.call(method, path, data=body, headers=headers)
    else:
        response = client.call(method, path, json=body, headers=headers)
    assert response.status_code == 400
    assert response.json()['success'] is False
    assert message in response.json()['message']
    assert sandbox.state()['contacts'] == []
    assert sandbox.state()['events'] == []


def test_a_body_over_1_mb_gets_413_and_the_session_goes_on(client, sandbox):
    body = json.dumps({**VALID, 'notes': 'x' * 1_000_000})
    response = client.call('PUT', '/v1/contacts/update', data=body)
    assert response.status_code == 413
    assert client.call('GET', '/v1/api-key').status_code == 200
    assert sandbox.state()['contacts'] == []


@pytest.mark.parametrize('name', ['Plan:Upgraded', ':', 'a:b:c', 'Signed Up:'])
def test_an_event_name_with_a_colon_is_refused(client, sandbox, name):
    response = client.event({'eventName': name, 'email': EMAIL})
    assert response.status_code == 400
    assert response.json() == {'success': False,
                               'message': 'Event names cannot contain colons (:).'}
    assert sandbox.state()['events'] == [] and sandbox.state()['contacts'] == []


@pytest.mark.parametrize('path, body, message', [
    ('/v1/contacts/update', {**VALID, '': 1}, 'Invalid property name "".'),
    ('/v1/contacts/update', {**VALID, '  ': 'x'}, 'Invalid property name "  ".'),
    ('/v1/contacts/update', {**VALID, '\t': None}, 'Invalid property name "\t".'),
    ('/v1/events/send', {**VALID, 'eventName': 'Paid', ' ': 1},
     'Invalid property name " ".'),
    ('/v1/events/send', {**VALID, 'eventName': 'Paid', 'eventProperties': {'': 1}},
     'Invalid event property name "".'),
    ('/v1/events/send', {**VALID, 'eventName': 'Paid', 'eventProperties': {'ok': 1, '   ': 2}},
     'Invalid event property name "   ".'),
])
def test_an_empty_or_blank_key_is_refused_by_name(client, sandbox, path, body, message):
    method = 'PUT' if path == '/v1/contacts/update' else 'POST'
    response = client.call(method, path, json=body)
    assert response.status_code == 400
    assert response.json() == {'success': False, 'message': message}
    assert sandbox.state()['events'] == [] and sandbox.state()['contacts'] == []


NAMED_KEY = re.compile(r'^Invalid value for "(?P<key>[^"]*)": ')


@pytest.mark.parametrize('path, body, key', [
    ('/v1/contacts/update', {**VALID, 'plan': {'tier': 'pro'}}, 'plan'),
    ('/v1/contacts/update', {**VALID, 'subscribed': 'no'}, 'subscribed'),
    ('/v1/contacts/update', {**VALID, 'mailingLists': ['list_news']}, 'mailingLists'),
    ('/v1/events/send', {**VALID, 'eventName': 'Paid', 'seats': [1, 2]}, 'seats'),
    ('/v1/events/send', {**VALID, 'eventName': 'Paid', 'eventProperties': {'n': [1]}},
     'eventProperties.n'),
    ('/v1/events/send', {**VALID, 'eventName': 'Paid', 'eventProperties': []},
     'eventProperties'),
])
def test_a_refused_value_is_named_so_a_client_can_drop_it_and_retry(client, sandbox, path,
                                                                    body, key):
    method = 'PUT' if path == '/v1/contacts/update' else 'POST'
    refused = client.call(method, path, json=body)
    assert refused.status_code == 400
    named = NAMED_KEY.match(refused.json()['message'])
    assert named and named.group('key') == key
    outer, _, inner = key.partition('.')
    if inner:
        retry = {**body, outer: {k: v for k, v in body[outer].items() if k != inner}}
    else:
        retry = {k: v for k, v in body.items() if k != outer}
    assert client.call(method, path, json=retry).status_code == 200


def test_other_refusals_name_the_list_or_the_reserved_key(client):
    unknown_list = client.update({**VALID, 'mailingLists': {'list_gone': True}})
    assert unknown_list.json()['message'] == 'Unknown mailing list id: list_gone.'
    reserved = client.update({**VALID, 'teamId': 't1'})
    assert reserved.json()['message'] == (
        '"teamId" is a reserved name and cannot be a contact property.')
    too_long = client.update({**VALID, 'bio': 'x' * 501})
    assert too_long.json()['message'] == TOO_LONG


# -------------------------------------------------------------------- contacts

def test_update_creates_a_subscribed_contact_then_merges(client, sandbox):
    created = client.update({'email': EMAIL, 'firstName': 'Ada', 'plan': 'free',
                             'mailingLists': {'list_news': True}})
    assert created.status_code == 200 and created.json()['success'] is True
    client.update({'email': EMAIL, 'lastName': 'Lovelace', 'plan': 'pro',
                   'mailingLists': {'list_product': False}})
    # The contact as find returns it (loops-openapi.yaml `Contact` 4161-4240): a
    # list it is not on is not there, userGroup is "" and optInStatus null.
    assert only_contact(sandbox) == {
        'id': created.json()['id'], 'email': EMAIL, 'userId': None, 'firstName': 'Ada',
        'lastName': 'Lovelace', 'source': 'API', 'subscribed': True, 'userGroup': '',
        'mailingLists': {'list_news': True}, 'optInStatus': None, 'plan': 'pro',
    }
    client.update({'email': EMAIL, 'mailingLists': {'list_news': False}})
    assert only_contact(sandbox)['mailingLists'] == {}


def test_subscribed_true_resubscribes_and_leaving_it_out_does_not(client, sandbox):
    client.update({'email': EMAIL})
    assert only_contact(sandbox)['subscribed'] is True
    client.update({'email': EMAIL, 'subscribed': False})
    assert only_contact(sandbox)['subscribed'] is False
    client.update({'email': EMAIL, 'firstName': 'Ada'})
    client.event({'eventName': 'Paid', 'email': EMAIL})
    assert only_contact(sandbox)['subscribed'] is False
    client.update({'email': EMAIL, 'subscribed': True})
    assert only_contact(sandbox)['subscribed'] is True


def test_null_resets_a_property(client, sandbox):
    client.update({'email': EMAIL, 'firstName': 'Ada', 'plan': 'pro'})
    client.update({'email': EMAIL, 'firstName': None, 'plan': None})
    contact = only_contact(sandbox)
    assert (contact['firstName'], contact['plan']) == (None, None)


def test_update_with_an_unknown_user_id_alone_is_refused(client, sandbox):
    response = client.update({'userId': 'u-unknown', 'firstName': 'Ada'})
    assert response.status_code == 400
    assert response.json()['message'] == ('userId not found and cannot create a new '
                                          'contact without an email.')
    assert sandbox.state()['contacts'] == []


def test_either_id_finds_the_contact_and_the_other_is_set(client, sandbox):
    first = client.update({'email': EMAIL}).json()['id']
    assert client.update({'email': EMAIL, 'userId': 'u1'}).json()['id'] == first
    assert client.update({'userId': 'u1', 'email': 'ada@new.example'}).json()['id'] == first
    contact = only_contact(sandbox)
    assert (contact['email'], contact['userId']) == ('ada@new.example', 'u1')


def test_ids_of_two_different_contacts_conflict(client, sandbox):
    client.update({'email': EMAIL, 'userId': 'u1'})
    client.update({'email': 'bob@example.com', 'userId': 'u2'})
    response = client.update({'email': EMAIL, 'userId': 'u2', 'firstName': 'X'})
    assert response.status_code == 409
    assert all(c['firstName'] is None for c in sandbox.state()['contacts'])


def test_create_refuses_an_email_or_user_id_in_use(client, sandbox):
    assert client.call('POST', '/v1/contacts/create',
                       json={'email': EMAIL, 'userId': 'u1'}).status_code == 200
    for body in ({'email': EMAIL.upper()}, {'email': 'other@example.com', 'userId': 'u1'}):
        assert client.call('POST', '/v1/contacts/create', json=body).status_code == 409
    assert len(sandbox.state()['contacts']) == 1


def test_find_and_delete(client, sandbox):
    contact_id = client.update({'email': EMAIL, 'userId': 'u1'}).json()['id']
    for query in (f'email={EMAIL.upper()}', 'userId=u1'):
        found = client.call('GET', f'/v1/contacts/find?{query}')
        assert [c['id'] for c in found.json()] == [contact_id]
    assert client.call('GET', '/v1/contacts/find?userId=u2').json() == []
    deleted = client.call('POST', '/v1/contacts/delete', json={'userId': 'u1'})
    assert deleted.json() == {'success': True, 'message': 'Contact deleted.'}
    again = client.call('POST', '/v1/contacts/delete', json={'email': EMAIL})
    assert again.status_code == 404
    assert sandbox.state()['contacts'] == []


def test_lists_and_properties(client):
    assert [l['id'] for l in client.call('GET', '/v1/lists').json()] == [
        'list_news', 'list_product']
    created = client.call('POST', '/v1/contacts/properties',
                          json={'name': 'planTier', 'type': 'string'})
    assert created.json() == {'success': True}
    custom = client.call('GET', '/v1/contacts/properties?list=custom').json()
    assert custom == [{'key': 'planTier', 'label': 'Plan Tier', 'type': 'string'}]
    every = client.call('GET', '/v1/contacts/properties?list=all').json()
    assert every == DEFAULT_PROPERTIES + custom


# GET /v1/contacts/properties?list=all, verbatim from the JS SDK's README
# (npm loops 7.3.0, "listContactProperties") and
# https://loops.so/docs/api-reference/list-contact-properties.
DEFAULT_PROPERTIES = [
    {'key': 'firstName', 'label': 'First Name', 'type': 'string'},
    {'key': 'lastName', 'label': 'Last Name', 'type': 'string'},
    {'key': 'email', 'label': 'Email', 'type': 'string'},
    {'key': 'notes', 'label': 'Notes', 'type': 'string'},
    {'key': 'source', 'label': 'Source', 'type': 'string'},
    {'key': 'userGroup', 'label': 'User Group', 'type': 'string'},
    {'key': 'userId', 'label': 'User Id', 'type': 'string'},
    {'key': 'subscribed', 'label': 'Subscribed', 'type': 'boolean'},
    {'key': 'createdAt', 'label': 'Created At', 'type': 'date'},
]


@pytest.mark.parametrize('body, message', [
    ({'name': 'planTier', 'type': 'string'}, 'Property already exists.'),
    ({'name': 'createdAt', 'type': 'date'}, 'Property already exists.'),
    ({'name': 'notes', 'type': 'string'}, 'Property already exists.'),
    ({'name': 'seats', 'type': 'list'}, 'Invalid property type'),
    ({'name': 'seats'}, 'Invalid property type'),
    ({'name': 'teamId', 'type': 'string'}, 'reserved'),
    ({'type': 'string'}, 'name is required'),
    ({'name': 'plan_tier', 'type': 'string'}, 'camelCase'),
])
def test_property_creation_refusals(client, body, message):
    client.call('POST', '/v1/contacts/properties', json={'name': 'planTier', 'type': 'string'})
    refused = client.call('POST', '/v1/contacts/properties', json=body)
    assert refused.status_code == 400 and message in refused.json()['message']
    assert [p['key'] for p in client.call(
        'GET', '/v1/contacts/properties?list=custom').json()] == ['planTier']


@pytest.mark.parametrize('body, message', [
    ({'notes': 'VIP'}, '"notes" cannot be set through the API.'),
    ({'optInStatus': 'accepted'}, '"optInStatus" cannot be set through the API.'),
    ({'createdAt': 'yesterday'}, 'Invalid value for "createdAt": must be a date.'),
    ({'createdAt': True}, 'Invalid value for "createdAt": must be a date.'),
    ({'seats': '12'}, 'Invalid value for "seats": must be a number.'),
    ({'beta': 'yes'}, 'Invalid value for "beta": must be a boolean.'),
    ({'firstName': 7}, 'Invalid value for "firstName": must be a string.'),
])
def test_values_must_fit_their_property(sandbox, client, body, message):
    for name, kind in (('seats', 'number'), ('beta', 'boolean')):
        client.call('POST', '/v1/contacts/properties', json={'name': name, 'type': kind})
    refused = client.update({'email': EMAIL, **body})
    assert (refused.status_code, refused.json()['message']) == (400, message)
    assert sandbox.state()['contacts'] == []


def test_typed_values_that_fit_are_stored(sandbox, client):
    client.call('POST', '/v1/contacts/properties', json={'name': 'seats', 'type': 'number'})
    for created_at in ('2026-11-01T10:00:00.000Z', 1793491200000, None):
        assert client.update({'email': EMAIL, 'createdAt': created_at, 'seats': 3,
                              'undeclared': 1}).status_code == 200
    contact = only_contact(sandbox)
    assert (contact['createdAt'], contact['seats'], contact['undeclared']) == (None, 3, 1)


def test_find_refuses_an_invalid_email(client):
    refused = client.call('GET', '/v1/contacts/find?email=not-an-email')
    assert refused.status_code == 400 and refused.json()['message'] == 'Invalid email address.'


def test_event_property_names_are_trimmed_and_nulls_refused_unless_accepted(client, sandbox):
    # Loops types event properties without null: refused by default.
    refused = client.event({'eventName': 'Paid', 'email': EMAIL,
                            'eventProperties': {'coupon': None}})
    assert refused.status_code == 400
    assert refused.json()['message'].startswith('Invalid value for "eventProperties.coupon"')
    sandbox.configure(null_event_properties='accept')
    assert client.event({'eventName': 'Paid', 'email': EMAIL,
                         'eventProperties': {' plan ': 'pro', 'coupon': None}}).status_code == 200
    assert sandbox.state()['events'][0]['eventProperties'] == {'plan': 'pro', 'coupon': None}


UNSUBSCRIBED = {'email': 'x@example.com', 'userId': 'u1', 'subscribed': False}


def test_a_sandbox_starts_with_the_contacts_it_is_given():
    with LoopsSandbox(API_KEY, rate_limit=None, contacts=[
            UNSUBSCRIBED, {'email': 'bob@example.com', 'plan': 'pro',
                           'mailingLists': {'list_news': True}}]) as sandbox:
        assert sandbox.state()['contacts'] == [
            {'id': 'contact-1', 'email': 'x@example.com', 'userId': 'u1', 'firstName': None,
             'lastName': None, 'source': 'API', 'subscribed': False, 'userGroup': '',
             'mailingLists': {}, 'optInStatus': None},
            {'id': 'contact-2', 'email': 'bob@example.com', 'userId': None,
             'firstName': None, 'lastName': None, 'source': 'API', 'subscribed': True,
             'userGroup': '', 'mailingLists': {'list_news': True}, 'optInStatus': None,
             'plan': 'pro'},
        ]
        client = Client(sandbox)
        found = client.call('GET', '/v1/contacts/find?userId=u1').json()
        assert [c['id'] for c in found] == ['contact-1']
        # Known by userId alone: no "Contact not found." for its events.
        assert client.event({'eventName': 'Paid', 'userId': 'u1'}).status_code == 200
        assert sandbox.state()['contacts'][0]['subscribed'] is False
        assert client.update({'userId': 'u1', 'subscribed': True}).status_code == 200
        assert sandbox.state()['contacts'][0]['subscribed'] is True


def test_reset_goes_back_to_the_starting_contacts():
    with LoopsSandbox(API_KEY, rate_limit=None, contacts=[UNSUBSCRIBED]) as sandbox:
        client = Client(sandbox)
        client.update({'userId': 'u1', 'firstName': 'Xavier', 'subscribed': True})
        client.update({'email': EMAIL})
        sandbox.reset()
        [contact] = sandbox.state()['contacts']
        assert {k: contact[k] for k in ('email', 'userId', 'firstName', 'subscribed')} == {
            'email': 'x@example.com', 'userId': 'u1', 'firstName': None, 'subscribed': False}


@pytest.mark.parametrize('contacts, message', [
    ([{'userId': 'u1'}], 'contacts[0]: An email is required'),
    ([{'email': 'not-an-email'}], 'contacts[0]: Invalid email address.'),
    ([UNSUBSCRIBED, {'email': 'X@example.com'}], 'contacts[1]: Email or userId'),
    ([{'email': EMAIL, 'subscribed': 'no'}], 'contacts[0]: Invalid value for "subscribed"'),
    ([{'email': EMAIL, 'id': 'c1'}], 'contacts[0]: "id" is a reserved name'),
])
def test_starting_contacts_follow_loops_rules(contacts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LoopsSandbox(API_KEY, contacts=contacts)


# ------------------------------------------------------------------ CSV import

CUSTOM_PROPERTIES = [{'key': 'plan', 'label': 'Plan', 'type': 'string'},
                     {'key': 'seats', 'label': 'Seats', 'type': 'number'},
                     {'key': 'beta', 'label': 'Beta', 'type': 'boolean'},
                     {'key': 'renewsAt', 'label': 'Renews At', 'type': 'date'}]
CSV_HEADER = ('Email,First Name,Last Name,User Group,Source,User ID,Subscribed,'
              'plan,seats,beta,renewsAt\n')


@pytest.fixture
def audience():
    """A sandbox with typed custom properties and one unsubscribed contact."""
    with LoopsSandbox(API_KEY, rate_limit=1, custom_properties=CUSTOM_PROPERTIES,
                      contacts=[UNSUBSCRIBED]) as running:
        yield running


def import_csv(sandbox: LoopsSandbox, text: str) -> requests.Response:
    return requests.post(sandbox.base_url.replace('/api', '/_sandbox/import_csv'),
                         data=text.encode('utf-8'), timeout=5,
                         headers={'Content-Type': 'text/csv'})


def contact_by_email(sandbox: LoopsSandbox, email: str) -> dict:
    [contact] = [c for c in sandbox.state()['contacts'] if c['email'] == email]
    return contact


def test_csv_import_creates_contacts_with_typed_values(audience):
    response = import_csv(audience, CSV_HEADER
                          + 'ada@example.com,Ada,Lovelace,admins,,u2,,pro,12,TRUE,2026-11-01\n'
                          + 'bob@example.com,Bob,,,Webinar,,false,,2.5,false,\n')
    assert response.status_code == 200
    assert response.json() == {'success': True, 'created': 2, 'updated': 0, 'errors': []}
    ada = contact_by_email(audience, 'ada@example.com')
    assert {k: v for k, v in ada.items() if k != 'id'} == {
        'email': 'ada@example.com', 'userId': 'u2', 'firstName': 'Ada', 'lastName': 'Lovelace',
        'source': 'CSV Upload', 'subscribed': True, 'userGroup': 'admins', 'mailingLists': {},
        'optInStatus': None, 'plan': 'pro', 'seats': 12, 'beta': True, 'renewsAt': '2026-11-01'}
    bob = contact_by_email(audience, 'bob@example.com')
    assert (bob['source'], bob['subscribed'], bob['seats'], bob['beta'], bob['lastName']) == (
        'Webinar', False, 2.5, False, None)
    # Not an API call: no rate limit (1/s here), no request log.
    assert audience.state()['requests'] == []


def test_csv_rows_match_by_user_id_then_email_and_update(audience):
    client = Client(audience)
    client.update({'email': 'bob@example.com', 'firstName': 'Bob', 'plan': 'free',
                   'source': 'Signup form'})
    result = audience.import_csv('User ID,Email,First Name,plan,seats\n'
                                 'u1,,Xavier,,3\n'
                                 ',BOB@example.com,,null,\n'
                                 'u3,bob@example.com,,,\n')
    assert result == {'created': 0, 'updated': 3, 'errors': []}
    xavier = contact_by_email(audience, 'x@example.com')
    assert (xavier['firstName'], xavier['seats'], xavier['subscribed']) == ('Xavier', 3, False)
    bob = contact_by_email(audience, 'bob@example.com')
    # An empty cell leaves a value, `null` clears it, the source is not the import's.
    assert (bob['firstName'], bob['plan'], bob['source'], bob['userId']) == (
        'Bob', None, 'Signup form', 'u3')


def test_csv_import_never_resubscribes_but_can_unsubscribe(audience):
    Client(audience).update({'email': EMAIL})
    result = audience.import_csv('Email,Subscribed\nx@example.com,true\n'
                                 f'{EMAIL},false\nnew@example.com,\n')
    assert result == {'created': 1, 'updated': 2, 'errors': []}
    assert contact_by_email(audience, 'x@example.com')['subscribed'] is False
    assert contact_by_email(audience, EMAIL)['subscribed'] is False
    assert contact_by_email(audience, 'new@example.com')['subscribed'] is True


def test_csv_rows_that_cannot_be_imported_are_reported_and_change_nothing(audience):
    response = import_csv(audience, CSV_HEADER
                          + 'other@example.com,Mallory,,,,u1,,,,,\n'
                          + ',NoEmail,,,,u9,,,,,\n'
                          + 'x@example.com,,,,,u7,,,,,\n'
                          + 'ok@example.com,Ok,,,,,,,,,\n'
                          + 'seats@example.com,,,,,,,,twelve,,\n'
                          + 'beta@example.com,,,,,,,,,yes,\n'
                          + 'sub@example.com,,,,,,maybe,,,,\n'
                          + 'not-an-email,,,,,,,,,,\n'
                          + 'short@example.com,too few\n'
                          + 'null,,,,,u1,,,,,\n')
    assert response.status_code == 200
    body = response.json()
    assert (body['created'], body['updated']) == (1, 0)
    assert body['errors'] == [
        {'row': 2, 'message': 'The contact with User ID "u1" has another email.'},
        {'row': 3, 'message': 'An email is required to create a contact.'},
        {'row': 4, 'message': 'The contact with Email "x@example.com" has another User ID.'},
        {'row': 6, 'message': 'Invalid value for "seats": must be a number.'},
        {'row': 7, 'message': 'Invalid value for "beta": must be true or false.'},
        {'row': 8, 'message': 'Invalid value for "Subscribed": must be true or false.'},
        {'row': 9, 'message': 'Invalid email address.'},
        {'row': 10, 'message': 'Expected 11 cells, found 2.'},
        {'row': 11, 'message': 'Invalid value for "Email": it cannot be cleared.'},
    ]
    emails = sorted(c['email'] for c in audience.state()['contacts'])
    assert emails == ['ok@example.com', 'x@example.com']
    assert contact_by_email(audience, 'x@example.com')['firstName'] is None


@pytest.mark.parametrize('header, message', [
    ('Email,email\n', 'Invalid column name "email".'),
    ('Email,teamId\n', '"teamId" is a reserved name and cannot be a contact property.'),
    ('Email,mailingLists\n', 'Invalid column name "mailingLists".'),
    ('Email,Favourite Colour\n', 'Invalid column name "Favourite Colour".'),
    ('Email,plan,plan\n', 'Duplicate column "plan".'),
    ('First Name,plan\n', 'The CSV file needs an "Email" or a "User ID" column.'),
    ('\n', 'The CSV file needs an "Email" or a "User ID" column.'),
])
def test_a_csv_header_that_cannot_be_used_imports_nothing(audience, header, message):
    response = import_csv(audience, header + 'ada@example.com,x\n')
    assert response.status_code == 400
    assert response.json() == {'success': False, 'message': message}
    assert len(audience.state()['contacts']) == 1


def test_a_csv_column_of_an_unknown_property_is_kept_as_text_and_quotes_work(audience):
    result = audience.import_csv('\ufeffEmail,nickname,seats\n'
                                 '"ada@example.com","Ada, ""the first""", 7 \n')
    assert result == {'created': 1, 'updated': 0, 'errors': []}
    ada = contact_by_email(audience, 'ada@example.com')
    assert (ada['nickname'], ada['seats']) == ('Ada, "the first"', 7)


# ---------------------------------------------------------------------- events

def test_an_event_with_a_new_email_creates_the_contact(client, sandbox):
    response = client.event({'eventName': 'Signed Up', 'email': EMAIL, 'userId': 'u1',
                             'plan': 'pro', 'eventProperties': {'via': 'ad', 'n': 2}},
                            key='k-1')
    assert response.json() == {'success': True}
    contact = only_contact(sandbox)
    assert (contact['email'], contact['userId'], contact['plan']) == (EMAIL, 'u1', 'pro')
    assert (contact['subscribed'], contact['source']) == (True, 'API')
    [event] = sandbox.state()['events']
    assert event['received_at'] == pytest.approx(time.time(), abs=5)
    assert {k: v for k, v in event.items() if k != 'received_at'} == {
        'eventName': 'Signed Up', 'email': EMAIL, 'userId': 'u1',
        'eventProperties': {'via': 'ad', 'n': 2}, 'idempotency_key': 'k-1',
        'contact_id': contact['id']}


def test_an_event_uses_the_contact_either_id_finds_and_sets_the_other(client, sandbox):
    # "If a contact is found for one of the values (e.g. `email`), the other
    # value (e.g. `userId`) will be updated" (loops-openapi.yaml 1520-1526).
    contact_id = client.update({'email': EMAIL, 'userId': 'u1'}).json()['id']
    for ids in ({'userId': 'u1'}, {'email': EMAIL}, {'email': EMAIL, 'userId': 'u9'}):
        assert client.event({'eventName': 'Paid', 'plan': 'pro', **ids}).status_code == 200
    contact = only_contact(sandbox)
    assert (contact['userId'], contact['plan']) == ('u9', 'pro')
    assert client.event({'eventName': 'Paid', 'userId': 'u9',
                         'email': 'ada@new.example'}).status_code == 200
    assert only_contact(sandbox)['email'] == 'ada@new.example'
    assert {e['contact_id'] for e in sandbox.state()['events']} == {contact_id}


def test_an_event_whose_ids_name_two_contacts_goes_to_the_user_ids(client, sandbox):
    client.update({'email': EMAIL, 'userId': 'u1'})
    bob = client.update({'email': 'bob@example.com', 'userId': 'u2'}).json()['id']
    response = client.event({'eventName': 'Paid', 'email': EMAIL, 'userId': 'u2'})
    assert response.status_code == 200
    assert [e['contact_id'] for e in sandbox.state()['events']] == [bob]
    assert [c['email'] for c in sandbox.state()['contacts']] == [EMAIL, 'bob@example.com']


def test_an_event_for_an_unknown_user_id_alone_is_refused(client, sandbox):
    response = client.event({'eventName': 'Paid', 'userId': 'u-unknown'})
    assert response.status_code == 400
    assert response.json()['message'] == 'Contact not found.'
    assert sandbox.state()['events'] == [] and sandbox.state()['contacts'] == []


def test_an_idempotency_key_is_used_once_within_a_day(client, sandbox):
    body = {'eventName': 'Paid', 'email': EMAIL}
    assert client.event(body, key='k1').status_code == 200
    reused = client.event(body, key='k1')
    assert reused.status_code == 409
    assert reused.json() == {'success': False,
                             'message': 'Idempotency key has already been used'}
    assert client.event(body, key='k' * 100).status_code == 200
    assert client.event(body).status_code == 200
    assert client.event(body).status_code == 200
    assert [e['idempotency_key'] for e in sandbox.state()['events']] == [
        'k1', 'k' * 100, None, None]


REFUSED_EVENTS = [
    ({'eventName': 'Paid', 'userId': 'nobody'}, 'Contact not found.'),
    ({'eventName': 'Plan:Paid', 'email': EMAIL}, 'Event names cannot contain colons (:).'),
    ({'eventName': 'Paid', 'email': EMAIL, 'plan': ['pro']}, 'Invalid value for "plan": '),
    ({'eventName': 'Paid', 'email': EMAIL, '': 1}, 'Invalid property name "".'),
]


@pytest.mark.parametrize('refused, message', REFUSED_EVENTS)
def test_a_refused_event_spends_its_idempotency_key(client, sandbox, refused, message):
    first = client.event(refused, key='k-refused')
    assert first.status_code == 400 and first.json()['message'].startswith(message)
    fixed = {'eventName': 'Paid', 'email': EMAIL}
    again = client.event(fixed, key='k-refused')
    assert again.status_code == 409
    assert again.json()['message'] == 'Idempotency key has already been used'
    assert sandbox.state()['events'] == [] and sandbox.state()['contacts'] == []
    assert client.event(fixed, key='k-new').status_code == 200


def test_a_request_cut_off_mid_body_is_not_processed_and_spends_no_key(client, sandbox):
    """A client killed while sending (a job's SIGKILL) leaves part of a body:
    like any HTTP server, the sandbox never hands it to the API, so its key
    stays unspent and the whole request, sent again, is recorded."""
    body = json.dumps({'eventName': 'Paid', 'email': EMAIL}).encode()
    host, port = sandbox.base_url.split('//')[1].split('/')[0].split(':')
    head = (f'POST /api/v1/events/send HTTP/1.1\r\nHost: {host}\r\n'
            f'Authorization: Bearer {API_KEY}\r\nIdempotency-Key: k-cut\r\n'
            f'Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n')
    with socket.create_connection((host, int(port)), timeout=5) as cut:
        cut.sendall(head.encode() + body[:len(body) // 2])
        cut.shutdown(socket.SHUT_WR)
        assert cut.recv(1024) == b''          # closed unanswered
    assert sandbox.state()['events'] == []
    assert client.event({'eventName': 'Paid', 'email': EMAIL}, key='k-cut').status_code == 200
    assert [e['idempotency_key'] for e in sandbox.state()['events']] == ['k-cut']


def test_a_spent_key_is_answered_409_before_the_body_is_looked_at(client):
    assert client.event({'eventName': 'Paid', 'email': EMAIL}, key='k1').status_code == 200
    assert client.event({'eventName': 'Plan:Paid'}, key='k1').status_code == 409


@pytest.mark.parametrize('fault', ['fail_before', 'drop_before'])
def test_a_request_that_never_reached_the_account_leaves_its_key_unspent(client, sandbox,
                                                                         fault):
    body = {'eventName': 'Paid', 'email': EMAIL}
    sandbox.configure(**{fault: 1.0})
    if fault == 'fail_before':
        assert client.event(body, key='k1').status_code == 500
    else:
        with pytest.raises(requests.ConnectionError):
            client.event(body, key='k1')
    sandbox.configure(**{fault: 0.0})
    assert client.event(body, key='k1').status_code == 200
    assert [e['idempotency_key'] for e in sandbox.state()['events']] == ['k1']


def test_a_key_answered_500_after_processing_is_spent_and_409_means_delivered(client,
                                                                             sandbox):
    body = {'eventName': 'Paid', 'email': EMAIL}
    sandbox.configure(fail_after=1.0)
    assert client.event(body, key='k1').status_code == 500
    sandbox.configure(fail_after=0.0)
    assert client.event(body, key='k1').status_code == 409
    assert [e['idempotency_key'] for e in sandbox.state()['events']] == ['k1']


def test_an_over_long_key_is_refused_and_not_kept(client, sandbox):
    body = {'eventName': 'Paid', 'email': EMAIL}
    assert client.event(body, key='k' * 101).status_code == 400
    assert client.event(body, key='k' * 100).status_code == 200
    assert [e['idempotency_key'] for e in sandbox.state()['events']] == ['k' * 100]


# ------------------------------------------------------------------ rate limit

def test_a_burst_gets_exactly_the_limit_through():
    with LoopsSandbox(API_KEY, rate_limit=10) as sandbox:
        barrier = threading.Barrier(30)
        responses = []

        def fire():
            barrier.wait()
            responses.append(requests.get(sandbox.base_url + '/v1/api-key', timeout=5,
                                          headers={'Authorization': f'Bearer {API_KEY}'}))

        threads = [threading.Thread(target=fire) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert (len(accepted), len(refused)) == (10, 20)
        assert sorted(int(r.headers['x-ratelimit-remaining']) for r in accepted) == list(range(10))
        assert {r.headers['x-ratelimit-remaining'] for r in refused} == {'0'}
        assert {r.headers['x-ratelimit-limit'] for r in responses} == {'10'}
        assert refused[0].json() == {'success': False, 'message': 'Rate limit exceeded'}
        assert requests.get(sandbox.base_url.replace('/api', '/_sandbox/state'),
                            timeout=5).status_code == 200


def test_refused_requests_do_not_count_in_the_window():
    with LoopsSandbox(API_KEY, rate_limit=1) as sandbox:
        client = Client(sandbox)
        assert client.call('GET', '/v1/api-key').status_code == 200
        time.sleep(0.6)
        assert client.call('GET', '/v1/api-key').status_code == 429
        time.sleep(0.5)
        assert client.call('GET', '/v1/api-key').status_code == 200
        sandbox.configure(rate_limit=None)
        assert all(client.call('GET', '/v1/lists').status_code == 200 for _ in range(5))


def test_latency_sleeps_overlap_between_connections():
    with LoopsSandbox(API_KEY, rate_limit=None, latency=(0.3, 0.3)) as sandbox:
        durations = []

        def timed_call():
            start = time.monotonic()
            Client(sandbox).call('GET', '/v1/api-key')
            durations.append(time.monotonic() - start)

        start = time.monotonic()
        threads = [threading.Thread(target=timed_call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert min(durations) >= 0.3
        assert time.monotonic() - start < 1.2


def test_a_session_keeps_its_connection_alive(client):
    for _ in range(3):
        assert client.call('GET', '/v1/api-key').status_code == 200
    pools = client.session.get_adapter(client.base_url).poolmanager.pools
    assert [pools[key].num_connections for key in pools.keys()] == [1]


# ---------------------------------------------------------------------- faults

@pytest.mark.parametrize('fault, outcome, processed', [
    ({'fail_before': 1.0}, 500, False),
    ({'fail_after': 1.0}, 500, True),
    ({'drop_before': 1.0}, requests.ConnectionError, False),
    ({'drop_after': 1.0}, requests.ConnectionError, True),
    ({'slow_after': 1.0, 'slow_seconds': 1.0}, requests.ReadTimeout, True),
])
def test_faults(client, sandbox, fault, outcome, processed):
    sandbox.configure(**fault)
    if isinstance(outcome, int):
        response = client.call('PUT', '/v1/contacts/update', json=VALID, timeout=0.3)
        assert response.status_code == outcome
        assert response.json() == {'success': False, 'message': 'Internal server error'}
    else:
        with pytest.raises(outcome):
            client.call('PUT', '/v1/contacts/update', json=VALID, timeout=0.3)
    state = sandbox.state()
    assert len(state['contacts']) == (1 if processed else 0)
    expected_status = outcome if isinstance(outcome, int) else None
    if outcome is requests.ReadTimeout:
        sandbox.stop()  # ends the slow answer, so its status is final
        expected_status = 200
        state = sandbox.state()
    assert [r['status'] for r in state['requests']] == [expected_status]


def test_faults_spare_auth_errors_unknown_paths_and_inspection(sandbox):
    sandbox.configure(fail_before=1.0)
    assert Client(sandbox, 'wrong').call('GET', '/v1/api-key').status_code == 401
    assert Client(sandbox).call('GET', '/nope').status_code == 404
    assert requests.get(sandbox.base_url.replace('/api', '/_sandbox/state'),
                        timeout=5).status_code == 200
    assert Client(sandbox).call('GET', '/v1/api-key').status_code == 500


def test_fault_shares_follow_the_seed():
    def statuses(seed):
        with LoopsSandbox(API_KEY, rate_limit=None, seed=seed, fail_before=0.5) as sandbox:
            client = Client(sandbox)
            return [client.call('GET', '/v1/api-key').status_code for _ in range(40)]

    first = statuses(7)
    assert first == statuses(7)
    assert 5 <= first.count(500) <= 35 and first.count(200) + first.count(500) == 40


@pytest.mark.parametrize('settings', [
    {'fail_sometimes': 0.1}, {'fail_before': 1.5}, {'latency': (0.3, 0.1)},
    {'rate_limit': -1}, {'slow_seconds': 'long'},
])
def test_bad_settings_raise_value_error(sandbox, settings):
    with pytest.raises(ValueError):
        sandbox.configure(**settings)
    with pytest.raises(ValueError):
        LoopsSandbox(**settings)


def test_an_outage_drops_connections_until_it_ends(client, sandbox):
    sandbox.outage(0.3)
    with pytest.raises(requests.ConnectionError):
        client.call('GET', '/v1/api-key')
    time.sleep(0.35)
    assert client.call('GET', '/v1/api-key').status_code == 200
    assert [r['status'] for r in sandbox.state()['requests']] == [None, 200]


# ------------------------------------------------------------------ inspection

def test_inspection_endpoints(client, sandbox):
    inspect_url = sandbox.base_url.replace('/api', '/_sandbox')
    client.event({'eventName': 'Paid', 'email': EMAIL}, key='k1')
    state = requests.get(inspect_url + '/state', timeout=5).json()
    assert state == sandbox.state()
    [logged] = state['requests']
    assert isinstance(logged.pop('t'), float)
    assert logged == {'method': 'POST', 'path': '/v1/events/send', 'status': 200,
                      'idempotency_key': 'k1'}

    assert requests.post(inspect_url + '/config', json={'fail_before': 1},
                         timeout=5).json() == {'success': True}
    assert client.call('GET', '/v1/api-key').status_code == 500
    bad = requests.post(inspect_url + '/config', json={'nope': 1}, timeout=5)
    assert bad.status_code == 400 and 'nope' in bad.json()['message']

    assert requests.post(inspect_url + '/reset', timeout=5).json() == {'success': True}
    assert sandbox.state() == {'contacts': [], 'events': [], 'triggers': [], 'requests': []}
    sandbox.configure(fail_before=0)
    assert client.event({'eventName': 'Paid', 'email': EMAIL}, key='k1').status_code == 200


def test_the_api_key_never_shows(sandbox, client):
    client.update(VALID)
    Client(sandbox, 'not-the-key').call('GET', '/v1/api-key')
    assert API_KEY not in repr(sandbox)
    assert API_KEY not in json.dumps(sandbox.state())


def test_stop_ends_kept_alive_connections_and_is_idempotent():
    sandbox = LoopsSandbox(API_KEY, rate_limit=None).start()
    client = Client(sandbox)
    assert client.call('GET', '/v1/api-key').status_code == 200
    sandbox.stop()
    sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        client.call('GET', '/v1/api-key')


# ------------------------------------------------------------------------- CLI

@pytest.mark.parametrize('key_in_env', [True, False])
def test_the_command_serves_until_sigterm(key_in_env):
    env = {k: v for k, v in os.environ.items() if k != 'LOOPS_API_KEY'}
    if key_in_env:
        env['LOOPS_API_KEY'] = 'env-secret-key'
    process = subprocess.Popen(
        [sys.executable, '-m', 'pipeline.local.sandbox_cli', '--port', '0', '--rate_limit', '5',
         '--latency_ms', '0-10'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base_url = process.stdout.readline().split()[-1]
        assert base_url.startswith('http://127.0.0.1:') and base_url.endswith('/api')
        key = 'env-secret-key' if key_in_env else process.stdout.readline().split()[-1]
        response = requests.get(base_url + '/v1/api-key', timeout=5,
                                headers={'Authorization': f'Bearer {key}'})
        assert response.status_code == 200
        assert response.headers['x-ratelimit-limit'] == '5'
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert 'env-secret-key' not in stdout + stderr
    assert stderr == ''
