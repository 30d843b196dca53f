"""Our mapping language's `rules:`: any call an FQL trigger matches, to either
action (transforms/mapping/language.py), and what this tool guarantees when a
call takes several routes (transforms/mapping/processor.py): a request per
route, one upsert per contact and call, event sends apart, consent, history,
identity and the latest value winning across routes."""
import collections
import json
import re

import pytest

from pipeline.plain_backfill import PlainBackfill
from transforms.core.records import RawEvent, idempotency_key_for
from transforms.mapping.language import MappingError, mapping_from_dict
from transforms.mapping.processor import EventProcessor, Policy, Selection
from transforms.mapping.routes import call_types

SIGNED_UP_CONTACT = {
    'name': 'Signed Up updates the contact',
    'trigger': 'type = "track" and event = "Signed Up"',
    'contact': {'email': '$.properties.email', 'firstName': '$.properties.first_name',
                'source': {'literal': 'Signed Up form'}, 'properties': '$.properties',
                'skip': ['email', 'first_name', 'newsletter'],
                'mailingLists': '$.properties.lists'}}
MAPPING = mapping_from_dict({'rules': [SIGNED_UP_CONTACT]})
ALL_TYPES = ('identify', 'track', 'page', 'screen', 'group')


def track(event='Signed Up', message_id='m1', user_id='u1', timestamp='2026-11-01T10:00:00Z',
          **properties):
    return {'type': 'track', 'event': event, 'messageId': message_id, 'userId': user_id,
            'timestamp': timestamp, 'properties': properties}


def identify(message_id='i1', user_id='u1', timestamp='2026-11-01T10:00:00Z', **traits):
    return {'type': 'identify', 'messageId': message_id, 'userId': user_id,
            'timestamp': timestamp, 'traits': traits}


def process(event, mapping=MAPPING, policy=Policy(), types=ALL_TYPES):
    counts = collections.Counter()
    processor = EventProcessor(Selection(types, None, mapping), policy)
    return processor.process(RawEvent('f.gz', 1, json.dumps(event)), counts), counts


def kinds(processed):
    return [request.kind for request in processed.requests]


# --- rules route any call to either action

def test_a_signed_up_track_sends_its_event_and_updates_its_contact():
    processed, counts = process(track(email='ada@example.com', first_name='Ada', plan='pro',
                                      lists={'cm_news': 'yes'}))
    assert [route.name for route in processed.routes] == [
        'event', "rules[0] 'Signed Up updates the contact'"]
    send, upsert = processed.requests
    assert send.kind == 'event_send' and send.body['eventName'] == 'Signed Up'
    assert send.idempotency_key == idempotency_key_for('m1')   # as without rules
    assert upsert.kind == 'contact_upsert' and upsert.body == {
        'userId': 'u1', 'email': 'ada@example.com', 'firstName': 'Ada', 'plan': 'pro',
        'source': 'Signed Up form', 'mailingLists': {'cm_news': True}}
    assert upsert.contact == send.contact == 'user:u1' and upsert.stamp == send.stamp
    assert counts['map/more_routes'] == 1 and counts['filter/kept'] == 1


def test_other_tracks_take_only_the_event_section():
    processed, _ = process(track(event='Order Completed', total=3))
    assert kinds(processed) == ['event_send']
    assert [route.name for route in processed.routes] == ['event']


def test_a_rule_can_send_page_calls_as_events_and_the_types_it_routes_can_be_selected():
    mapping = mapping_from_dict({'rules': [{
        'trigger': 'type = "page" and properties.path = "/pricing"',
        'event': {'eventName': 'Viewed {name}', 'eventProperties': None,
                  'mailingLists': {'literal': {'cm_pricing': True}}}}]})
    assert call_types(mapping.routes) == {'identify', 'track', 'page'}
    page = {'type': 'page', 'name': 'Pricing', 'messageId': 'p1', 'userId': 'u1',
            'properties': {'path': '/pricing'}}
    processed, _ = process(page, mapping)
    (send,) = processed.requests
    assert send.body == {'eventName': 'Viewed Pricing', 'userId': 'u1',
                         'mailingLists': {'cm_pricing': True}}
    other, counts = process({**page, 'properties': {'path': '/'}}, mapping)
    assert other.requests == () and counts['filter/no_route'] == 1


