import json
import math
import pickle
import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import transforms.mapping
from transforms.mapping import (MappingError, Path, compile_path, default_mapping,
                                is_valid_loops_body, load_mapping, map_event,
                                map_identify, map_track, mapping_from_dict)
from transforms.parse import ParsedEvent, Rejected
from transforms.records import CONTACT_UPDATE_PATH, EVENT_SEND_PATH, idempotency_key_for

DEFAULT = default_mapping()


def identify(traits=None, user_id='u1', message_id='m1', **top):
    data = {'type': 'identify', 'messageId': message_id, 'userId': user_id,
            'traits': traits if traits is not None else {}, **top}
    return ParsedEvent('identify', message_id, user_id, (1000, 2000, message_id), data,
                       'gs://bucket/file.gz')


def track(properties=None, event='Signed Up', user_id='u1', message_id='m1', **top):
    data = {'type': 'track', 'messageId': message_id, 'userId': user_id, 'event': event,
            'properties': properties if properties is not None else {}, **top}
    return ParsedEvent('track', message_id, user_id, (1000, 2000, message_id), data,
                       'gs://bucket/file.gz')


def contact_body(traits, mapping=DEFAULT, **top):
    mapped = map_identify(identify(traits, **top), mapping)
    assert is_valid_loops_body(mapped.request.body)
    return mapped.request.body, mapped.adjustments


def rejection(call, *args):
    with pytest.raises(Rejected) as raised:
        call(*args)
    return raised.value.reason


# --- identify -> PUT /v1/contacts/update

def test_identify_request_with_the_destination_defaults():
    mapped = map_identify(identify({
        'email': 'ann@example.com', 'firstName': 'Ann', 'lastName': 'Lee',
        'userGroup': 'beta', 'plan': 'pro', 'seats': 3}), DEFAULT)
    request = mapped.request
    assert (request.method, request.path) == ('PUT', CONTACT_UPDATE_PATH)
    assert request.body == {'userId': 'u1', 'email': 'ann@example.com', 'firstName': 'Ann',
                            'lastName': 'Lee', 'userGroup': 'beta', 'source': 'Segment',
                            'plan': 'pro', 'seats': 3}
    assert (request.contact, request.order, request.source) == ('u1', (1000, 2000, 'm1'), 'm1')
    assert request.idempotency_key is None
    assert mapped.adjustments == {}


def test_the_event_source_stands_in_for_a_missing_message_id():
    request = map_identify(identify({}, message_id=''), DEFAULT).request
    assert request.source == 'gs://bucket/file.gz'


@pytest.mark.parametrize('traits, top, expected', [
    ({'email': ' Ann@Example.com '}, {}, 'Ann@Example.com'),      # stripped, case kept
    ({}, {'email': 'top@example.com'}, 'top@example.com'),          # else top-level email
    ({'email': None}, {'email': 'top@example.com'}, 'top@example.com'),
    ({'email': '  '}, {'email': 'top@example.com'}, 'top@example.com'),  # blank = absent
    ({'email': 'a.b+c@mail.example.co.uk'}, {}, 'a.b+c@mail.example.co.uk'),
    ({}, {}, None),                                                 # fine: matched by userId
])
def test_identify_email(traits, top, expected):
    body, _ = contact_body(traits, **top)
    assert body.get('email') == expected


@pytest.mark.parametrize('email', [
    'ann', 'ann@example', '@example.com', 'ann@@example.com', 'an n@example.com',
    'ann@example.', 'ann@.com', 'ann@exa mple.com', 42, True, {'address': 'a@b.co'},
    ['a@b.co'],
])
def test_identify_rejects_an_invalid_email(email):
    assert rejection(map_identify, identify({'email': email}), DEFAULT) == 'invalid_email'


@pytest.mark.parametrize('user_id', [None, ''])
def test_identify_requires_a_user_id(user_id):
    assert rejection(map_identify, identify({'email': 'a@b.co'}, user_id=user_id),
                     DEFAULT) == 'missing_user_id'


def test_an_over_long_user_id_is_rejected_not_cut():
    assert rejection(map_identify, identify({}, user_id='u' * 501), DEFAULT) == 'value_too_long'


def test_keys_read_by_explicit_fields_are_not_sent_twice():
    body, _ = contact_body({'firstName': 'Ann', 'first_name': 'ann', 'last_name': 'Lee',
                            'user_group': 'beta', 'email': 'a@b.co', 'subscribed': True,
                            'source': 'web', 'other': 1})
    assert body == {'userId': 'u1', 'email': 'a@b.co', 'firstName': 'Ann', 'lastName': 'Lee',
                    'userGroup': 'beta', 'source': 'web', 'subscribed': True, 'other': 1}


