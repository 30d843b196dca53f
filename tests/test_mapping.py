"""Mapping Segment calls to Loops requests (transforms/mapping/mapper.py); the mapping
language itself is tested in test_mapping_file.py."""
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND
from transforms.core.records import Stamp, idempotency_key_for
from transforms.mapping.build import is_valid_loops_body, is_valid_property_name, yes_or_no
from transforms.mapping.language import default_mapping, mapping_from_dict
from transforms.mapping.routes import call_types
from transforms.segment.parse import ParsedEvent, Rejected

DEFAULT = default_mapping()
SOURCE = 'gs://bucket/file.gz'


def routes_taking(event, mapping):
    return [route for route in mapping.routes if route.takes(event)]


def map_event(event, mapping, require_user_id=False):
    """The request of the one route of `mapping` that takes the call (a
    section: identify -> contact, track -> event, ...)."""
    (route,) = routes_taking(event, mapping)
    return route.resolve(event, route.spec, require_user_id, "")


map_identify = map_event_send = map_event


def call(event_type, user_id='u1', message_id='m1', **top):
    data = {'type': event_type, 'messageId': message_id, 'userId': user_id, **top}
    return ParsedEvent(event_type, message_id, user_id, Stamp(1000, 2000, message_id), data,
                       SOURCE)


def identify(traits=None, **top):
    return call('identify', traits=traits if traits is not None else {}, **top)


def track(properties=None, event='Signed Up', **top):
    return call('track', event=event,
                properties=properties if properties is not None else {}, **top)


def contact_body(traits, mapping=DEFAULT, **top):
    mapped = map_identify(identify(traits, **top), mapping)
    assert is_valid_loops_body(mapped.request.body)
    return mapped.request.body, mapped.adjustments


def event_body(event, mapping=DEFAULT):
    mapped = map_event_send(event, mapping)
    assert is_valid_loops_body(mapped.request.body)
    return mapped.request.body, mapped.adjustments


def rejection(mapper, *args):
    with pytest.raises(Rejected) as raised:
        mapper(*args)
    return raised.value.reason


# --- identify -> PUT /v1/contacts/update

def test_identify_request_with_the_destination_defaults():
    mapped = map_identify(identify({
        'email': 'ann@example.com', 'firstName': 'Ann', 'lastName': 'Lee',
        'userGroup': 'beta', 'plan': 'pro', 'seats': 3}), DEFAULT)
    request = mapped.request
    assert request.kind == CONTACT_UPSERT.name
    assert (request.method, request.path) == (CONTACT_UPSERT.method, CONTACT_UPSERT.path)
    assert request.body == {'userId': 'u1', 'email': 'ann@example.com', 'firstName': 'Ann',
                            'lastName': 'Lee', 'userGroup': 'beta', 'source': 'Segment',
                            'plan': 'pro', 'seats': 3}
    assert request.contact == 'user:u1'
    assert request.stamp == Stamp(1000, 2000, 'm1')
    assert request.source == 'm1'
    assert request.idempotency_key is None
    assert mapped.adjustments == {}


def test_the_event_source_stands_in_for_a_missing_message_id():
    assert map_identify(identify({}, message_id=''), DEFAULT).request.source == SOURCE


def test_a_trait_loops_sets_itself_is_left_out_and_counted():
    body, adjustments = contact_body({'email': 'ann@example.com', 'optInStatus': 'accepted'})
    assert body == {'userId': 'u1', 'email': 'ann@example.com', 'source': 'Segment'}
    assert adjustments == {'dropped_read_only': 1}


@pytest.mark.parametrize('traits, top, expected', [
    ({'email': ' Ann@Example.com '}, {}, 'Ann@Example.com'),      # stripped, case kept
    ({}, {'email': 'top@example.com'}, 'top@example.com'),          # else top-level email
    ({'email': None}, {'email': 'top@example.com'}, 'top@example.com'),
    ({'email': '  '}, {'email': 'top@example.com'}, 'top@example.com'),  # blank = absent
    ({'email': 'a.b+c@mail.example.co.uk'}, {}, 'a.b+c@mail.example.co.uk'),
    ({}, {}, None),                                                 # fine: matched by userId
])
def test_identify_email(traits, top, expected):
    assert contact_body(traits, **top)[0].get('email') == expected


