"""Conforming requests to a Loops account: coercions, the unknown-property
policy, refused parts (each costs only itself), the account schema read over
HTTP, and conforming inside the per-event path."""
import collections
import json
import pickle

import pytest

from pipeline.local.rules import DEFAULT_PROPERTIES
from pipeline.local.sandbox import LoopsSandbox
from transforms.core.kinds import EVENT_SEND
from transforms.core.records import RawEvent
from transforms.loops.account import read_account
from transforms.loops.client import LoopsClient
from transforms.mapping.conform import AccountSchema, coerce_value, conform_body
from transforms.delivery.in_flight import deliver_one
from transforms.mapping.language import default_mapping, mapping_from_dict
from transforms.mapping.processor import EventProcessor, Selection
from transforms.segment.parse import Rejected

KEY = 'conform-test-key'
SCHEMA = AccountSchema(
    properties={'email': 'string', 'firstName': 'string', 'subscribed': 'boolean',
                'userId': 'string', 'plan': 'string', 'seats': 'number',
                'isAdmin': 'boolean', 'signedUpAt': 'date', 'score': 'currency'},
    mailing_lists=frozenset({'list_news', 'list_product'}))


@pytest.mark.parametrize('loops_type, value, expected', [
    # number: numbers as they are, numeric text parsed
    ('number', 42, 42),
    ('number', 2.5, 2.5),
    ('number', '42', 42),
    ('number', ' -7 ', -7),
    ('number', '3.25', 3.25),
    ('number', '1e3', 1000.0),
    ('number', '.5', 0.5),
    ('number', str(2 ** 53 - 1), 2 ** 53 - 1),
    # boolean: booleans, and their text in any case
    ('boolean', True, True),
    ('boolean', 'true', True),
    ('boolean', 'FALSE', False),
    ('boolean', 'True', True),
    # date: every Segment timestamp form -> ISO-8601
    ('date', '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z'),
    ('date', '2026-11-01T11:00:00+01:00', '2026-11-01T10:00:00.000Z'),
    ('date', '2026-11-01', '2026-11-01T00:00:00.000Z'),
    ('date', '2026-11-01 10:00:00', '2026-11-01T10:00:00.000Z'),
    ('date', 1793527200000, '2026-11-01T10:00:00.000Z'),
    ('date', 1793527200, '2026-11-01T10:00:00.000Z'),
    ('date', '1793527200000', '2026-11-01T10:00:00.000Z'),
    # string: numbers and booleans as their text
    ('string', 'pro', 'pro'),
    ('string', 42, '42'),
    ('string', 2.5, '2.5'),
    ('string', True, 'true'),
    ('string', False, 'false'),
    # null resets, whatever the type
    ('number', None, None),
    ('boolean', None, None),
    ('date', None, None),
    ('string', None, None),
    # a type this project does not know yet: sent as it is
    ('currency', '12 EUR', '12 EUR'),
])
def test_coerce_value_converts_safely(loops_type, value, expected):
    coerced = coerce_value('key', value, loops_type)

    assert coerced == expected
    assert type(coerced) is type(expected)


@pytest.mark.parametrize('loops_type, value', [
    ('number', True),
    ('number', '12abc'),
    ('number', ''),
    ('number', 'NaN'),
    ('number', '1e999'),
    ('number', float('inf')),
    ('boolean', 1),
    ('boolean', 'yes'),
    ('boolean', 0.0),
    ('date', True),
    ('date', 'next tuesday'),
    ('date', '2015-02-30'),
    ('date', float('nan')),
    ('string', float('inf')),
])
def test_coerce_value_rejects_what_cannot_be_converted_safely(loops_type, value):
    with pytest.raises(Rejected) as rejected:
        coerce_value('seats', value, loops_type)

    assert rejected.value.reason == 'type_mismatch'
    assert "'seats'" in rejected.value.message and loops_type in rejected.value.message


@pytest.mark.parametrize('loops_type, value', [
    ('number', 2 ** 53),
    ('number', -2 ** 53),
    ('number', 10 ** 30),
    ('number', str(2 ** 53)),            # numeric text that would become an unsafe number
    ('number', ' -90071992547409930 '),
    ('boolean', 2 ** 64),
    ('date', 2 ** 64),
    ('currency', 2 ** 64),               # a type Loops may add later
])
def test_an_integer_loops_would_round_is_never_a_number(loops_type, value):
    with pytest.raises(Rejected) as rejected:
        coerce_value('bigId', value, loops_type)

    assert rejected.value.reason == 'unsafe_integer'
    assert "'bigId'" in rejected.value.message and '2^53' in rejected.value.message