def test_loops_field_names_come_only_from_their_explicit_field():
    mapping = mapping_from_dict({'contact': {'firstName': '$.traits.given'}})
    body, _ = contact_body({'given': 'Ann', 'firstName': 'ignored', 'optInStatus': 'x',
                            'userId': 'other', 'mailingLists': {'l1': True}}, mapping)
    assert body == {'userId': 'u1', 'firstName': 'Ann', 'source': 'Segment',
                    'mailingLists': {'l1': True}}


def test_reserved_names_are_never_custom_properties():
    mapping = mapping_from_dict({'values': {'separator': ''}})
    body, adjustments = contact_body({'id': 7, 'teamId': 't', 'list': {'Id': 'x'}, 'ok': 1},
                                     mapping)
    assert body == {'userId': 'u1', 'source': 'Segment', 'ok': 1}
    assert adjustments == {'dropped_reserved': 3, 'flattened': 1}


@pytest.mark.parametrize('value, expected, adjustments', [
    (True, True, {}),
    (False, False, {}),
    ('true', None, {'dropped_subscribed': 1}),
    (1, None, {'dropped_subscribed': 1}),
    (None, None, {}),
])
def test_subscribed_is_sent_only_as_a_json_boolean(value, expected, adjustments):
    body, counted = contact_body({'subscribed': value})
    assert body.get('subscribed') == expected
    assert counted == adjustments


@pytest.mark.parametrize('value, expected, dropped', [
    ({'l1': True, 'l2': 'false', 'l3': 'yes', 'l4': 1}, {'l1': True, 'l2': False}, 2),
    ([{'listId': 'l1', 'subscribed': 'true'}, {'listId': 'l2', 'subscribed': False},
      {'listId': '', 'subscribed': True}, {'subscribed': True}, 'l5',
      {'listId': 'l6', 'subscribed': None}], {'l1': True, 'l2': False}, 4),
    ({'l1': 'TRUE'}, None, 1),   # an empty result is not sent
    ('l1', None, 1),
    ({}, None, 0),
])
def test_mailing_lists_object_and_array_forms(value, expected, dropped):
    body, adjustments = contact_body({'mailingLists': value})
    assert body.get('mailingLists') == expected
    assert adjustments.get('dropped_mailing_list', 0) == dropped


@pytest.mark.parametrize('value, expected', [
    ('2015-2-02', '2015-02-02T00:00:00.000Z'),
    ('2024-03-01T10:00:00+0530', '2024-03-01T04:30:00.000Z'),
    (1700000000000, '2023-11-14T22:13:20.000Z'),
    ('2016', '2016-01-01T00:00:00.000Z'),
])
def test_dates_become_iso8601(value, expected):
    mapping = mapping_from_dict({'contact': {'createdAt': '$.traits.signedUpAt'}})
    body, _ = contact_body({'signedUpAt': value, 'birthday': value, 'createdAt': value},
                           mapping)
    # createdAt is now the explicit field: the trait of that name is not a custom property.
    assert body['createdAt'] == expected and body['birthday'] == expected
    assert 'signedUpAt' not in body


def test_unparseable_dates_are_dropped_and_counted():
    mapping = mapping_from_dict({'contact': {'createdAt': '$.traits.createdAt'}})
    body, adjustments = contact_body({'createdAt': 'soon', 'birthday': 'never',
                                      'anniversary': None}, mapping)
    assert body == {'userId': 'u1', 'source': 'Segment', 'anniversary': None}
    assert adjustments == {'dropped_date': 2}


def test_created_at_trait_is_a_date_custom_property_when_the_field_is_unmapped():
    body, _ = contact_body({'createdAt': '2015-2-02'})
    assert body['createdAt'] == '2015-02-02T00:00:00.000Z'


def test_rename_skip_and_flattening():
    mapping = mapping_from_dict({'contact': {'rename': {'plan_name': 'plan'},
                                             'skip': ['password'],
                                             'dates': ['trial_endsAt']}})
    body, adjustments = contact_body({
        'plan_name': 'pro', 'password': 'secret', 'address': {'city': 'Oslo'},
        'tags': ['a', 'b'], 'trial': {'endsAt': '2024-1-5'}, 'bio': 'x' * 600}, mapping)
    assert body == {'userId': 'u1', 'source': 'Segment', 'plan': 'pro', 'address_city': 'Oslo',
                    'tags': 'a, b', 'trial_endsAt': '2024-01-05T00:00:00.000Z',
                    'bio': 'x' * 500}
    assert adjustments == {'flattened': 2, 'joined': 1, 'truncated': 1}