@pytest.mark.parametrize('email', [
    'ann', 'ann@example', '@example.com', 'ann@@example.com', 'an n@example.com',
    'ann@example.', 'ann@.com', 'ann@exa mple.com', 42, True, {'address': 'a@b.co'},
    ['a@b.co'], 'a@b.' + 'c' * 500,
])
def test_a_lead_with_an_invalid_email_is_rejected(email):
    event = _without_user_id(identify({'email': email}))
    assert rejection(map_identify, event, DEFAULT) == 'invalid_email'


@pytest.mark.parametrize('event', [
    identify({'email': 'not-an-email', 'plan': 'pro'}),
    track({'email': 'not-an-email', 'plan': 'pro'}),
])
def test_an_invalid_email_with_a_user_id_costs_only_itself(event):
    mapped = map_event(event, DEFAULT)
    assert 'email' not in mapped.request.body
    assert mapped.request.contact == 'user:u1' and mapped.request.body['userId'] == 'u1'
    (part,) = mapped.refused
    assert part.reason == 'invalid_email'
    assert "'not-an-email'" in part.message and 'the rest of the event was sent' in part.message


def test_a_valid_email_leaves_nothing_refused():
    assert map_event(identify({'email': 'a@b.co'}), DEFAULT).refused == ()


# --- identity: by userId, else by email (Loops accepts either)

def _without_user_id(event):
    return event._replace(user_id=None, data={**event.data, 'userId': None})


@pytest.mark.parametrize('event, kind, contact, identity', [
    (identify({'email': 'Ann@Example.com'}), CONTACT_UPSERT,
     'user:u1', {'userId': 'u1', 'email': 'Ann@Example.com'}),
    (_without_user_id(identify({'email': ' Ann@Example.com'})), CONTACT_UPSERT,
     'email:ann@example.com', {'email': 'Ann@Example.com'}),
    (_without_user_id(identify({}, email='top@example.com')), CONTACT_UPSERT,
     'email:top@example.com', {'email': 'top@example.com'}),
    (_without_user_id(track({'email': 'P@Example.com'})), EVENT_SEND,
     'email:p@example.com', {'email': 'P@Example.com'}),
    (_without_user_id(track({}, context={'traits': {'email': 'c@example.com'}})), EVENT_SEND,
     'email:c@example.com', {'email': 'c@example.com'}),
    (_without_user_id(track({'email': 'p@example.com'},
                            context={'traits': {'email': 'c@example.com'}})), EVENT_SEND,
     'email:p@example.com', {'email': 'p@example.com'}),
    # An event by userId keeps its email aside (LoopsRequest.fallback_email).
    (track({'email': 'a@b.co'}), EVENT_SEND, 'user:u1', {'userId': 'u1'}),
])
def test_a_call_is_sent_by_user_id_else_by_email(event, kind, contact, identity):
    request = map_event(event, DEFAULT).request
    assert request.kind == kind.name
    assert request.contact == contact
    assert {key: request.body[key] for key in ('userId', 'email')
            if key in request.body} == identity


@pytest.mark.parametrize('event, require_user_id, reason', [
    (_without_user_id(identify({})), False, 'missing_identity'),
    (_without_user_id(identify({'email': '  '})), False, 'missing_identity'),
    (_without_user_id(identify({'email': 'not-an-email'})), False, 'invalid_email'),
    (_without_user_id(track({'email': 'not-an-email'})), False, 'invalid_email'),
    (_without_user_id(track({})), False, 'missing_identity'),
    (identify({}, user_id=''), False, 'missing_identity'),
    (_without_user_id(identify({'email': 'a@b.co'})), True, 'missing_user_id'),
    (_without_user_id(track({'email': 'a@b.co'})), True, 'missing_user_id'),
    (identify({}, user_id='u' * 501), False, 'value_too_long'),   # cut, it could merge people
])
def test_identity_rejections(event, require_user_id, reason):
    assert rejection(map_event, event, DEFAULT, require_user_id) == reason


