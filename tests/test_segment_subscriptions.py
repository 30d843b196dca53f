"""A Segment "Loops (Actions)" destination's subscriptions, applied as Segment applies them.

The expectations are Segment's: its destination's own test cases and
default-mapping cases (data/segment/loops_destination_cases.json), payload
cases and a live setup's calls run through Segment's own code
(loops_payload_cases.json, subscriptions_live_*.json; each file's "about" says how).
"""
import json
from pathlib import Path

import pytest

from transforms.mapping.fql import matches
from transforms.mapping.loops_actions import CREATE_OR_UPDATE_CONTACT, LOOPS_ACTIONS, SEND_EVENT
from transforms.mapping.subscriptions import (ActionRefusal, ActionRequest, SubscriptionError,
                                              action_request, load_subscriptions, skipped_subscriptions,
                                              subscriptions_for)

DATA = Path(__file__).parent / 'data' / 'segment'
DESTINATION_CASES = json.loads((DATA / 'loops_destination_cases.json').read_text(encoding='utf-8'))
PAYLOAD_CASES = json.loads((DATA / 'loops_payload_cases.json').read_text(encoding='utf-8'))
LIVE_SETUP = (DATA / 'subscriptions_live_setup.json').read_text(encoding='utf-8')
LIVE_CALLS = json.loads((DATA / 'subscriptions_live_calls.json').read_text(encoding='utf-8'))['calls']
# Cases of the destination that are not an action: no subscription leads to them.
NOT_ACTIONS = {'testAuthentication', 'onDelete'}


def with_defaults(action, mapping: dict) -> dict:
    """The mapping Segment's testAction(useDefaultMappings) builds: every field in
    the action's order, the test's values over the defaults."""
    merged = {field.name: mapping.get(field.name, field.default) for field in action.fields}
    merged.update(mapping)
    return {name: value for name, value in merged.items() if value is not None}


def subscription_entry(action_slug: str, trigger: str, settings, **extra) -> dict:
    entry = {'id': extra.pop('id', 'sub_1'), 'name': extra.pop('name', 'A subscription'),
             'actionId': 'action-id', 'actionSlug': action_slug, 'destinationId': 'dst_1', 'modelId': '',
             'enabled': True, 'trigger': trigger, 'settings': settings}
    entry.update(extra)
    return entry


def outcome(result) -> dict:
    """An ActionRequest or ActionRefusal in the cases' terms."""
    if isinstance(result, ActionRefusal):
        return {'error': result.message}
    assert isinstance(result, ActionRequest), result
    return {'method': result.method, 'url': result.url, 'body': result.body}


def check(result, expected: dict) -> None:
    if 'method' not in expected:
        assert outcome(result) == {'error': expected['error']}
        return
    actual = outcome(result)
    assert actual == {key: expected[key] for key in ('method', 'url', 'body')}
    # Key order too: the spread order decides which value wins, and is what Segment sends.
    assert list(actual['body']) == list(expected['body'])


def destination_cases() -> list:
    cases = DESTINATION_CASES['cases'] + DESTINATION_CASES['derived_cases']
    return [pytest.param(case, id=case['source'].rsplit(':', 1)[-1].strip())
            for case in cases if case['action'] not in NOT_ACTIONS]


def test_every_case_of_the_destination_is_an_action_case_or_named_as_not_one():
    cases = DESTINATION_CASES['cases'] + DESTINATION_CASES['derived_cases']
    assert {case['action'] for case in cases} == set(LOOPS_ACTIONS) | NOT_ACTIONS
    assert len(destination_cases()) == 38
    assert sorted(case['action'] for case in cases if case['action'] in NOT_ACTIONS) == sorted(NOT_ACTIONS)


@pytest.mark.parametrize('case', destination_cases())
def test_each_destination_case_run_as_a_subscription_gives_segments_request(case):
    action = LOOPS_ACTIONS[case['action']]
    mapping = case['mapping'] or {}
    settings = with_defaults(action, mapping) if case['use_default_mappings'] else mapping
    event = case['event']
    # Segment's tests call the action directly; most of their events are tracks, which the
    # contact action's default trigger (identify) would not select.
    trigger = action.default_trigger
    if not matches(load_subscriptions([subscription_entry(action.slug, trigger, {})])[0].condition, event):
        trigger = f'type = "{event["type"]}"'
    subscriptions = load_subscriptions({'data': {'subscriptions': [
        subscription_entry(action.slug, trigger, settings, name=case['source'])]}})
    assert subscriptions_for(subscriptions, event) == subscriptions
    check(action_request(subscriptions[0], event), case['expected'])