def test_mailing_lists_ride_with_an_event_send_of_the_event_section():
    mapping = mapping_from_dict({'event': {'mailingLists': '$.properties.lists'}})
    processed, counts = process(
        track(event='Joined', lists=[{'listId': 'cm_a', 'subscribed': True}, {'bad': 1}]), mapping)
    (send,) = processed.requests
    assert send.body['mailingLists'] == {'cm_a': True}
    assert counts['map/dropped_mailing_list'] == 1


# --- several routes of one call

TWO_EVENTS = mapping_from_dict({'rules': [{'name': 'trial', 'trigger': 'event = "Signed Up"',
                                           'event': {'eventName': {'literal': 'Trial Started'}}}]})


def test_each_event_send_of_a_call_has_its_own_idempotency_key():
    processed, _ = process(track(), TWO_EVENTS)
    first, second = processed.requests
    assert (first.body['eventName'], second.body['eventName']) == ('Signed Up', 'Trial Started')
    assert first.idempotency_key == idempotency_key_for('m1')
    assert second.idempotency_key == idempotency_key_for('m1#trial')


def test_a_repeated_call_sends_each_routes_event_once():
    counts = collections.Counter()
    backfill = PlainBackfill(False, counts)
    for _ in range(2):   # the same line twice
        for request in process(track(), TWO_EVENTS)[0].requests:
            backfill.add(request)
    ((_, _, sends),) = list(backfill.event_sends())
    assert sorted(send.body['eventName'] for send in sends) == ['Signed Up', 'Trial Started']
    assert counts['order/duplicates'] == 2


def test_two_routes_writing_one_contact_from_one_call_make_one_upsert_the_later_winning():
    mapping = mapping_from_dict({'rules': [{
        'trigger': 'type = "identify" and traits.plan = "pro"',
        'contact': {'userGroup': {'literal': 'paying'}, 'properties': None,
                    'mailingLists': {'literal': {'cm_pro': True}}}}]})
    processed, counts = process(identify(userGroup='free', plan='pro',
                                         mailingLists={'cm_news': True}), mapping)
    (upsert,) = processed.requests
    assert upsert.body == {'userId': 'u1', 'userGroup': 'paying', 'plan': 'pro',
                           'source': 'Segment', 'mailingLists': {'cm_news': True, 'cm_pro': True}}
    assert counts['map/upserts_combined'] == 1 and counts['map/contact_updates'] == 2


def test_the_latest_value_wins_across_routes_whatever_the_order_of_the_calls():
    older_signup = track(email='ada@example.com', plan='trial', timestamp='2026-11-01T09:00:00Z')
    newer_identify = identify(plan='pro', timestamp='2026-11-01T10:00:00Z')
    for calls in ([older_signup, newer_identify], [newer_identify, older_signup]):
        backfill = PlainBackfill(False, collections.Counter())
        for call in calls:
            for request in process(call)[0].requests:
                backfill.add(request)
        (upsert,) = backfill.upserts()
        assert upsert.body['plan'] == 'pro' and upsert.body['email'] == 'ada@example.com'


def test_a_route_that_fails_costs_only_its_own_request_and_its_failure_names_it():
    processed, counts = process(track(email='not-an-email', user_id=None))
    assert processed.requests == ()
    assert [(f['stage'], f['reason'], f['message']) for f in processed.failures] == [
        ('map', 'invalid_email', "'not-an-email' is not a valid email address"),
        ('map', 'invalid_email', "rules[0] 'Signed Up updates the contact': "
                                 "'not-an-email' is not a valid email address")]
    assert counts['map/failed'] == 2
    refused, _ = process(track(email='not-an-email'))
    assert [f['message'] for f in refused.failures] == [
        "'not-an-email' is not a valid email address; the rest of the event was sent",
        "rules[0] 'Signed Up updates the contact': 'not-an-email' is not a valid email "
        "address; the rest of the event was sent"]
    assert kinds(refused) == ['event_send', 'contact_upsert']


# --- what holds whatever the mapping says

def test_history_holds_back_an_old_event_send_but_not_its_contact_update():
    policy = Policy(max_event_age_ms=3_600_000, now_ms=1_893_456_000_000)   # 2030
    processed, counts = process(track(email='ada@example.com'), policy=policy)
    assert kinds(processed) == ['contact_upsert']
    assert counts['held_back/old_events'] == 1


