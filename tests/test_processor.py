"""The per-event path (transforms/mapping/processor.py) on single events: what
it sends, the failure records it makes and what it counts, for the rules that
span mapping, holding back and fitting to the account."""
import collections
import json

from transforms.core.records import RawEvent
from transforms.mapping.conform import AccountSchema
from transforms.mapping.language import default_mapping, mapping_from_dict
from transforms.mapping.processor import EventProcessor, Policy, Selection, without_resubscribe

ACCOUNT = AccountSchema({'plan': 'string', 'addressCity': 'string'}, frozenset({'l1'}))


def process(event: dict, mapping=None, policy=Policy(), account=ACCOUNT):
    processor = EventProcessor(Selection(('identify', 'track'), None,
                                         mapping or default_mapping()), policy, account)
    counts = collections.Counter()
    processed = processor.process(RawEvent('f.gz', 3, json.dumps(event)), counts)
    return processed, counts


def request_of(processed):
    (request,) = processed.requests
    return request


def track(properties=None, **top):
    return {'type': 'track', 'userId': 'u1', 'messageId': 'm1', 'event': 'Ordered',
            'properties': properties or {}, **top}


def test_without_resubscribe_holds_back_only_subscribed_true():
    counts = collections.Counter()
    body = {'userId': 'u1', 'subscribed': True, 'plan': 'pro'}
    assert without_resubscribe(body, counts) == {'userId': 'u1', 'plan': 'pro'}
    assert body['subscribed'] is True   # the input is not changed
    for kept in ({'userId': 'u1', 'subscribed': False}, {'userId': 'u1'},
                 {'userId': 'u1', 'subscribed': 'true'}):
        assert without_resubscribe(kept, counts) is kept
    assert counts == {'held_back/resubscribes': 1}


def test_null_event_properties_are_never_sent_and_are_counted():
    processed, counts = process(track({'coupon': None, 'total': 12, 'gift': {'note': None}}))
    assert request_of(processed).body['eventProperties'] == {'total': 12}
    assert counts['map/dropped_null_event_properties'] == 2
    assert processed.failures == ()


SPREAD = mapping_from_dict({'event': {'contactProperties': '$.context.traits'}})


def test_an_events_contact_fields_are_sent_and_its_resubscribe_is_held_back():
    event = track(context={'traits': {'email': 'ann@example.com', 'firstName': 'Ann',
                                      'lastName': 'Lee', 'userGroup': 'beta', 'source': 'ads',
                                      'subscribed': True, 'plan': 'pro'}})

    held, counts = process(event, SPREAD, Policy(resubscribe=False))
    sent, sent_counts = process(event, SPREAD, Policy(resubscribe=True))

    assert request_of(held).body == {
        'eventName': 'Ordered', 'userId': 'u1',
        'firstName': 'Ann', 'lastName': 'Lee', 'userGroup': 'beta', 'source': 'ads',
        'plan': 'pro'}
    assert counts['held_back/resubscribes'] == 1
    assert request_of(sent).body == {**request_of(held).body, 'subscribed': True}
    assert sent_counts['held_back/resubscribes'] == 0


def test_an_opt_out_through_an_event_is_always_sent():
    event = track(context={'traits': {'subscribed': 'false'}})
    processed, counts = process(event, SPREAD, Policy(resubscribe=False))
    assert request_of(processed).body['subscribed'] is False
    assert counts['held_back/resubscribes'] == 0


def test_an_invalid_email_with_a_user_id_is_one_conform_record_and_the_rest_is_sent():
    event = {'type': 'identify', 'userId': 'u1', 'messageId': 'm1',
             'traits': {'email': 'ann@example', 'plan': 'pro'}}

    processed, counts = process(event)

    assert request_of(processed).body == {'userId': 'u1', 'plan': 'pro', 'source': 'Segment'}
    (failure,) = processed.failures
    assert (failure['stage'], failure['reason'], failure['source']) == (
        'conform', 'invalid_email', 'f.gz:3')
    assert json.loads(failure['event']) == event
    assert counts['refused/invalid_email'] == 1 and counts['map/failed'] == 0


def test_an_invalid_email_without_a_user_id_still_fails_the_whole_call():
    processed, counts = process({'type': 'identify', 'traits': {'email': 'ann@example'}})
    assert processed.requests == ()
    assert [(f['stage'], f['reason']) for f in processed.failures] == [('map', 'invalid_email')]
    assert counts['map/invalid_email'] == 1


def test_nested_traits_become_camel_case_properties_the_account_can_hold():
    event = {'type': 'identify', 'userId': 'u1', 'traits': {'address': {'city': 'Oslo'}}}
    processed, counts = process(event, account=ACCOUNT)
    assert request_of(processed).body == {'userId': 'u1', 'addressCity': 'Oslo',
                                      'source': 'Segment'}
    assert counts['conform/unknown_property_sent'] == 0