def test_unsafe_integers_are_text_for_a_string_property_else_a_refused_part():
    schema = AccountSchema({'accountId': 'string', 'seats': 'number'}, frozenset())
    body = {'userId': 'u1', 'accountId': 2 ** 64, 'seats': 2 ** 64, 'orderId': -2 ** 53,
            'plan': 2 ** 53 - 1}

    conformed, adjustments, refused = conform_body(body, schema, 'send')

    assert conformed == {'userId': 'u1', 'accountId': '18446744073709551616',
                         'plan': 2 ** 53 - 1}
    assert adjustments == {'unsafe_integer_as_text': 1, 'unknown_property_sent': 1}
    assert [(part.reason, part.message.split(' ', 1)[0]) for part in refused] == [
        ('unsafe_integer', "'seats'"), ('unsafe_integer', "'orderId'")]
    assert all('the rest of the event was sent' in part.message for part in refused)


@pytest.mark.parametrize('body, policy, expected_body, expected_adjustments', [
    # properties the account has: coerced per value, counted once per value changed
    ({'userId': 'u1', 'seats': '12', 'isAdmin': 'true', 'plan': 'pro'}, 'send',
     {'userId': 'u1', 'seats': 12, 'isAdmin': True, 'plan': 'pro'}, {'coerced': 2}),
    ({'userId': 'u1', 'signedUpAt': 1793527200000, 'plan': 3}, 'send',
     {'userId': 'u1', 'signedUpAt': '2026-11-01T10:00:00.000Z', 'plan': '3'}, {'coerced': 2}),
    # Loops' own fields are never custom properties, whatever their value
    ({'userId': 7, 'email': 'a@example.com', 'firstName': 5, 'subscribed': 'yes',
      'source': 'Segment', 'userGroup': 'x', 'lastName': 'L'}, 'fail',
     {'userId': 7, 'email': 'a@example.com', 'firstName': 5, 'subscribed': 'yes',
      'source': 'Segment', 'userGroup': 'x', 'lastName': 'L'}, {}),
    # unknown properties: sent or dropped, always counted
    ({'userId': 'u1', 'nickname': 'ace', 'city': None}, 'send',
     {'userId': 'u1', 'nickname': 'ace', 'city': None}, {'unknown_property_sent': 2}),
    ({'userId': 'u1', 'nickname': 'ace', 'plan': 'pro'}, 'drop',
     {'userId': 'u1', 'plan': 'pro'}, {'unknown_property_dropped': 1}),
    # known mailing lists pass
    ({'userId': 'u1', 'mailingLists': {'list_news': True, 'list_product': False}}, 'fail',
     {'userId': 'u1', 'mailingLists': {'list_news': True, 'list_product': False}}, {}),
])
def test_conform_contact_body(body, policy, expected_body, expected_adjustments):
    original = dict(body)

    conformed, adjustments, refused = conform_body(body, SCHEMA, policy)

    assert conformed == expected_body
    assert adjustments == collections.Counter(expected_adjustments)
    assert refused == []
    assert body == original


def test_conform_event_body_leaves_event_fields_and_event_properties_alone():
    body = {'eventName': 'Signed Up', 'userId': 'u1', 'email': 'a@example.com',
            'eventProperties': {'seats': 'many', 'nickname': 'x'}, 'seats': '3'}

    conformed, adjustments, refused = conform_body(body, SCHEMA, 'fail', kind=EVENT_SEND)

    assert conformed == {'eventName': 'Signed Up', 'userId': 'u1', 'email': 'a@example.com',
                         'eventProperties': {'seats': 'many', 'nickname': 'x'}, 'seats': 3}
    assert adjustments == {'coerced': 1} and refused == []


def test_event_fields_in_a_contact_body_are_custom_properties():
    conformed, _, refused = conform_body({'userId': 'u1', 'eventName': 'x'}, SCHEMA, 'fail')

    assert conformed == {'userId': 'u1'}
    assert [part.reason for part in refused] == ['unknown_property']


