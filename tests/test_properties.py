"""Property-based tests of the path every line takes before delivery
(EventProcessor: parse -> filter -> map -> hold back -> fit to the account),
and of the contact model that merges a contact's upserts, on arbitrary JSON.

Whatever a line holds, nothing raises, and every line ends as exactly one of:
a valid Loops request (scalar values, strings within limits, the required
fields; accepted by the local Loops server's own validation), with a failure
record for each part the account refused; a failure record of the Avro
schema with a reason; a line filtered out by type; an event held back as
too old. Merging a contact's upserts gives a valid upsert whatever order
they arrive in; the merge is associative, commutative and idempotent; and
every request survives the trip through a failure record that `replay`
reads back.
"""
import collections
import io
import json

import fastavro
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from pipeline.local.rules import (EVENT_ONLY_KEYS, check_contact_body, check_event_properties,
                                  check_idempotency_key, check_scalar, identity_of)
from pipeline.replay import request_of
from schemas import load_schema
from transforms.contacts.merge import upsert_from_state
from transforms.contacts.model import body_of, merge, state_of
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND
from transforms.core.records import LoopsRequest, RawEvent, Stamp, contact_key, failure_record
from transforms.mapping.conform import AccountSchema
from transforms.mapping.language import default_mapping
from transforms.mapping.build import is_valid_loops_body
from transforms.mapping.processor import EventProcessor, Policy, Selection

LIST_IDS = frozenset({'list_news', 'list_product'})
ACCOUNT = AccountSchema(
    {'email': 'string', 'firstName': 'string', 'plan': 'string', 'seats': 'number',
     'beta': 'boolean', 'createdAt': 'date', 'birthday': 'date'}, LIST_IDS)
# Events before 2025-11-01 (and those of no known time) are held back.
NOW_MS = 1793491200000              # 2026-11-01T00:00:00Z
YEAR_MS = 365 * 86_400_000
PROCESSOR = EventProcessor(Selection(('identify', 'track'), None, default_mapping()),
                           Policy(max_event_age_ms=YEAR_MS, now_ms=NOW_MS), ACCOUNT, 'send')
FAILURE_SCHEMA = load_schema('failure')

# ------------------------------------------------------------------ strategies

scalars = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=600))
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=12)
good_emails = st.sampled_from(['ada@example.com', 'Zoë.Müller@exämple.de', ' bob@example.com '])
emails = good_emails | st.sampled_from(['not-an-email', '', 'a@b', 'x' * 600 + '@example.com',
                                        'ADA@EXAMPLE.COM']) | json_values
timestamps = st.sampled_from([
    '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00+05:30', '2026-11-01T10:00:00+0530',
    '2026-11-01 10:00:00', '2016', '2015-2-02', 1761991200000, None, 'yesterday']) | json_values
mailing_lists = (st.dictionaries(st.sampled_from(['list_news', 'list_product', 'list_gone']),
                                 st.booleans() | st.sampled_from(['true', 'false', 'yes']))
                 | st.lists(st.fixed_dictionaries({'listId': st.text(max_size=12),
                                                   'subscribed': json_values}), max_size=2)
                 | json_values)
names = st.sampled_from(['email', 'firstName', 'first_name', 'lastName', 'userGroup',
                         'subscribed', 'source', 'id', 'userId', 'plan', 'seats', 'beta',
                         'createdAt', 'birthday', 'Invited User?', 'utm.source', '$browser',
                         'address', 'tags', '']) | st.text(max_size=8)
free_form = st.builds(
    lambda known, other: {**other, **known},
    st.fixed_dictionaries({}, optional={'email': emails, 'mailingLists': mailing_lists}),
    st.dictionaries(names, json_values, max_size=6))
optional_fields = {
    'messageId': st.text(max_size=120) | json_values,
    'anonymousId': st.text(max_size=10),
    'timestamp': timestamps, 'receivedAt': timestamps, 'sentAt': timestamps,
    'traits': free_form | json_values,
    'properties': free_form | json_values,
    'context': st.fixed_dictionaries({}, optional={'traits': free_form}) | json_values,
    'email': emails,
}
# Events that may well become requests, and events that may be anything.
plausible_events = st.fixed_dictionaries(
    {'type': st.sampled_from(['identify', 'track']), 'userId': st.sampled_from(['u1', 'u2', 42]),
     'event': st.sampled_from(['Signed Up', 'Order Completed'])}, optional=optional_fields)
arbitrary_events = st.fixed_dictionaries(
    {'type': st.sampled_from(['identify', 'track', 'Identify', 'page', 'alias']) | json_values},
    optional={**optional_fields,
              'userId': st.sampled_from(['u1', ' u1 ', 42, 4.5, True, '', 'u' * 501]) | json_values,
              'event': st.sampled_from(['Signed Up', '', ' ', 'x' * 501]) | json_values})
# Plausible events of a time within the age limit: the ones that reach the
# account's schema (and so its refusals) rather than being held back.
recent_events = st.builds(lambda event, at: {**event, 'timestamp': at}, plausible_events,
                          st.sampled_from(['2026-11-01T10:00:00.000Z', 1791000000000]))