@pytest.mark.parametrize('value, expected, adjustments', [
    (42, '42', {}),
    (True, 'true', {}),
    (['a', 'b'], 'a, b', {'joined': 1}),
    ({'first': 'Ann'}, None, {'dropped_nested': 1}),
    ('A' * 501, 'A' * 500, {'truncated': 1}),
])
def test_text_fields_get_text(value, expected, adjustments):
    body, counted = contact_body({'firstName': value})
    assert body.get('firstName') == expected
    assert counted == adjustments


def test_explicit_literals_and_paths_with_odd_keys():
    mapping = mapping_from_dict({'contact': {
        'userGroup': ['$.traits["Invited User?"]', {'literal': 'none'}],
        'source': {'literal': 'backfill'}, 'properties': None}})
    body, _ = contact_body({'Invited User?': 'yes', 'source': 'web', 'plan': 'pro'}, mapping)
    assert body == {'userId': 'u1', 'userGroup': 'yes', 'source': 'backfill'}
    body, _ = contact_body({}, mapping)
    assert body == {'userId': 'u1', 'userGroup': 'none', 'source': 'backfill'}


def test_traits_that_are_not_an_object_give_no_custom_properties():
    event = identify()
    event.data['traits'] = 'not an object'
    assert map_identify(event, DEFAULT).request.body == {'userId': 'u1', 'source': 'Segment'}


def test_long_string_fail_rule_rejects_the_event():
    mapping = mapping_from_dict({'values': {'long_strings': 'fail'}})
    assert rejection(map_identify, identify({'bio': 'x' * 501}), mapping) == 'value_too_long'


def test_mapping_does_not_change_the_event():
    traits = {'address': {'city': 'Oslo'}, 'mailingLists': {'l1': 'true'}, 'id': 1}
    event = identify(json.loads(json.dumps(traits)))
    map_identify(event, DEFAULT)
    assert event.data['traits'] == traits


# --- track -> POST /v1/events/send

def test_track_request_with_the_destination_defaults():
    mapped = map_track(track({'email': 'ann@example.com', 'plan': {'name': 'pro'},
                              'items': [1, 2]}), DEFAULT)
    request = mapped.request
    assert (request.method, request.path) == ('POST', EVENT_SEND_PATH)
    assert request.body == {'eventName': 'Signed Up', 'userId': 'u1', 'email': 'ann@example.com',
                            'eventProperties': {'email': 'ann@example.com',
                                                'plan_name': 'pro', 'items': '1, 2'}}
    assert request.idempotency_key == idempotency_key_for('m1')
    assert (request.contact, request.order, request.source) == ('u1', (1000, 2000, 'm1'), 'm1')
    assert mapped.adjustments == {'flattened': 1, 'joined': 1}


def test_track_email_falls_back_to_context_traits_and_empty_properties_are_not_sent():
    request = map_track(track({}, context={'traits': {'email': 'c@example.com'}}),
                        DEFAULT).request
    assert request.body == {'eventName': 'Signed Up', 'userId': 'u1', 'email': 'c@example.com'}


@pytest.mark.parametrize('event_name', [None, '', '   ', 42, {'name': 'x'}])
def test_track_requires_an_event_name(event_name):
    assert rejection(map_track, track(event=event_name), DEFAULT) == 'missing_event_name'


@pytest.mark.parametrize('event, reason', [
    (track(user_id=None), 'missing_user_id'),
    (track({'email': 'not-an-email'}), 'invalid_email'),
    (track(event='E' * 501), 'value_too_long'),
])
def test_track_rejections(event, reason):
    assert rejection(map_track, event, DEFAULT) == reason


def test_track_without_message_id_gets_a_deterministic_content_key():
    first = map_track(track({'a': 1}, message_id=''), DEFAULT).request
    again = map_track(track({'a': 1}, message_id=''), DEFAULT).request
    other = map_track(track({'a': 2}, message_id=''), DEFAULT).request
    assert first.idempotency_key == again.idempotency_key != other.idempotency_key
    assert len(first.idempotency_key) <= 100
    assert first.source == 'gs://bucket/file.gz'