def test_consent_holds_back_subscribed_true_on_an_event_send_of_a_rule():
    mapping = mapping_from_dict({'rules': [{
        'trigger': 'event = "Opted In"',
        'event': {'contactProperties': {'subscribed': '$.properties.optIn'}}}]})
    processed, counts = process(track(event='Opted In', optIn='yes'), mapping,
                                Policy(resubscribe=False))
    assert [request.body.get('subscribed') for request in processed.requests] == [None, None]
    assert counts['held_back/resubscribes'] == 1


def test_identity_user_id_holds_for_rules_too():
    processed, counts = process(track(email='ada@example.com', user_id=None),
                                policy=Policy(require_user_id=True))
    assert processed.requests == () and counts['map/missing_user_id'] == 2


def test_a_call_turned_off_for_loops_takes_no_route():
    processed, counts = process({**track(), 'integrations': {'Loops (Actions)': False}})
    assert processed.requests == () and processed.routes == ()
    assert counts['filter/integrations_off'] == 1


# --- a document's rules, validated

@pytest.mark.parametrize('rules, message', [
    ({'trigger': 'type = "track"'}, 'rules: expected a list of rules, got an object'),
    (['type = "track"'], 'rules[0]: expected an object with a trigger and an action'),
    ([{'trigger': 'type = "track"'}], 'rules[0]: a rule has one action, contact or event, not none'),
    ([{'trigger': 'type = "track"', 'contact': {}, 'event': {}}],
     'rules[0]: a rule has one action, contact or event, not contact and event'),
    ([{'contact': {}}], 'rules[0].trigger: required: an FQL condition'),
    ([{'trigger': '  ', 'contact': {}}], 'rules[0].trigger: required: an FQL condition'),
    ([{'trigger': 'type = "track', 'contact': {}}],
     'rules[0].trigger: the string opened at position 7 is not closed'),
    ([{'trigger': 'properties.\\[ = "x"', 'contact': {}}],
     "rules[0].trigger: the field path '[' names no field"),
    ([{'trigger': 'type = "track"', 'contact': {}, 'when': 'always'}],
     'rules[0].when: unknown key (expected one of name, trigger, contact, event)'),
    ([{'trigger': 'type = "track"', 'contact': {'email': 'properties.email'}}],
     "rules[0].contact.email: 'properties.email' is not a path"),
    ([{'trigger': 'type = "track"', 'contact': {'userId': '$.properties.id'}}],
     'rules[0].contact.userId: userId is not mappable'),
    ([{'trigger': 'type = "track"', 'event': {'colon_replacement': ':'}}],
     'rules[0].event.colon_replacement: expected null or text without ":"'),
    ([{'trigger': 'type = "track"', 'event': {'mailingLists': []}}],
     'rules[0].event.mailingLists: an empty list'),
    ([{'trigger': 'type = "track"', 'contact': {'rename': {'a': 'email'}}}],
     "rules[0].contact.rename.a: 'email' is a Loops field or reserved name"),
    ([{'name': 'x', 'trigger': 'type = "track"', 'contact': {}},
      {'name': 'x', 'trigger': 'type = "identify"', 'event': {}}],
     "rules[1].name: 'x' is the name of rules[0] too"),
    ([{'name': 3, 'trigger': 'type = "track"', 'contact': {}}],
     'rules[0].name: expected text, got 3'),
])
def test_a_rule_that_cannot_be_used_says_where_and_why(rules, message):
    with pytest.raises(MappingError, match=re.escape(message)):
        mapping_from_dict({'rules': rules})


def test_a_rule_takes_its_actions_defaults_and_the_documents_value_rules():
    mapping = mapping_from_dict({'values': {'arrays': 'json'},
                                 'rules': [{'trigger': 'type = "group"', 'event': {}}]})
    rule = mapping.routes[-1]
    assert (rule.name, rule.trigger, rule.types) == ('rules[0]', 'type = "group"', {'group'})
    assert rule.spec.values == mapping.values and rule.spec.values.arrays == 'json'
    assert rule.spec.event_name == mapping.events['track'].event_name   # $.event
    assert mapping_from_dict({'rules': []}) == mapping_from_dict({})
