"""Conforming requests to a Loops account: coercions, the unknown-property
policy, rejections, the account schema read over HTTP, and the Beam transform."""
import collections
import pickle

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.local.rules import DEFAULT_PROPERTIES
from pipeline.local.sandbox import LoopsSandbox
from transforms.conform import (AccountSchema, ConformToAccount, coerce_value,
                                conform_body)
from transforms.loops_client import LoopsClient
from transforms.metrics import NAMESPACE
from transforms.parse import Rejected
from transforms.records import contact_upsert, event_send

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
    ('number', str(2 ** 53)),
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

    conformed, adjustments = conform_body(body, SCHEMA, policy)

    assert conformed == expected_body
    assert adjustments == collections.Counter(expected_adjustments)
    assert body == original


def test_conform_event_body_leaves_event_fields_and_event_properties_alone():
    body = {'eventName': 'Signed Up', 'userId': 'u1', 'email': 'a@example.com',
            'eventProperties': {'seats': 'many', 'nickname': 'x'}, 'seats': '3'}

    conformed, adjustments = conform_body(body, SCHEMA, 'fail', is_event=True)

    assert conformed == {'eventName': 'Signed Up', 'userId': 'u1', 'email': 'a@example.com',
                         'eventProperties': {'seats': 'many', 'nickname': 'x'}, 'seats': 3}
    assert adjustments == {'coerced': 1}


def test_event_fields_in_a_contact_body_are_custom_properties():
    with pytest.raises(Rejected) as rejected:
        conform_body({'userId': 'u1', 'eventName': 'x'}, SCHEMA, 'fail')

    assert rejected.value.reason == 'unknown_property'


@pytest.mark.parametrize('body, policy, reason, named', [
    ({'userId': 'u1', 'nickname': 'ace'}, 'fail', 'unknown_property', "'nickname'"),
    ({'userId': 'u1', 'seats': 'twelve'}, 'send', 'type_mismatch', "'seats'"),
    ({'userId': 'u1', 'isAdmin': 'yes'}, 'drop', 'type_mismatch', "'isAdmin'"),
    ({'userId': 'u1', 'signedUpAt': 'soon'}, 'send', 'type_mismatch', "'signedUpAt'"),
    ({'userId': 'u1', 'mailingLists': {'list_news': True, 'list_vip': True}}, 'send',
     'unknown_mailing_list', "'list_vip'"),
    ({'eventName': 'E', 'userId': 'u1', 'mailingLists': {'list_gone': False}}, 'send',
     'unknown_mailing_list', "'list_gone'"),
])
def test_conform_body_rejects(body, policy, reason, named):
    with pytest.raises(Rejected) as rejected:
        conform_body(body, SCHEMA, policy, is_event='eventName' in body)

    assert rejected.value.reason == reason
    assert named in rejected.value.message


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
            schema = AccountSchema.fetch(client)
        finally:
            client.close()

    expected = {p['key']: p['type'] for p in DEFAULT_PROPERTIES}
    expected.update(plan='string', signedUpAt='date')
    assert schema == AccountSchema(expected, frozenset({'list_vip'}))


def test_conform_to_account_transform_outputs_requests_failures_and_counters():
    requests = [
        contact_upsert({'userId': 'u1', 'seats': '12', 'nickname': 'ace'}, 'u1',
                       (1, 1, 'm1'), 'm1'),
        contact_upsert({'userId': 'u2', 'seats': 'twelve'}, 'u2', (2, 2, 'm2'), 'm2'),
        contact_upsert({'userId': 'u3', 'mailingLists': {'list_vip': True}}, 'u3',
                       (3, 3, 'm3'), 'm3'),
        event_send({'eventName': 'E', 'userId': 'u1', 'eventProperties': {'seats': 'x'}},
                   'u1', (4, 4, 'm4'), 'm4', 'key-4'),
    ]
    p = TestPipeline()
    conformed, failures = (p | beam.Create(requests)
                           | ConformToAccount(SCHEMA, unknown_properties='drop'))
    assert_that(conformed | 'Bodies' >> beam.Map(lambda r: (r.source, r.body)), equal_to([
        ('m1', {'userId': 'u1', 'seats': 12}),
        ('m4', {'eventName': 'E', 'userId': 'u1', 'eventProperties': {'seats': 'x'}}),
    ]), label='requests')
    assert_that(failures | 'Reasons' >> beam.Map(
        lambda f: (f['stage'], f['reason'], f['source'], '"userId": "u' in f['request'])),
        equal_to([('map', 'type_mismatch', 'm2', True),
                  ('map', 'unknown_mailing_list', 'm3', True)]), label='failures')
    result = p.run()
    result.wait_until_finish()

    counters = {c.key.metric.name: c.committed
                for c in result.metrics().query()['counters']
                if c.key.metric.namespace == NAMESPACE}
    assert counters == {'map/failed': 2, 'map/type_mismatch': 1,
                        'map/unknown_mailing_list': 1, 'conform/coerced': 1,
                        'conform/unknown_property_dropped': 1}