def test_require_user_id_changes_nothing_for_calls_with_one():
    for event in (identify({'email': 'a@b.co'}), track({'email': 'a@b.co'})):
        assert map_event(event, DEFAULT, True) == map_event(event, DEFAULT)


# --- contact fields and custom properties

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


@pytest.mark.parametrize('name, valid', [
    ('plan', True), ('Invited User?', True), ('a.b', True), ('株式会社', True),
    ('x' * 500, True), ('😀' * 250, True), ('', False), ('   ', False), ('\t', False), ('a\x00b', False),
    ('tab\tname', False), ('line\nbreak', False), ('del\x7f', False), ('x' * 501, False),
    ('😀' * 251, False), (None, False), (5, False),
])
def test_is_valid_property_name(name, valid):
    assert is_valid_property_name(name) is valid


def test_invalid_property_names_are_dropped_and_counted():
    body, adjustments = contact_body({'': 1, '  ': 2, 'a\x00b': 3, 'tab\tname': 4,
                                      'nested': {'\n': 5}, 'ok': 6})
    assert body == {'userId': 'u1', 'source': 'Segment', 'ok': 6}
    assert adjustments == {'dropped_invalid_name': 5, 'flattened': 1}


def test_names_over_500_characters_are_dropped_as_they_are_flattened():
    body, adjustments = contact_body({'x' * 501: 1, 'address': {'y' * 495: 2}, 'ok': 3})
    assert body == {'userId': 'u1', 'source': 'Segment', 'ok': 3}
    assert adjustments == {'dropped_long_key': 2, 'flattened': 1}


@pytest.mark.parametrize('value, expected', [
    (True, True), (False, False), (1, True), (0, False), (1.0, True), (0.0, False),
    ('true', True), ('FALSE', False), (' True ', True), ('yes', True), ('No', False),
    ('YES', True), ('1', True), ('0', False), (' 0 ', False),
    ('maybe', None), ('on', None), ('', None), (2, None), (-1, None), (0.5, None),
    ('2', None), (None, None), ([], None), ({}, None), ([True], None), (math.nan, None),
])
def test_yes_or_no(value, expected):
    assert yes_or_no(value) is expected


@pytest.mark.parametrize('value, expected, adjustments', [
    (True, True, {}), ('False', False, {}), (' Yes ', True, {}), (0, False, {}),
    ('1', True, {}), (None, None, {}),
    ('maybe', None, {'dropped_subscribed': 1}), (2, None, {'dropped_subscribed': 1}),
    ({'value': True}, None, {'dropped_subscribed': 1}),
])
def test_subscribed_is_sent_only_as_a_yes_or_a_no(value, expected, adjustments):
    body, counted = contact_body({'subscribed': value})
    assert body.get('subscribed') is expected and counted == adjustments


@pytest.mark.parametrize('value, expected, dropped', [
    ({'l1': True, 'l2': 'false', 'l3': 'Yes', 'l4': 1, 'l5': 'sure', 'l6': None},
     {'l1': True, 'l2': False, 'l3': True, 'l4': True}, 2),
    ([{'listId': 'l1', 'subscribed': 'true'}, {'listId': 'l2', 'subscribed': False},
      {'listId': 'l3', 'subscribed': '0'}, {'listId': '', 'subscribed': True},
      {'subscribed': True}, 'l5', {'listId': 'l6', 'subscribed': None},
      {'listId': 7, 'subscribed': True}], {'l1': True, 'l2': False, 'l3': False}, 5),
    ({'l1': 'TRUE'}, {'l1': True}, 0), ({}, None, 0), ('l1', None, 1),
    ({'l1': 'maybe'}, None, 1),   # an empty result is not sent
])
def test_mailing_lists_object_and_array_forms(value, expected, dropped):
    body, adjustments = contact_body({'mailingLists': value})
    assert body.get('mailingLists') == expected
    assert adjustments.get('dropped_mailing_list', 0) == dropped