# Recent identifies with a part the account refuses (a list it lacks, a
# value its property's type can't hold), beside valid traits.
refusable_events = st.builds(
    lambda refused, traits: {'type': 'identify', 'userId': 'u1',
                             'timestamp': '2026-11-01T10:00:00.000Z',
                             'traits': {**traits, **refused, 'email': 'ada@example.com'}},
    st.sampled_from([{'mailingLists': {'list_gone': True}}, {'seats': 'many'},
                     {'beta': 'perhaps'}]),
    st.dictionaries(names, json_values, max_size=3))
events = plausible_events | recent_events | refusable_events | arbitrary_events
# A line as it is read from an archive: mostly an event, sometimes anything.
lines = (events.map(lambda e: json.dumps(e, ensure_ascii=False).encode())
         | json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64))


# ------------------------------------------------------------------ the path

def process_line(line: bytes, source: str, number: int = 1):
    """One archive line through EventProcessor -> (outcome, value, refused parts):
    ('request', LoopsRequest) | ('failure', failure record) | ('filtered', None)
    | ('held_back', None), and the failure records of the parts refused."""
    counts = collections.Counter()
    processed = PROCESSOR.process(RawEvent(source, number, line), counts)
    if processed.requests:
        (request,) = processed.requests   # the default mapping: one route per call type
        return 'request', request, processed.failures
    if processed.failures:
        (failure,) = processed.failures
        return 'failure', failure, ()
    if counts['held_back/old_events']:
        return 'held_back', None, ()
    assert counts['filter/filtered_out'] == 1, counts
    return 'filtered', None, ()


def assert_loops_accepts(request: LoopsRequest) -> None:
    """The request is what Loops accepts: the project's own check, and the
    local Loops server's validation of the same endpoint (raises ApiError)."""
    body = request.body
    assert is_valid_loops_body(body), body
    assert json.loads(json.dumps(body, allow_nan=False)) == body
    email, user_id = identity_of(body)
    assert user_id is None or user_id.strip() == user_id != ''
    assert email is None or email == email.strip()
    assert request.contact == contact_key(user_id, email)
    if request.kind == CONTACT_UPSERT.name:
        assert (request.method, request.path) == (CONTACT_UPSERT.method, CONTACT_UPSERT.path)
        assert request.idempotency_key is None
        check_contact_body(body, LIST_IDS, ACCOUNT.properties)
    else:
        assert request.kind == EVENT_SEND.name
        assert (request.method, request.path) == (EVENT_SEND.method, EVENT_SEND.path)
        assert isinstance(body['eventName'], str) and body['eventName'].strip()
        check_scalar('eventName', body['eventName'])
        check_idempotency_key(request.idempotency_key)
        assert request.idempotency_key
        check_contact_body(body, LIST_IDS, ACCOUNT.properties, skip=EVENT_ONLY_KEYS)
        check_event_properties(body.get('eventProperties', {}))


def assert_valid_failure_record(record: dict) -> None:
    assert record['reason'] and record['message']
    assert fastavro.validation.validate(record, FAILURE_SCHEMA)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, FAILURE_SCHEMA, record)
    buffer.seek(0)
    assert fastavro.schemaless_reader(buffer, FAILURE_SCHEMA)['reason'] == record['reason']


# ------------------------------------------------------------------ properties

@settings(max_examples=300, deadline=None)
@given(st.lists(lines, min_size=1, max_size=8))
def test_every_line_becomes_a_valid_request_a_failure_record_or_is_filtered(batch):
    outcomes = [process_line(line, 'archive.gz', n) for n, line in enumerate(batch, 1)]

    assert len(outcomes) == len(batch)
    for kind, value, refused in outcomes:
        if kind == 'request':
            assert_loops_accepts(value)
        elif kind == 'failure':
            assert_valid_failure_record(value)
            assert value['stage'] in ('parse', 'map')
        else:
            assert kind in ('filtered', 'held_back') and value is None
        for part in refused:
            assert_valid_failure_record(part)
            assert part['stage'] == 'conform'


@settings(max_examples=200, deadline=None)
@given(st.lists(events, min_size=1, max_size=6), st.randoms())
def test_merging_a_contacts_upserts_is_valid_and_independent_of_arrival_order(batch, rng):
    upserts = []
    for n, event in enumerate(batch):
        event = {**event, 'type': 'identify', 'userId': 'u1', 'messageId': f'm{n}'}
        kind, value, _ = process_line(json.dumps(event).encode(), 'f', n + 1)
        if kind == 'request':
            upserts.append(value)
    if not upserts:
        return
    shuffled = list(upserts)
    rng.shuffle(shuffled)
    merged = merge(*(state_of(r.body, r.stamp) for r in upserts))
    assert merge(*(state_of(r.body, r.stamp) for r in shuffled)) == merged
    for resubscribe in (False, True):
        upsert = upsert_from_state('user:u1', merged, resubscribe, collections.Counter())
        assert upsert.contact == 'user:u1'
        assert_loops_accepts(upsert)