@pytest.mark.parametrize('body, policy, kept, reasons, named', [
    ({'userId': 'u1', 'nickname': 'ace', 'plan': 'pro'}, 'fail', {'userId': 'u1', 'plan': 'pro'},
     ['unknown_property'], ["'nickname'"]),
    ({'userId': 'u1', 'seats': 'twelve', 'plan': 'pro'}, 'send', {'userId': 'u1', 'plan': 'pro'},
     ['type_mismatch'], ["'seats'"]),
    ({'userId': 'u1', 'isAdmin': 'yes'}, 'drop', {'userId': 'u1'}, ['type_mismatch'],
     ["'isAdmin'"]),
    ({'userId': 'u1', 'signedUpAt': 'soon'}, 'send', {'userId': 'u1'}, ['type_mismatch'],
     ["'signedUpAt'"]),
    # An unknown list costs only itself: the known list and the rest are sent.
    ({'userId': 'u1', 'mailingLists': {'list_news': True, 'list_vip': True}, 'plan': 'x'},
     'send', {'userId': 'u1', 'mailingLists': {'list_news': True}, 'plan': 'x'},
     ['unknown_mailing_list'], ["'list_vip'"]),
    ({'userId': 'u1', 'mailingLists': {'list_gone': False, 'list_old': True}}, 'send',
     {'userId': 'u1'}, ['unknown_mailing_list', 'unknown_mailing_list'],
     ["'list_gone'", "'list_old'"]),
    # Fields no request can set, whatever the policy and the account's list.
    ({'userId': 'u1', 'notes': 'VIP', 'optInStatus': 'accepted', 'plan': 'pro'}, 'send',
     {'userId': 'u1', 'plan': 'pro'}, ['not_settable', 'not_settable'],
     ["'notes' ('VIP') cannot be sent", "'optInStatus' ('accepted') cannot be sent"]),
])
def test_a_refused_part_costs_only_itself(body, policy, kept, reasons, named):
    conformed, _, refused = conform_body(body, SCHEMA, policy)

    assert conformed == kept
    assert [part.reason for part in refused] == reasons
    for part, name in zip(refused, named):
        assert name in part.message and 'the rest of the event was sent' in part.message


def test_conform_body_refuses_an_unknown_policy():
    with pytest.raises(ValueError, match='send, drop, fail'):
        conform_body({'userId': 'u1'}, SCHEMA, 'ignore')


def test_schema_from_json_reads_properties_and_lists():
    schema = AccountSchema.from_json(
        [{'key': 'plan', 'label': 'Plan', 'type': 'string'},
         {'key': 'seats', 'label': 'Seats', 'type': 'number'}],
        [{'id': 'list_news', 'name': 'News', 'description': '', 'isPublic': True}])

    assert schema == AccountSchema({'plan': 'string', 'seats': 'number'},
                                   frozenset({'list_news'}))
    assert pickle.loads(pickle.dumps(schema)) == schema


@pytest.mark.parametrize('properties, lists', [
    ({'plan': 'string'}, []),
    ([{'key': 'plan'}], []),
    ([], [{'name': 'News'}]),
    ([], None),
])
def test_schema_from_json_refuses_unexpected_answers(properties, lists):
    with pytest.raises(ValueError):
        AccountSchema.from_json(properties, lists)


def test_schema_fetch_reads_the_account_over_http():
    custom = [{'key': 'plan', 'label': 'Plan', 'type': 'string'},
              {'key': 'signedUpAt', 'label': 'Signed Up At', 'type': 'date'}]
    lists = [{'id': 'list_vip', 'name': 'VIP', 'description': '', 'isPublic': False}]
    with LoopsSandbox(KEY, custom_properties=custom, mailing_lists=lists) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        try:
            schema = read_account(client)
        finally:
            client.close()

    expected = {p['key']: p['type'] for p in DEFAULT_PROPERTIES}
    expected.update(plan='string', signedUpAt='date')
    assert schema == AccountSchema(expected, frozenset({'list_vip'}))