@pytest.mark.parametrize('value, expected', [
    ('2015-2-02', '2015-02-02T00:00:00.000Z'), ('2016', '2016-01-01T00:00:00.000Z'),
    ('2024-03-01T10:00:00+0530', '2024-03-01T04:30:00.000Z'),
    (1700000000000, '2023-11-14T22:13:20.000Z'),
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
                                             'dates': ['trialEndsAt']}})
    body, adjustments = contact_body({
        'plan_name': 'pro', 'password': 'secret', 'address': {'city': 'Oslo'},
        'tags': ['a', 'b'], 'trial': {'endsAt': '2024-1-5'}, 'bio': 'x' * 600}, mapping)
    assert body == {'userId': 'u1', 'source': 'Segment', 'plan': 'pro', 'addressCity': 'Oslo',
                    'tags': 'a, b', 'trialEndsAt': '2024-01-05T00:00:00.000Z',
                    'bio': 'x' * 500}
    assert adjustments == {'flattened': 2, 'joined': 1, 'truncated': 1}


@pytest.mark.parametrize('value, expected, adjustments', [
    (42, '42', {}), (True, 'true', {}), (['a', 'b'], 'a, b', {'joined': 1}),
    ({'first': 'Ann'}, None, {'dropped_nested': 1}), ('A' * 501, 'A' * 500, {'truncated': 1}),
])
def test_text_fields_get_text(value, expected, adjustments):
    body, counted = contact_body({'firstName': value})
    assert (body.get('firstName'), counted) == (expected, adjustments)


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
    traits = {'address': {'city': 'Oslo'}, 'mailingLists': {'l1': 'true'}, 'id': 1, '': 2}
    event = identify(json.loads(json.dumps(traits)))
    map_identify(event, DEFAULT)
    assert event.data['traits'] == traits


# --- track (and mapped page, screen, group) -> POST /v1/events/send

def test_track_request_with_the_destination_defaults():
    mapped = map_event_send(track({'email': 'ann@example.com', 'plan': {'name': 'pro'},
                                   'items': [1, 2]}), DEFAULT)
    request = mapped.request
    assert request.kind == EVENT_SEND.name
    assert (request.method, request.path) == (EVENT_SEND.method, EVENT_SEND.path)
    # Sent by userId alone: its email is sent only if Loops has no such contact.
    assert request.body == {'eventName': 'Signed Up', 'userId': 'u1',
                            'eventProperties': {'email': 'ann@example.com',
                                                'planName': 'pro', 'items': '1, 2'}}
    assert request.fallback_email == 'ann@example.com'
    assert request.idempotency_key == idempotency_key_for('m1')
    assert (request.contact, request.stamp, request.source) == (
        'user:u1', Stamp(1000, 2000, 'm1'), 'm1')
    assert mapped.adjustments == {'flattened': 1, 'joined': 1}


def test_track_email_falls_back_to_context_traits_and_empty_properties_are_not_sent():
    request = map_event_send(track({}, context={'traits': {'email': 'c@example.com'}}),
                             DEFAULT).request
    assert request.body == {'eventName': 'Signed Up', 'userId': 'u1'}
    assert request.fallback_email == 'c@example.com'


@pytest.mark.parametrize('event, reason', [
    *[(track(event=name), 'missing_event_name') for name in (None, '', '   ', 42, {'n': 1})],
    (track(event='E' * 501), 'value_too_long'),
    (track(event='Order:Completed'), 'colon_in_event_name'),
])
def test_event_send_rejections(event, reason):
    assert rejection(map_event_send, event, DEFAULT) == reason


@pytest.mark.parametrize('replacement, name, expected', [
    ('-', 'Order:Completed', 'Order-Completed'),
    ('_', 'a:b::c', 'a_b__c'),
    (' - ', 'Checkout: Step 2', 'Checkout -  Step 2'),
    ('', 'ns:Signed Up', 'nsSigned Up'),
    ('-', 'No Colon', 'No Colon'),
])
def test_colon_replacement_replaces_every_colon(replacement, name, expected):
    mapping = mapping_from_dict({'event': {'colon_replacement': replacement}})
    body, _ = event_body(track(event=name), mapping)
    assert body['eventName'] == expected