@pytest.mark.parametrize('case', [pytest.param(case, id=case['what']) for case in PAYLOAD_CASES['cases']])
def test_payloads_segment_coerces_refuses_or_reshapes(case):
    action = LOOPS_ACTIONS[case['action']]
    entry = subscription_entry(action.slug, 'type = "identify"', case['mapping'])
    subscription, = load_subscriptions([entry])
    check(action_request(subscription, PAYLOAD_CASES['event']), case['expected'])


def test_the_default_triggers_send_identifies_to_contacts_and_tracks_to_events():
    subscriptions = load_subscriptions([
        subscription_entry(action.slug, action.default_trigger, action.default_mapping(), id=action.slug)
        for action in (CREATE_OR_UPDATE_CONTACT, SEND_EVENT)])
    picked = {kind: [s.id for s in subscriptions_for(subscriptions, {'type': kind, 'userId': 'u'})]
              for kind in ('identify', 'track', 'page', 'screen', 'group', 'alias')}
    assert picked == {'identify': ['createOrUpdateContact'], 'track': ['sendEvent'],
                      'page': [], 'screen': [], 'group': [], 'alias': []}


def test_a_field_left_out_of_the_mapping_gets_no_default():
    # Segment's UI copies the defaults into a new subscription; at run time nothing fills them in.
    subscription, = load_subscriptions([subscription_entry('createOrUpdateContact', 'type = "identify"',
                                                           {'userId': {'@path': '$.userId'}})])
    event = {'type': 'identify', 'userId': 'u-1', 'traits': {'email': 'ada@example.com', 'plan': 'pro'}}
    assert action_request(subscription, event).body == {'userId': 'u-1', 'mailingLists': {}}


# --- The live setup -----------------------------------------------------------------------

def test_the_live_setup_keeps_its_enabled_subscriptions_in_order_and_names_the_skipped_ones():
    assert [(s.id, s.action.slug) for s in load_subscriptions(LIVE_SETUP)] == [
        ('sub_identify_contact', 'createOrUpdateContact'), ('sub_track_event', 'sendEvent'),
        ('sub_signed_up_contact', 'createOrUpdateContact')]
    assert [str(skipped) for skipped in skipped_subscriptions(LIVE_SETUP)] == [
        "subscription 'Page viewed (retired)' (id sub_page_event, sendEvent): disabled",
        "subscription 'Company to audience (old destination)' (id sub_group_audience, syncAudience): "
        "disabled"]


@pytest.mark.parametrize('call', [pytest.param(call, id=call['what']) for call in LIVE_CALLS])
def test_each_call_of_the_live_setup_gives_segments_requests(call):
    subscriptions = load_subscriptions(LIVE_SETUP)
    matched = subscriptions_for(subscriptions, call['event'])
    assert [s.id for s in matched] == [row['subscription'] for row in call['expected']]
    for subscription, row in zip(matched, call['expected']):
        check(action_request(subscription, call['event']), row.get('request') or {'error': row['error']})


def test_a_signed_up_track_sends_the_event_then_upserts_the_contact():
    event = LIVE_CALLS[1]['event']
    assert event['event'] == 'Signed Up'
    requests = [action_request(s, event) for s in subscriptions_for(load_subscriptions(LIVE_SETUP), event)]
    assert [(r.method, r.path) for r in requests] == [('POST', '/v1/events/send'),
                                                      ('PUT', '/v1/contacts/update')]
    assert requests[1].body['firstName'] == 'Grace' and requests[1].body['userGroup'] == 'team plan'


def test_a_call_leaves_the_event_as_it_was():
    event = {'type': 'identify', 'userId': 'u-1',
             'traits': {'email': 'a@example.com', 'mailingLists': {'l': True}}}
    before = json.dumps(event)
    subscription = load_subscriptions(LIVE_SETUP)[0]
    assert action_request(subscription, event).body['mailingLists'] == {'l': True}
    assert json.dumps(event) == before


# --- Loading ------------------------------------------------------------------------------

def test_the_response_its_data_its_list_and_its_text_load_alike():
    document = json.loads(LIVE_SETUP)
    forms = [LIVE_SETUP, document, document['data'], document['data']['subscriptions'],
             json.dumps(document['data']['subscriptions'])]
    assert len({tuple(s.id for s in load_subscriptions(form)) for form in forms}) == 1


def problems_of(document) -> list:
    with pytest.raises(SubscriptionError) as raised:
        load_subscriptions(document)
    assert str(raised.value) == '\n'.join(raised.value.problems)
    return list(raised.value.problems)