def test_track_contact_properties_ride_flat_in_the_body():
    mapping = mapping_from_dict({'event': {
        'contactProperties': {'plan': '$.properties.plan', 'seats': '$.properties.seats',
                              'tier': ['$.properties.tier', {'literal': 'free'}],
                              'address': '$.properties.address'},
        'eventProperties': None}})
    body = map_track(track({'plan': 'pro', 'seats': None, 'address': {'city': 'Oslo'}}),
                     mapping).request.body
    # address is one value, so it cannot be flattened: it is dropped.
    assert body == {'eventName': 'Signed Up', 'userId': 'u1', 'plan': 'pro', 'tier': 'free'}


@pytest.mark.parametrize('event_type, reason', [
    ('page', 'unsupported_type'), ('group', 'unsupported_type'), ('alias', 'unsupported_type'),
])
def test_map_event_dispatches_by_type(event_type, reason):
    assert map_event(identify({}), DEFAULT).request.path == CONTACT_UPDATE_PATH
    assert map_event(track({}), DEFAULT).request.path == EVENT_SEND_PATH
    assert rejection(map_event, identify({})._replace(type=event_type), DEFAULT) == reason


# --- the mapping document

def test_default_mapping_is_picklable_and_equal_to_an_empty_document():
    assert pickle.loads(pickle.dumps(DEFAULT)) == DEFAULT == mapping_from_dict({})


def test_the_documented_example_is_a_valid_mapping():
    doc = transforms.mapping.__doc__
    block = doc[doc.index('    contact:'):doc.index('A source is')]
    mapping = mapping_from_dict(yaml.safe_load(textwrap.dedent(block)))
    assert mapping.rename == {'plan_name': 'plan'} and 'password' in mapping.skip


@pytest.mark.parametrize('text, keys', [
    ('$', ()),
    ('$.traits.email', ('traits', 'email')),
    ('$.traits["Invited User?"]', ('traits', 'Invited User?')),
    ("$.traits['a.b'].c", ('traits', 'a.b', 'c')),
    ('$["say \\"hi\\""]', ('say "hi"',)),
    ('$.context.traits.$email', ('context', 'traits', '$email')),
])
def test_compile_path(text, keys):
    assert compile_path(text) == Path(text, keys)


@pytest.mark.parametrize('document, message', [
    ([], 'a mapping is an object with the sections contact, event and values, not a list'),
    ({'contacts': {}}, 'contacts: unknown section (expected one of contact, event, values)'),
    ({'contact': []}, 'contact: expected an object, got a list'),
    ({'contact': {'nickname': '$.x'}}, 'contact.nickname: unknown key'),
    ({'contact': {'email': 'traits.email'}},
     "contact.email: 'traits.email' is not a path (paths start with '$.')"),
    ({'contact': {'email': ['$.traits.email', 'email']}},
     "contact.email[1]: 'email' is not a path"),
    ({'contact': {'email': '$.traits..email'}}, "contact.email: '$.traits..email' is not a valid"),
    ({'contact': {'email': '$.traits[email]'}}, 'contact.email: '),
    ({'contact': {'email': []}}, 'contact.email: an empty list'),
    ({'contact': {'email': 5}}, 'contact.email: expected a path'),
    ({'contact': {'source': {'literal': None}}}, 'contact.source: a literal is'),
    ({'contact': {'source': {'literal': 'x', 'extra': 1}}}, 'contact.source: expected a path'),
    ({'contact': {'userId': '$.userId'}}, 'contact.userId: userId is not mappable'),
    ({'event': {'userId': '$.userId'}}, 'event.userId: userId is not mappable'),
    ({'contact': {'properties': ['$.traits']}}, 'contact.properties: expected a path'),
    ({'contact': {'skip': 'password'}}, 'contact.skip: expected a list'),
    ({'contact': {'dates': [1]}}, 'contact.dates: expected a list'),
    ({'contact': {'rename': ['a']}}, 'contact.rename: expected an object'),
    ({'contact': {'rename': {'a': 'email'}}}, "contact.rename.a: 'email' is a Loops field"),
    ({'contact': {'rename': {'a': 'updatedAt'}}}, "contact.rename.a: 'updatedAt'"),
    ({'event': {'eventName': None}}, 'event.eventName: required'),
    ({'event': {'contactProperties': {'eventName': '$.x'}}},
     "event.contactProperties.eventName: 'eventName' is a field of the event request"),
    ({'event': {'contactProperties': {'plan': None}}}, 'event.contactProperties.plan: required'),
    ({'values': {'arrays': 'split'}}, "values.arrays: expected one of join, json, drop, got 'split'"),
    ({'values': {'long_strings': 'ignore'}}, 'values.long_strings: expected one of'),
    ({'values': {'separator': 1}}, 'values.separator: expected text'),
    ({'values': {'depth': 3}}, 'values.depth: unknown key'),
])
def test_invalid_mappings_say_what_and_where(document, message):
    with pytest.raises(MappingError) as raised:
        mapping_from_dict(document)
    assert str(raised.value).startswith(message)