def test_a_replaced_event_name_is_still_held_to_500_characters():
    mapping = mapping_from_dict({'event': {'colon_replacement': '--'}})
    assert rejection(map_event_send, track(event=':' * 300), mapping) == 'value_too_long'


def test_invalid_event_property_names_are_dropped_and_counted():
    body, adjustments = event_body(track({'': 1, ' ': 2, 'bad\x01': 3, 'ok': 4}))
    assert body['eventProperties'] == {'ok': 4}
    assert adjustments == {'dropped_invalid_name': 3}


def test_track_without_message_id_gets_a_deterministic_content_key():
    first = map_event_send(track({'a': 1}, message_id=''), DEFAULT).request
    again = map_event_send(track({'a': 1}, message_id=''), DEFAULT).request
    other = map_event_send(track({'a': 2}, message_id=''), DEFAULT).request
    assert first.idempotency_key == again.idempotency_key != other.idempotency_key
    assert len(first.idempotency_key) <= 100
    assert first.source == SOURCE


def test_track_contact_properties_ride_flat_in_the_body():
    mapping = mapping_from_dict({'event': {
        'contactProperties': {'plan': '$.properties.plan', 'seats': '$.properties.seats',
                              'tier': ['$.properties.tier', {'literal': 'free'}],
                              'address': '$.properties.address'},
        'eventProperties': None}})
    body, _ = event_body(track({'plan': 'pro', 'seats': None, 'address': {'city': 'Oslo'}}),
                         mapping)
    # address is one value, so it cannot be flattened: it is dropped.
    assert body == {'eventName': 'Signed Up', 'userId': 'u1', 'plan': 'pro', 'tier': 'free'}


SPREAD = mapping_from_dict({'event': {'contactProperties': '$.context.traits',
                                      'eventProperties': None}})


def test_contact_properties_from_a_path_are_spread_flat_like_traits():
    body, adjustments = event_body(track(context={'traits': {
        'plan': 'pro', 'email': 'c@example.com', 'id': 3, 'address': {'city': 'Oslo'},
        'eventName': 'x', 'eventProperties': 'y', 'userId': 'z', 'firstName': 'Ann',
        '': 'blank', 'tags': ['a', 'b']}}), SPREAD)
    # The event's own name and contact are never overwritten (its email comes
    # from context.traits.email by default: the same email, its fallback).
    assert body == {'eventName': 'Signed Up', 'userId': 'u1',
                    'plan': 'pro', 'addressCity': 'Oslo', 'tags': 'a, b', 'firstName': 'Ann'}
    assert adjustments == {'dropped_reserved': 1, 'flattened': 1, 'joined': 1,
                           'dropped_invalid_name': 1, 'dropped_event_field': 2,
                           'dropped_other_identity': 1}
    body, _ = event_body(track({}, context={'traits': 'text'}), SPREAD)
    assert body == {'eventName': 'Signed Up', 'userId': 'u1'}


def test_loops_contact_fields_ride_with_an_event_as_top_level_fields():
    body, adjustments = event_body(track(context={'traits': {
        'firstName': 'Ann', 'lastName': 'Lee', 'userGroup': 42, 'source': 'ads',
        'subscribed': 'no', 'createdAt': '2015-2-02', 'mailingLists': {'l1': 'true'},
        'plan': 'pro'}}), SPREAD)
    assert body == {'eventName': 'Signed Up', 'userId': 'u1', 'firstName': 'Ann',
                    'lastName': 'Lee', 'userGroup': '42', 'source': 'ads', 'subscribed': False,
                    'createdAt': '2015-02-02T00:00:00.000Z', 'mailingLists': {'l1': True},
                    'plan': 'pro'}
    assert adjustments == {}