def test_an_unknown_action_names_the_subscription():
    assert problems_of([subscription_entry('addToList', 'type = "identify"', {}, id='s9', name='Lists')]) == [
        "subscription 'Lists' (id s9): action: 'addToList' is not an action of Loops (Actions): "
        "createOrUpdateContact, sendEvent"]


def test_a_trigger_fql_cannot_read_names_the_subscription_and_the_position():
    assert problems_of([subscription_entry('sendEvent', 'type = "track', {}, id='s2', name='Tracks')]) == [
        "subscription 'Tracks' (id s2): trigger: the string opened at position 7 is not closed"]


def test_a_trigger_on_a_path_naming_no_field_fails_at_load_not_on_each_call():
    assert problems_of([subscription_entry('sendEvent', 'type = "track" or properties.\\[ = "x"', {})]) == [
        "subscription 'A subscription' (id sub_1): trigger: the field path '[' names no field"]


@pytest.mark.parametrize('trigger', ['', '   ', None])
def test_an_empty_trigger_is_refused(trigger):
    assert problems_of([subscription_entry('sendEvent', trigger, {})]) == [
        "subscription 'A subscription' (id sub_1): trigger: "
        'should be an FQL condition, such as type = "identify"']


def test_a_mapping_mapping_kit_refuses_names_each_place():
    settings = {'userId': {'@path': '$.userId'},
                'email': {'@if': {'exists': {'@path': '$.traits.email'},
                                  'then': {'@oops': '$.traits.email'}}},
                'firstName': {'@template': 7}}
    assert problems_of([subscription_entry('createOrUpdateContact', 'type = "identify"', settings,
                                           id='s3', name='Contacts')]) == [
        "subscription 'Contacts' (id s3): settings /email/@if/then: has an invalid directive: @oops.",
        "subscription 'Contacts' (id s3): settings /firstName/@template: "
        "should be a string or a mapping directive but it is a number."]


def test_every_problem_of_every_subscription_is_reported_at_once():
    problems = problems_of([
        subscription_entry('createOrUpdateContact', 'type = "identify"', {'userId': {'@path': '$.userId'}},
                           id='ok', name='Fine'),
        subscription_entry('addToList', '(type = "a"', {'a': {'@nope': 1}}, id='bad', name='Broken'),
        subscription_entry('sendEvent', 'type = "track"', ['not', 'an', 'object'], id='list', name='Listed')])
    assert problems == [
        "subscription 'Broken' (id bad): action: 'addToList' is not an action of Loops (Actions): "
        "createOrUpdateContact, sendEvent",
        "subscription 'Broken' (id bad): trigger: '(' at position 0 is not closed "
        "(in FQL the first ')' closes the open '(', parentheses do not nest)",
        "subscription 'Broken' (id bad): settings /a: has an invalid directive: @nope.",
        "subscription 'Listed' (id list): settings: should be an object mapping the action's fields"]


def test_disabled_and_reverse_etl_subscriptions_are_skipped_whatever_they_hold():
    document = [
        subscription_entry('addToList', '(type = "a"', {'a': {'@nope': 1}}, id='off', name='Off',
                           enabled=False),
        subscription_entry('createOrUpdateContact', 'event = "new"', {'userId': {'@path': '$.properties.id'}},
                           id='retl', name='Warehouse users', modelId='mdl_7')]
    assert load_subscriptions(document) == []
    assert [str(skipped) for skipped in skipped_subscriptions(document)] == [
        "subscription 'Off' (id off, addToList): disabled",
        "subscription 'Warehouse users' (id retl, createOrUpdateContact): "
        "maps the Reverse ETL model mdl_7, not Segment calls"]


def test_an_entry_without_what_it_needs_is_named_by_its_position():
    assert problems_of([{'id': 'x', 'name': 'No action', 'enabled': True, 'trigger': 'type = "track"',
                         'settings': {}}, 'text', {'enabled': 'yes'}]) == [
        "subscription 'No action' (id x): actionSlug: is missing",
        'subscription #2: should be an object',
        'subscription #3: enabled: should be true or false']


@pytest.mark.parametrize('document, problem', [
    ('{"data": ', 'the subscriptions are not JSON: Expecting value: line 1 column 10 (char 9)'),
    ({'data': {'items': []}}, 'the subscriptions should be the Public API\'s answer, '
                              '{"data": {"subscriptions": [...]}}, or its list of subscriptions'),
    ({'data': {'subscriptions': [], 'pagination': {'current': 'MA==', 'next': 'MQ=='}}},
     'the subscriptions are one page of several (pagination.next is set): '
     'give every page, or their subscriptions as one list')])
def test_a_document_of_another_shape_is_refused(document, problem):
    assert problems_of(document) == [problem]
