"""Property-based tests of the path every line takes before delivery: parse ->
filter -> map -> conform -> group and merge, on arbitrary JSON events.

Whatever a line holds, nothing raises, and every line ends as exactly one of:
a valid Loops request (scalar values, strings within limits, the required
fields; accepted by the local Loops server's own validation), a failure
record of the Avro schema with a reason, or a line filtered out by type.
Merging a contact's upserts gives a valid upsert whatever order they arrive
in, and every request survives the trip through a failure record that
`replay` reads back.
"""
import io
import json

import fastavro
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from pipeline.replay import request_of
from pipeline.local.rules import (EVENT_ONLY_KEYS, check_contact_body, check_event_properties,
                                  check_idempotency_key, check_scalar, identity_of)
from schemas import load_schema
from transforms.coalesce import arrange_contact_requests
from transforms.conform import AccountSchema, conform_body
from transforms.mapping import default_mapping, is_valid_loops_body, map_event
from transforms.parse import Rejected, event_text, parse_event
from transforms.process import keeps
from transforms.records import (CONTACT_UPDATE_PATH, EVENT_SEND_PATH, LoopsRequest,
                                failure_record, json_text)

MAPPING = default_mapping()
TYPES = frozenset({'identify', 'track'})
LIST_IDS = frozenset({'list_news', 'list_product'})
ACCOUNT = AccountSchema(
    {'email': 'string', 'firstName': 'string', 'plan': 'string', 'seats': 'number',
     'beta': 'boolean', 'createdAt': 'date', 'birthday': 'date'}, LIST_IDS)
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
events = plausible_events | arbitrary_events
# A line as it is read from an archive: mostly an event, sometimes anything.
lines = (events.map(lambda e: json.dumps(e, ensure_ascii=False).encode())
         | json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64))


# ------------------------------------------------------------------ the path

def process_line(line: bytes, source: str):
    """One archive line through the pure steps the backfill runs on it
    -> ('request', LoopsRequest) | ('failure', failure record) | ('filtered', None)."""
    try:
        event = parse_event(line, source)
    except Rejected as rejected:
        return 'failure', failure_record('parse', rejected.reason, rejected.message,
                                         event=event_text(line), source=source)
    if not keeps(event, TYPES, None):
        return 'filtered', None
    try:
        request = map_event(event, MAPPING).request
    except Rejected as rejected:
        return 'failure', failure_record('map', rejected.reason, rejected.message,
                                         event=json_text(event.data), source=source)
    try:
        body, _ = conform_body(request.body, ACCOUNT, 'send', is_event=request.is_event)
    except Rejected as rejected:
        return 'failure', failure_record('map', rejected.reason, rejected.message,
                                         request=request, source=source)
    return 'request', LoopsRequest(request.method, request.path, body, request.headers,
                                   request.contact, request.order, request.source)


def assert_loops_accepts(request: LoopsRequest) -> None:
    """The request is what Loops accepts: the project's own check, and the
    local Loops server's validation of the same endpoint (raises ApiError)."""
    body = request.body
    assert is_valid_loops_body(body), body
    assert json.loads(json.dumps(body, allow_nan=False)) == body
    assert isinstance(body.get('userId'), str) and body['userId'].strip() == body['userId'] != ''
    assert request.contact == body['userId']
    email, _ = identity_of(body)
    if request.path == CONTACT_UPDATE_PATH:
        assert request.method == 'PUT' and request.idempotency_key is None
        check_contact_body(body, LIST_IDS)
    else:
        assert (request.method, request.path) == ('POST', EVENT_SEND_PATH)
        assert isinstance(body['eventName'], str) and body['eventName'].strip()
        check_scalar('eventName', body['eventName'])
        check_idempotency_key(request.idempotency_key)
        assert request.idempotency_key
        check_contact_body(body, LIST_IDS, skip=EVENT_ONLY_KEYS)
        check_event_properties(body.get('eventProperties', {}))
    assert email is None or email == email.strip()


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
    outcomes = [process_line(line, f'archive.gz:{n}') for n, line in enumerate(batch, 1)]

    assert len(outcomes) == len(batch)
    for kind, value in outcomes:
        if kind == 'request':
            assert_loops_accepts(value)
        elif kind == 'failure':
            assert_valid_failure_record(value)
            assert value['stage'] in ('parse', 'map')
        else:
            assert kind == 'filtered'


@settings(max_examples=200, deadline=None)
@given(st.lists(events, min_size=1, max_size=6), st.randoms())
def test_merging_a_contacts_upserts_is_valid_and_independent_of_arrival_order(batch, rng):
    upserts = []
    for n, event in enumerate(batch):
        event = {**event, 'type': 'identify', 'userId': 'u1', 'messageId': f'm{n}'}
        kind, value = process_line(json.dumps(event).encode(), f'f:{n}')
        if kind == 'request':
            upserts.append(value)
    if not upserts:
        return
    merged = arrange_contact_requests(upserts, coalesce=True).requests
    shuffled = list(upserts)
    rng.shuffle(shuffled)
    assert [r.to_dict() for r in arrange_contact_requests(shuffled, coalesce=True).requests] == [
        r.to_dict() for r in merged]
    assert len(merged) == 1
    assert_loops_accepts(merged[0])


@settings(max_examples=200, deadline=None)
@given(events)
def test_a_request_comes_back_from_a_failure_record_exactly_as_it_was_sent(event):
    kind, request = process_line(json.dumps(event).encode(), 'f:1')
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
    assert process_line(json.dumps(event).encode(), 'f:1')[1].to_dict() == request.to_dict()


@pytest.mark.parametrize('event', [
    {'type': 'identify', 'userId': 'u1', 'traits': {'email': 'a@b.co', 'k' * 501: 1}},
    {'type': 'track', 'userId': 'u1', 'event': 'E', 'properties': {'k' * 501: 1}},
])
def test_a_property_name_loops_would_refuse_is_never_sent(event):
    kind, value = process_line(json.dumps(event).encode(), 'f:1')
    if kind == 'request':
        assert_loops_accepts(value)
    else:
        assert kind == 'failure'


@pytest.mark.parametrize('outcome', [
    ('request', CONTACT_UPDATE_PATH), ('request', EVENT_SEND_PATH),
    ('failure', 'parse'), ('failure', 'map'), ('filtered', None)])
def test_the_lines_reach_every_outcome(outcome):
    """Guards the properties above against lines that never reach one of the
    outcomes (they would pass while checking nothing there)."""
    def reaches(line):
        kind, value = process_line(line, 'f:1')
        detail = {'request': lambda: value.path, 'failure': lambda: value['stage'],
                  'filtered': lambda: None}[kind]()
        return (kind, detail) == outcome
    find(lines, reaches, settings=settings(max_examples=2000, database=None))