@pytest.mark.parametrize('traits, counted', [
    ({'userId': 'someone-else'}, 'dropped_other_identity'),
    ({'email': 'other@example.com'}, 'dropped_other_identity'),
    ({'eventName': 'Other'}, 'dropped_event_field'),
    ({'eventProperties': {'a': 1}}, 'dropped_event_field'),
    ({'optInStatus': 'accepted'}, 'dropped_read_only'),
    ({'listId': 'l1'}, 'dropped_reserved'),
    ({'user': {'id': 'u2'}}, 'dropped_flattened_collision'),    # userId, once flattened
    ({'subscribed': 'maybe'}, 'dropped_subscribed'),
    ({'createdAt': 'soon'}, 'dropped_date'),
    ({'mailingLists': {'l1': 'perhaps'}}, 'dropped_mailing_list'),
])
def test_what_an_event_leaves_out_of_its_contact_properties_is_counted(traits, counted):
    event = track({'email': 'p@example.com'}, context={'traits': traits})
    body, adjustments = event_body(event, SPREAD)
    assert body == {'eventName': 'Signed Up', 'userId': 'u1'}
    assert adjustments[counted] == 1


@pytest.mark.parametrize('traits', [{'userId': 'u1'}, {'userId': ' u1 '},
                                    {'email': ' p@example.com'}, {'email': None}])
def test_the_events_own_identity_among_its_contact_properties_loses_nothing(traits):
    request = map_event_send(track({'email': 'p@example.com'}, context={'traits': traits}),
                             SPREAD).request
    assert (request.body, request.fallback_email) == (
        {'eventName': 'Signed Up', 'userId': 'u1'}, 'p@example.com')
    assert map_event_send(track({'email': 'p@example.com'}, context={'traits': traits}),
                          SPREAD).adjustments == {}


def test_contact_fields_mapped_key_by_key_are_converted_as_a_contacts():
    mapping = mapping_from_dict({'event': {'eventProperties': None, 'contactProperties': {
        'firstName': '$.properties.first', 'subscribed': '$.properties.optIn',
        'createdAt': '$.properties.since', 'plan': '$.properties.plan'}}})
    body, adjustments = event_body(track({'first': 42, 'optIn': 'Yes', 'since': 1700000000000,
                                          'plan': 'pro'}), mapping)
    assert body == {'eventName': 'Signed Up', 'userId': 'u1', 'firstName': '42',
                    'subscribed': True, 'createdAt': '2023-11-14T22:13:20.000Z', 'plan': 'pro'}
    body, adjustments = event_body(track({'optIn': 'maybe'}), mapping)
    assert 'subscribed' not in body and adjustments == {'dropped_subscribed': 1}


# --- event properties: never null, never an integer Loops would round

def test_null_event_properties_are_left_out_and_counted():
    body, adjustments = event_body(track({'coupon': None, 'plan': 'pro', 'meta': {'x': None}}))
    assert body['eventProperties'] == {'plan': 'pro'}
    assert adjustments == {'dropped_null_event_properties': 2, 'flattened': 1}
    body, adjustments = event_body(track({'coupon': None}))
    assert 'eventProperties' not in body
    assert adjustments == {'dropped_null_event_properties': 1}


def test_event_properties_beyond_loops_safe_integers_are_sent_as_text():
    body, adjustments = event_body(track({'orderId': 2 ** 63, 'total': 12}))
    assert body['eventProperties'] == {'orderId': '9223372036854775808', 'total': 12}
    assert adjustments == {'unsafe_integer_as_text': 1}


PAGES = mapping_from_dict({
    'page': {'eventName': 'Viewed {name} Page'},
    'screen': {'eventName': ['{properties.title} Screen', {'literal': 'Viewed a Screen'}],
               'eventProperties': None},
    'group': {'eventName': {'literal': 'Joined Group'}},
})


