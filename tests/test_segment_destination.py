"""Segment's own tests of its "Loops (Actions)" destination, run through this tool.

tests/data/segment/loops_destination_cases.json holds, as data, every test case
of segmentio/action-destinations' packages/destination-actions/src/destinations/
loops/**/__tests__ (commit 970a17e, `cases`), and 18 cases of the destination's
default mappings (`derived_cases`), each with the Segment event, the Mapping
Kit mapping and the request Segment's code made (or its error), all obtained
by running Segment's code.

Each case runs through what a backfill does with one event, on the
backfill's defaults (no --resubscribe): the per-event path (EventProcessor)
then the backfill's merge and consent (PlainBackfill). A case whose mapping
our mapping language can express runs with it written in our language; every
other case (the upstream tests map fields with Mapping Kit on calls Segment
hands an action directly) runs as a Segment subscription, as
--segment_subscriptions runs it. Our request must be Segment's, except where
one of our documented rules decides otherwise: always, an empty
`mailingLists` is not sent (EMPTY_MAILING_LISTS) and a backfill holds back
`subscribed: true` (CONSENT); and for the cases in OURS, what we do instead
and why (the list of differences in docs/mapping.md). A call Segment refuses
is refused for that subscription, with Segment's message. Segment's user
deletion (onDelete) is checked against this tool's deletion of a delete
message.
"""
import collections
import json
import os
from typing import NamedTuple, Optional, Union

import pytest

from pipeline.plain_backfill import PlainBackfill
from transforms.core.records import RawEvent
from transforms.mapping.language import mapping_from_dict
from transforms.mapping.loops_actions import LOOPS_ACTIONS
from transforms.mapping.processor import EventProcessor, Policy, Selection
from transforms.mapping.segment_routes import segment_mapping

CASES_FILE = os.path.join(os.path.dirname(__file__), 'data', 'segment',
                          'loops_destination_cases.json')
with open(CASES_FILE, encoding='utf-8') as _file:
    _DATA = json.load(_file)
CASES = _DATA['cases'] + _DATA['derived_cases']
LOOPS_API = 'https://app.loops.so/api'
DELETIONS = ('Segment sends the userId as a one-element array; Loops documents one id as a '
             'string (transforms/segment/deletions.py)')
EMPTY_MAILING_LISTS = ('Segment always sends mailingLists, {} when there are none; we send it '
                       'only with a list in it (an empty object changes nothing in Loops)')
CONSENT = ('consent: a backfill never sends subscribed: true without --resubscribe (it '
           're-subscribes whoever unsubscribed); it is held back and counted')


def case_id(case: dict) -> str:
    """'D5' for a derived case, else the upstream test's file and title."""
    source = case['source']
    prefix = 'derived (not an upstream test): '
    return source[len(prefix):].split(' ', 1)[0] if source.startswith(prefix) else source


class Ours(NamedTuple):
    """What this tool does with a case where it differs from Segment, and why.
    body: the request body sent (None: no request); refused: (stage, reason)
    of the failure records; counted: counters that must be set;
    fallback_email: the email an event by userId goes with only when Loops
    has no contact of that userId."""
    why: str
    body: Optional[dict]
    refused: tuple = ()
    counted: dict = {}
    fallback_email: Optional[str] = None


# Why an event by userId goes without its email (docs/mapping.md).
FALLBACK_EMAIL = ('an event that has a userId goes without its email, which would set the '
                  "contact's email to the event's (older, or someone else's: properties.email "
                  'is an invitee\'s in some tracks); the email is sent only if Loops answers '
                  'that it has no contact of that userId, so that it is still created')