@settings(max_examples=200, deadline=None)
@given(events)
def test_a_request_comes_back_from_a_failure_record_exactly_as_it_was_sent(event):
    kind, request, _ = process_line(json.dumps(event).encode(), 'f')
    if kind != 'request':
        return
    record = failure_record('deliver', 'retries_exhausted', 'no answer', request=request,
                            attempts=6, source=request.source)
    assert_valid_failure_record(record)
    replayed = request_of(record)
    assert replayed.to_dict() == request.to_dict()
    assert replayed.idempotency_key == request.idempotency_key
    assert replayed.contact == request.contact
    # The same event always gives the same request, Idempotency-Key included.
    assert process_line(json.dumps(event).encode(), 'f')[1].to_dict() == request.to_dict()


@pytest.mark.parametrize('event', [
    {'type': 'identify', 'userId': 'u1', 'traits': {'email': 'a@b.co', 'k' * 501: 1}},
    {'type': 'track', 'userId': 'u1', 'event': 'E', 'timestamp': '2026-11-01T10:00:00Z',
     'properties': {'k' * 501: 1}},
])
def test_a_property_name_loops_would_refuse_is_never_sent(event):
    kind, value, _ = process_line(json.dumps(event).encode(), 'f')
    assert kind == 'request'
    assert_loops_accepts(value)


@pytest.mark.parametrize('outcome', [
    ('request', CONTACT_UPSERT.name), ('request', EVENT_SEND.name),
    ('refused', 'conform'), ('failure', 'parse'), ('failure', 'map'),
    ('filtered', None), ('held_back', None)])
def test_the_lines_reach_every_outcome(outcome):
    """Guards the properties above against lines that never reach one of the
    outcomes (they would pass while checking nothing there)."""
    def reaches(line):
        kind, value, refused = process_line(line, 'f')
        if outcome[0] == 'refused':
            return bool(refused)
        detail = {'request': lambda: value.kind, 'failure': lambda: value['stage'],
                  'filtered': lambda: None, 'held_back': lambda: None}[kind]()
        return (kind, detail) == outcome
    # The first line that reaches it is enough: no shrinking.
    find(lines, reaches, settings=settings(max_examples=2000, database=None,
                                           phases=(Phase.generate,)))


# ------------------------------------------------------------------ the merge's laws

# Few distinct stamps, so that equal stamps with different values are common.
stamps = st.builds(Stamp, st.integers(0, 2), st.integers(0, 1), st.sampled_from(['', 'm1', 'm2']))
# 1 and 1.0, 0.0 and -0.0: values that are equal numbers of different Python types.
state_values = (st.none() | st.booleans() | st.integers(-3, 3)
                | st.sampled_from([1.0, 0.0, -0.0, 2.5, 'pro', 'free', '']))
bodies = st.fixed_dictionaries(
    {}, optional={'email': st.sampled_from(['a@example.com', 'b@example.com']),
                  'subscribed': st.booleans(),
                  'mailingLists': st.dictionaries(st.sampled_from(['list_news', 'list_gone']),
                                                  st.booleans(), max_size=2)}
) | st.dictionaries(st.sampled_from(['plan', 'seats', 'beta', 'userId']), state_values,
                    max_size=4)
states = st.lists(st.tuples(bodies, stamps), max_size=4).map(
    lambda updates: merge(*(state_of(body, stamp) for body, stamp in updates)))


def same(a: dict, b: dict) -> bool:
    """Equal as Loops receives them: under the same stamps, values of the same
    JSON kind and equal (1 and 1.0 are one JSON number; True is not 1)."""
    def kind(value):
        return 'number' if type(value) in (int, float) else type(value).__name__

    def typed(state):
        return {key: (stamp, kind(value), value) for key, (stamp, value) in state.items()}
    return typed(a) == typed(b)


@settings(max_examples=300, deadline=None)
@given(states, states, states)
def test_merge_is_associative(a, b, c):
    assert same(merge(merge(a, b), c), merge(a, merge(b, c)))


@settings(max_examples=300, deadline=None)
@given(states, states)
def test_merge_is_commutative(a, b):
    assert same(merge(a, b), merge(b, a))


@settings(max_examples=300, deadline=None)
@given(states)
def test_merge_is_idempotent(a):
    assert same(merge(a, a), a)
    assert same(merge(a, {}), a)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(bodies, stamps), min_size=1, max_size=5), st.randoms())
def test_folding_bodies_in_any_order_and_grouping_gives_one_state(updates, rng):
    shuffled = list(updates)
    rng.shuffle(shuffled)
    one_by_one = merge(*(state_of(body, stamp) for body, stamp in updates))
    cut = rng.randint(0, len(shuffled))
    grouped = merge(merge(*(state_of(b, s) for b, s in shuffled[:cut])),
                    merge(*(state_of(b, s) for b, s in shuffled[cut:])))
    assert same(grouped, one_by_one)
    assert body_of(grouped) == body_of(one_by_one)