def test_load_yaml_merges_over_the_defaults(tmp_path):
    path = tmp_path / 'mapping.yaml'
    path.write_text(textwrap.dedent('''\
        contact:
          firstName: $.traits.given_name
          skip: [password]
        values: {arrays: json}
        '''))
    mapping = load_mapping(str(path))
    body, adjustments = contact_body({'given_name': 'Ann', 'email': 'a@b.co',
                                      'password': 'p', 'tags': ['a']}, mapping)
    assert body == {'userId': 'u1', 'email': 'a@b.co', 'firstName': 'Ann',
                    'source': 'Segment', 'tags': '["a"]'}
    assert mapping.event_name == DEFAULT.event_name


def test_load_json_and_empty_yaml(tmp_path):
    json_path = tmp_path / 'mapping.json'
    json_path.write_text(json.dumps({'event': {'eventName': '$.properties.name'}}))
    assert load_mapping(str(json_path)).event_name == (compile_path('$.properties.name'),)
    empty = tmp_path / 'empty.yml'
    empty.write_text('')
    assert load_mapping(str(empty)) == DEFAULT
    commented_out = tmp_path / 'sections.yaml'
    commented_out.write_text('contact:\n  # email: $.traits.mail\nevent:\n')
    assert load_mapping(str(commented_out)) == DEFAULT


@pytest.mark.parametrize('name, text, message', [
    ('bad.yaml', 'contact: [unclosed', 'not valid YAML'),
    ('bad.json', '{"contact": ', 'not valid JSON'),
    ('mapping.toml', '', 'a mapping file is YAML (.yaml, .yml) or JSON (.json)'),
    ('wrong.yaml', 'contact: {email: traits.email}', "contact.email: 'traits.email' is not a path"),
    ('missing.yaml', None, 'cannot read the mapping file'),
])
def test_load_mapping_errors_name_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(MappingError) as raised:
        load_mapping(str(path))
    assert str(raised.value).startswith(f'{path}: ') and message in str(raised.value)


# --- every body is valid for Loops

@pytest.mark.parametrize('body, valid', [
    ({'userId': 'u', 'n': 1, 'f': 1.5, 'b': False, 'z': None}, True),
    ({'mailingLists': {'l1': True}, 'eventProperties': {'k': 'v'}}, True),
    ({'nested': {'a': 1}}, False),
    ({'list': [1]}, False),
    ({'long': 'x' * 501}, False),
    ({'emoji': '😀' * 251}, False),
    ({'nan': math.nan}, False),
    ({'mailingLists': {'l1': 'true'}}, False),
    ({'mailingLists': [{'listId': 'l1', 'subscribed': True}]}, False),
    ({'eventProperties': {'k': {'a': 1}}}, False),
    ({'eventProperties': {'k': 'x' * 501}}, False),
    ([], False),
])
def test_is_valid_loops_body(body, valid):
    assert is_valid_loops_body(body) is valid


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=600),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=15)
loops_names = st.sampled_from(['email', 'firstName', 'first_name', 'subscribed', 'id',
                               'mailingLists', 'createdAt', 'birthday', 'userId', 'source'])
free_form = st.dictionaries(loops_names | st.text(max_size=6), json_values, max_size=8)


@settings(max_examples=100, deadline=None)
@given(traits=free_form, properties=free_form, context=free_form)
def test_every_mapped_body_is_valid_or_the_event_is_rejected(traits, properties, context):
    for call, event in ((map_identify, identify(traits, context=context)),
                        (map_track, track(properties, context=context))):
        try:
            mapped = call(event, DEFAULT)
        except Rejected as rejected:
            assert rejected.reason == 'invalid_email'
            continue
        assert is_valid_loops_body(mapped.request.body)
        assert all(isinstance(n, int) and n > 0 for n in mapped.adjustments.values())