def test_the_processor_sends_the_rest_and_records_each_refused_part():
    processor = EventProcessor(Selection(('identify',), None, default_mapping()),
                               account=SCHEMA, unknown_properties='fail')
    event = {'type': 'identify', 'messageId': 'm1', 'userId': 'u1',
             'timestamp': '2026-11-01T10:00:00Z',
             'traits': {'seats': '12', 'nickname': 'ace', 'plan': 'pro',
                        'mailingLists': {'list_news': True, 'list_vip': True}}}
    counts = collections.Counter()

    processed = processor.process(RawEvent('f.gz', 7, json.dumps(event)), counts)

    assert processed.requests[0].body == {'userId': 'u1', 'seats': 12, 'plan': 'pro',
                                      'source': 'Segment', 'mailingLists': {'list_news': True}}
    assert sorted((f['stage'], f['reason'], f['source']) for f in processed.failures) == [
        ('conform', 'unknown_mailing_list', 'f.gz:7'), ('conform', 'unknown_property', 'f.gz:7')]
    assert all(json.loads(f['event']) == event for f in processed.failures)
    assert counts['refused/unknown_property'] == counts['refused/unknown_mailing_list'] == 1
    assert counts['conform/coerced'] == 1 and counts['map/failed'] == 0


def test_the_processor_never_sends_an_integer_loops_would_round():
    schema = AccountSchema({'accountId': 'string', 'seats': 'number'}, frozenset())
    processor = EventProcessor(Selection(('identify', 'track'), None, default_mapping()),
                               account=schema, unknown_properties='send')
    identify = {'type': 'identify', 'userId': 'u1', 'traits': {
        'accountId': 12345678901234567890, 'seats': 12345678901234567890, 'plan': 'pro'}}
    track = {'type': 'track', 'userId': 'u1', 'event': 'Ordered', 'messageId': 'm2',
             'properties': {'orderId': 12345678901234567890, 'total': 12}}
    counts = collections.Counter()

    contact = processor.process(RawEvent('f.gz', 1, json.dumps(identify)), counts)
    event = processor.process(RawEvent('f.gz', 2, json.dumps(track)), counts)

    assert contact.requests[0].body == {'userId': 'u1', 'accountId': '12345678901234567890',
                                    'plan': 'pro', 'source': 'Segment'}
    assert [(f['stage'], f['reason']) for f in contact.failures] == [
        ('conform', 'unsafe_integer')]
    assert event.requests[0].body['eventProperties'] == {'orderId': '12345678901234567890',
                                                     'total': 12}
    assert event.failures == ()
    assert (counts['conform/unsafe_integer_as_text'], counts['refused/unsafe_integer'],
            counts['map/unsafe_integer_as_text']) == (1, 1, 1)


SPREAD = mapping_from_dict({'event': {'contactProperties': '$.context.traits'}})


def test_notes_cost_neither_an_event_nor_the_rest_of_an_upsert_against_the_sandbox():
    # The sandbox refuses notes and optInStatus by name, as Loops refuses
    # what it cannot set: an event that carried them would be refused whole.
    traits = {'email': 'ann@example.com', 'notes': 'Met at the fair', 'plan': 'pro'}
    calls = [{'type': 'identify', 'messageId': 'm1', 'userId': 'u1', 'traits': traits},
             {'type': 'track', 'messageId': 'm2', 'userId': 'u1', 'event': 'Ordered',
              'context': {'traits': traits}}]
    with LoopsSandbox(KEY, rate_limit=None,
                      custom_properties=[{'key': 'plan', 'label': 'Plan',
                                          'type': 'string'}]) as sandbox:
        client = LoopsClient(sandbox.base_url, KEY, rate=100)
        try:
            processor = EventProcessor(Selection(('identify', 'track'), None, SPREAD),
                                       account=read_account(client))
            counts = collections.Counter()
            processed = [processor.process(RawEvent('f.gz', n, json.dumps(call)), counts)
                         for n, call in enumerate(calls, start=1)]
            delivered = [deliver_one(client, request) for p in processed
                         for request in p.requests]
        finally:
            client.close()
        state = sandbox.state()

    assert [d.outcome.status for d in delivered] == ['delivered', 'delivered']
    assert [d.refused for d in delivered] == [(), ()]
    assert [[(f['stage'], f['reason']) for f in p.failures] for p in processed] == [
        [('conform', 'not_settable')]] * 2
    assert counts['refused/not_settable'] == 2
    [contact] = state['contacts']
    assert (contact['plan'], 'notes' in contact) == ('pro', False)
    assert [e['eventName'] for e in state['events']] == ['Ordered']