OURS = {
    'D2': Ours('mailing-list flags are read as yes/no values, as `subscribed` is: 1 is a '
               'yes (Segment keeps only booleans and "true"/"false"); an unusable flag is '
               'counted', {'userId': 'u-2', 'email': 'b@example.com', 'source': 'Segment',
                           'mailingLists': {'list_a': True, 'list_b': False, 'list_d': True}},
               counted={'map/dropped_mailing_list': 1}),
    'D5': Ours('`subscribed` is sent as a boolean ("false" -> false) and dates as ISO-8601 '
               '(Segment spreads both traits raw)',
               {'userId': 'u-5', 'email': 'd@example.com', 'source': 'Segment',
                'subscribed': False, 'createdAt': '2020-01-01T00:00:00.000Z'},
               counted={'contacts/unsubscribes': 1}),
    'D6': Ours('Loops holds only flat scalars: nested objects are flattened to camelCase '
               'names and arrays joined (Segment sends them as they are, and Loops refuses '
               'them)', {'userId': 'u-6', 'email': 'e@example.com', 'phone': None,
                         'addressCity': 'Paris', 'tags': 'a, b', 'firstName': '',
                         'source': 'Segment'},
               counted={'map/flattened': 1, 'map/joined': 1}),
    'D7': Ours('a call without a userId is sent by its email, a lead (Loops finds contacts '
               'by either; Segment requires a userId)',
               {'email': 'f@example.com', 'source': 'Segment'}),
    'D8': Ours('an invalid email costs only itself: the rest is sent by userId and the '
               'email is a conform-stage failure record (Segment refuses the whole call)',
               {'userId': 'u-8', 'source': 'Segment'}, refused=(('conform', 'invalid_email'),),
               counted={'refused/invalid_email': 1}),
    'D10': Ours('a blank email is no email (Segment drops the field but its spread of the '
                'traits still sends "email": "")', {'userId': 'u-10', 'source': 'Segment'}),
    'D13': Ours(FALLBACK_EMAIL, {'eventName': 'Signed Up', 'userId': 'u-13', 'eventProperties': {
        'plan': 'pro', 'email': 'p@example.com', 'seats': 3}}, fallback_email='p@example.com'),
    'D14': Ours(FALLBACK_EMAIL, {'eventName': 'Signed Up', 'userId': 'u-14',
                                 'eventProperties': {'plan': 'pro'}},
                fallback_email='ctx@example.com'),
    'D15': Ours('an empty eventProperties is not sent (nothing to send)',
                {'eventName': 'Signed Up', 'userId': 'u-15'}),
    'D16': Ours('both refuse the call; Segment for its missing userId, we for having '
                'neither a userId nor an email', None, refused=(('map', 'missing_identity'),)),
    'D17': Ours("an event's own name and contact are never overwritten by its contact "
                "properties; what is left out is counted; and " + FALLBACK_EMAIL,
                {'eventName': 'Signed Up', 'userId': 'u-17', 'firstName': 'Ctx',
                 'eventProperties': {'a': 1}},
                counted={'map/dropped_other_identity': 1, 'map/dropped_event_field': 1},
                fallback_email='ctx@example.com'),
    'D18': Ours('Loops event properties cannot be null: null values are left out and '
                'counted', {'eventName': 'Signed Up', 'userId': 'u-18'},
                counted={'map/dropped_null_event_properties': 2}),
}
# Cases that are not a mapping of an event: why, and where this tool's own is tested.
NOT_A_MAPPING = {
    'testAuthentication': "the API key check (GET /v1/api-key with the key as a Bearer token) "
                          "is the client's: tests/test_loops_client.py",
    'onDelete': 'a user deletion: test_segments_user_deletion_is_our_contact_deletion',
}

# How Segment's actions and fields are written in our mapping language.
CALL_TYPES = {'createOrUpdateContact': 'identify', 'sendEvent': 'track'}
SECTIONS = {'createOrUpdateContact': 'contact', 'sendEvent': 'event'}
OUR_KEYS = {
    'createOrUpdateContact': {'email': 'email', 'firstName': 'firstName',
                              'lastName': 'lastName', 'source': 'source',
                              'subscribed': 'subscribed', 'userGroup': 'userGroup',
                              'createdAt': 'createdAt', 'mailingLists': 'mailingLists',
                              'customAttributes': 'properties'},
    'sendEvent': {'eventName': 'eventName', 'email': 'email',
                  'eventProperties': 'eventProperties', 'contactProperties': 'contactProperties'},
}
PATH_ONLY = {'properties', 'eventProperties'}   # our keys that take a path, not a literal