@pytest.mark.parametrize('event, name, event_properties', [
    (call('page', name='Pricing', properties={'path': '/pricing'}),
     'Viewed Pricing Page', {'path': '/pricing'}),
    (call('page', name=3, properties={}), 'Viewed 3 Page', None),   # JSON text of a scalar
    (call('screen', properties={'title': 'Cart'}), 'Cart Screen', None),
    (call('screen', properties={'title': None}), 'Viewed a Screen', None),  # absent: next one
    (call('screen', properties={'title': ['a']}), 'Viewed a Screen', None),  # not a scalar
    (call('group', groupId='g1', traits={'name': 'Acme', 'plan': 'pro'}),
     'Joined Group', {'name': 'Acme', 'plan': 'pro'}),   # group events carry the group's traits
    (call('track', event='Signed Up'), 'Signed Up', None),   # track keeps its defaults
])
def test_page_screen_and_group_calls_become_events_when_mapped(event, name, event_properties):
    request = map_event(event, PAGES).request
    assert request.kind == EVENT_SEND.name
    assert request.body.get('eventName') == name
    assert request.body.get('eventProperties') == event_properties
    assert request.idempotency_key == idempotency_key_for('m1')


@pytest.mark.parametrize('event, reason', [
    (call('page', properties={}), 'missing_event_name'),   # {name} has no value
    (call('page', name='a:b'), 'colon_in_event_name'),
    (call('page', user_id=None, name='Home'), 'missing_identity'),
])
def test_mapped_page_rejections(event, reason):
    assert rejection(map_event, event, PAGES) == reason


def test_page_screen_and_group_are_off_by_default():
    assert call_types(DEFAULT.routes) == frozenset({'identify', 'track'})
    assert call_types(PAGES.routes) == frozenset({'identify', 'track', 'page', 'screen', 'group'})
    for event_type in ('page', 'screen', 'group'):
        assert routes_taking(call(event_type, name='x'), DEFAULT) == []
    assert routes_taking(call('alias', previousId='p'), PAGES) == []


# --- every body is valid for Loops

@pytest.mark.parametrize('body, valid', [
    ({'userId': 'u', 'n': 1, 'f': 1.5, 'b': False, 'z': None}, True),
    ({'mailingLists': {'l1': True}, 'eventProperties': {'k': 'v'}}, True),
    ({'eventName': 'Signed Up'}, True), ({'eventName': 'Order:Completed'}, False),
    ({'nested': {'a': 1}}, False), ({'list': [1]}, False), ({'nan': math.nan}, False),
    ({'long': 'x' * 501}, False), ({'emoji': '😀' * 251}, False),
    ({'': 1}, False), ({'a\nb': 1}, False), ({'x' * 501: 1}, False),
    ({'mailingLists': {'l1': 'true'}}, False),
    ({'mailingLists': [{'listId': 'l1', 'subscribed': True}]}, False),
    ({'eventProperties': {'k': {'a': 1}}}, False), ({'eventProperties': {'k': 'x' * 501}}, False),
    ({'eventProperties': {' ': 1}}, False), ({'eventProperties': {'k': None}}, False),
    ({'eventProperties': {'k': 2 ** 53}}, False), ([], False),
])
def test_is_valid_loops_body(body, valid):
    assert is_valid_loops_body(body) is valid


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=600),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=15)
loops_names = st.sampled_from(['email', 'firstName', 'first_name', 'subscribed', 'id',
                               'mailingLists', 'createdAt', 'birthday', 'userId', 'source',
                               '', ' ', 'a:b', 'tab\t'])
free_form = st.dictionaries(loops_names | st.text(max_size=6), json_values, max_size=8)


@settings(max_examples=100, deadline=None)
@given(traits=free_form, properties=free_form, context=free_form)
def test_every_mapped_body_is_valid_or_the_event_is_rejected(traits, properties, context):
    spread = mapping_from_dict({'event': {'contactProperties': '$.context'}})
    for mapper, event, mapping in (
            (map_identify, identify(traits, context=context), DEFAULT),
            (map_event_send, track(properties, context=context), DEFAULT),
            (map_event_send, track(properties, context=context), spread)):
        try:
            mapped = mapper(event, mapping)
        except Rejected as rejected:
            assert rejected.reason == 'invalid_email'
            continue
        assert is_valid_loops_body(mapped.request.body)
        assert all(isinstance(n, int) and n > 0 for n in mapped.adjustments.values())