def our_mapping(case: dict) -> Union[dict, str]:
    """The case's mapping as a document of our mapping language, or why it
    cannot be written in it."""
    action = case['action']
    if case['event'].get('type') != CALL_TYPES[action]:
        return (f"{action} on a {case['event'].get('type')} call (our contact section maps "
                "identify calls, our event section track calls)")
    given = case['mapping'] or {}
    if 'userId' in given and given['userId'] != {'@path': '$.userId'}:
        return "a userId other than the call's (ours is always the call's userId)"
    section = {}
    for field, value in given.items():
        if field == 'userId':
            continue
        key = OUR_KEYS[action][field]
        source = _source(value, key in PATH_ONLY, key == 'contactProperties')
        if isinstance(source, str) and not source.startswith('$'):
            return f'{field}: {source}'
        section[key] = source
    if not case['use_default_mappings']:
        return "a mapping without the destination's defaults"
    return {SECTIONS[action]: section} if section else {}


def _source(value, path_only: bool, per_key: bool):
    """A Mapping Kit value -> our source, or text saying why it has none."""
    if isinstance(value, dict) and list(value) == ['@path']:
        return value['@path']
    if isinstance(value, dict) and any(key.startswith('@') for key in value):
        return f'a Mapping Kit directive ({", ".join(value)})'
    if path_only:
        return 'a literal where our language takes a path'
    if per_key and isinstance(value, dict):
        return {key: _source(item, False, False) for key, item in value.items()}
    return {'literal': value}


def segment_subscriptions(case: dict) -> list:
    """The case as the Public API lists a subscription: its action, its
    mapping (with the action's defaults under it when the test uses them,
    as Segment's testAction does) and a trigger taking the case's call."""
    action = LOOPS_ACTIONS[case['action']]
    mapping = case['mapping'] or {}
    if case['use_default_mappings']:
        defaults = {field.name: field.default for field in action.fields
                    if field.default is not None}
        mapping = {**defaults, **mapping}
    return [{'id': 'sub_case', 'name': case_id(case), 'actionSlug': action.slug,
             'destinationId': 'dst_loops', 'modelId': '', 'enabled': True,
             'trigger': f'type = "{case["event"]["type"]}"', 'settings': mapping}]


def case_mapping(case: dict):
    """The case's mapping: written in our language when it can be, else as
    Segment's subscription."""
    document = our_mapping(case)
    if isinstance(document, dict):
        return mapping_from_dict(document)
    return segment_mapping(segment_subscriptions(case))


def run_case(case: dict, mapping) -> tuple:
    """The case's event through one backfill on its defaults -> (requests,
    failure records, counts)."""
    counts = collections.Counter()
    processor = EventProcessor(Selection(('identify', 'track'), None, mapping),
                               Policy(resubscribe=False))
    processed = processor.process(RawEvent('case', 1, json.dumps(case['event'])), counts)
    backfill = PlainBackfill(False, counts)
    for request in processed.requests:
        backfill.add(request)
    requests = list(backfill.upserts()) + [
        request for _, _, sends in backfill.event_sends() for request in sends]
    return requests, processed.failures, counts


def by_our_rules(expected: dict) -> Ours:
    """Segment's outcome where no rule of ours listed in OURS decides
    otherwise: its body without an empty mailingLists, without subscribed:
    true (held back), an event's without its email when it has a userId;
    its refusal, a failure of the subscription."""
    if 'body' not in expected:
        return Ours("Segment refuses the call: so do we, for that subscription", None,
                    refused=(('map', 'action_refused'),))
    body = {key: value for key, value in expected['body'].items()
            if not (key == 'mailingLists' and value == {})}
    if body.get('subscribed') is True:
        del body['subscribed']
        return Ours(CONSENT, body, counted={'held_back/resubscribes': 1})
    if expected['url'].endswith('/events/send') and 'userId' in body and 'email' in body:
        return Ours(FALLBACK_EMAIL, body, fallback_email=body.pop('email'))
    return Ours(EMPTY_MAILING_LISTS, body)


def _params() -> list:
    params = []
    for case in CASES:
        marks = ()
        if case['action'] in NOT_A_MAPPING:
            marks = pytest.mark.skip(reason=f'not a mapping: {NOT_A_MAPPING[case["action"]]}')
        params.append(pytest.param(case, id=case_id(case), marks=marks))
    return params


@pytest.mark.parametrize('case', _params())
def test_our_request_is_segments_but_where_our_rules_decide(case):
    expected = case['expected']
    requests, failures, counts = run_case(case, case_mapping(case))
    ours = OURS.get(case_id(case)) or by_our_rules(expected)
    assert [(failure['stage'], failure['reason']) for failure in failures] == list(ours.refused)
    assert {name: counts[name] for name in ours.counted} == ours.counted
    if ours.body is None:
        assert requests == []
        assert 'error' in expected
        if ours.refused == (('map', 'action_refused'),):   # Segment's own message
            assert failures[0]['message'] == f"subscription '{case_id(case)}' (id sub_case, " \
                f"{case['action']}): {expected['error']}"
        return
    (request,) = requests
    assert request.body == ours.body
    assert request.fallback_email == ours.fallback_email
    if 'body' in expected:
        assert (request.method, LOOPS_API + request.path) == (expected['method'],
                                                             expected['url'])
        assert request.headers['Content-Type'] == expected['headers']['content-type']
    if request.path == '/v1/events/send':
        assert request.headers['Idempotency-Key']   # Segment sends none: a repeat re-sends


def test_segments_user_deletion_is_our_contact_deletion():
    (case,) = [case for case in CASES if case['action'] == 'onDelete']
    expected = case['expected']
    # Segment calls onDelete for its delete message and reads only the userId
    # (its test hands it a track call); the stream deletes on the message.
    message = {**case['event'], 'type': 'delete'}
    selection = Selection(('identify', 'track'), None, mapping_from_dict({}), deletions=True)
    processed = EventProcessor(selection).process(
        RawEvent('case', 1, json.dumps(message)), collections.Counter())

    (request,) = processed.requests
    assert (request.method, LOOPS_API + request.path) == (expected['method'], expected['url'])
    assert expected['body'] == {'userId': [case['event']['userId']]}
    assert request.body == {'userId': case['event']['userId']}, DELETIONS


def test_every_difference_names_a_case_that_runs_and_says_why():
    in_our_language = {case_id(case) for case in CASES
                       if case['action'] not in NOT_A_MAPPING
                       and isinstance(our_mapping(case), dict)}
    assert set(OURS) <= in_our_language
    assert all(ours.why for ours in OURS.values())
    # Every derived case is written in our language; every upstream test needs
    # Segment's own mappings, and runs as a subscription: all 20 of them.
    assert in_our_language == {case_id(case) for case in _DATA['derived_cases']}
    as_subscriptions = [case for case in CASES if case['action'] not in NOT_A_MAPPING
                        and isinstance(our_mapping(case), str)]
    assert len(as_subscriptions) == 20


@pytest.mark.parametrize('case_name, expected', [
    ('D12', {'contact': {'subscribed': {'literal': True},
                         'mailingLists': {'literal': {'list_x': 'true'}}}}),
    ('D17', {'event': {'contactProperties': '$.context.traits'}}),
    ('D1', {}),
])
def test_segment_mappings_written_in_our_language(case_name, expected):
    (case,) = [case for case in CASES if case_id(case) == case_name]
    assert our_mapping(case) == expected
