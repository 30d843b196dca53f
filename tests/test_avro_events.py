"""Segment events survive a real Avro file: transforms.segment.avro_events with fastavro."""
import fastavro
import pytest

from pipeline.local.samples import generate_events
from schemas import load_schema
from transforms.segment.avro_events import from_avro_record, to_avro_record

SCHEMA = load_schema('segment_event')
FIELD_NAMES = [field['name'] for field in SCHEMA['fields']]
# A null in one of these reads back as an absent key, by the schema's design.
NULL_MEANS_ABSENT = set(FIELD_NAMES) - {'extra'}

ODD_EVENTS = {
    'identify with odd keys': {
        'type': 'identify', 'messageId': 'ajs-next-1793491200000-5bc8fbbc',
        'userId': 'usr_1', 'timestamp': '2026-11-01T00:00:00.000Z',
        'traits': {'Invited User?': True, '$browser': 'Firefox', 'utm.source': 'x',
                   'Lieblingsfarbe 🎨': 'grün', 'first name': 'Zoë', 'nested': [[1, [2]], {}]},
    },
    'numeric userId and version 2': {
        'type': 'track', 'event': 'Order Completed', 'userId': 100003, 'version': 2,
        'properties': {'revenue': '49.99', 'products': [{'id': 'a', 'tags': ['x']}]},
    },
    'float userId and version 1.1': {
        'type': 'page', 'userId': 12.5, 'version': '1.1', 'name': 'Pricing',
        'properties': {'category': None},
    },
    'null values': {
        'type': 'identify', 'userId': None, 'anonymousId': 'anon-1', 'timestamp': None,
        'traits': None, 'context': {'traits': None}, 'projectId': None,
    },
    'every timestamp form': {
        'type': 'track', 'event': 'Signed Up', 'timestamp': 1793491200123,
        'originalTimestamp': '2016', 'sentAt': '2015-2-02',
        'receivedAt': '2026-11-01T05:30:00+0530',
    },
    'top-level keys without a field': {
        'type': 'group', 'groupId': 'grp_1', 'writeKey': 'wk', '_metadata': {'bundled': []},
        'extra': {'a': 1}, 'odd key?': [1, 2], 'integrations': {'All': True, 'GA': {'id': 'x'}},
    },
    'values that do not fit their field': {
        'type': 'identify', 'userId': {'id': 5}, 'timestamp': True, 'sentAt': 1.5,
        'version': [2], 'messageId': 7, 'anonymousId': False, 'receivedAt': 2 ** 70,
    },
    'free-form fields that are not objects': {
        'type': 'track', 'event': 'x', 'traits': 'text', 'properties': [1, 'two'],
        'context': 3, 'integrations': False,
    },
    'alias': {'type': 'alias', 'previousId': 'anon-9', 'userId': 'usr_9', 'channel': 'client'},
    'empty': {},
}


def expected_after_round_trip(event: dict) -> dict:
    return {key: value for key, value in event.items()
            if not (value is None and key in NULL_MEANS_ABSENT)}


def avro_round_trip(tmp_path, events: list[dict]) -> list[dict]:
    path = tmp_path / 'events.avro'
    with open(path, 'wb') as out:
        fastavro.writer(out, SCHEMA, [to_avro_record(event) for event in events])
    with open(path, 'rb') as source:
        return [from_avro_record(record) for record in fastavro.reader(source)]


@pytest.mark.parametrize('event', ODD_EVENTS.values(), ids=ODD_EVENTS.keys())
def test_odd_event_survives_an_avro_file(tmp_path, event):
    assert avro_round_trip(tmp_path, [event]) == [expected_after_round_trip(event)]


@pytest.mark.parametrize('event', ODD_EVENTS.values(), ids=ODD_EVENTS.keys())
def test_record_has_every_schema_field_and_validates(event):
    record = to_avro_record(event)
    assert list(record) == FIELD_NAMES
    assert fastavro.validation.validate(record, SCHEMA)


@pytest.mark.parametrize('key, value, typed', [
    ('userId', 'usr_1', True),
    ('userId', 42, True),
    ('userId', 4.5, True),
    ('userId', True, False),
    ('userId', {'id': 1}, False),
    ('userId', 2 ** 63, False),
    ('version', 2, True),
    ('version', '1.1', True),
    ('version', [2], False),
    ('timestamp', '2016', True),
    ('timestamp', 1793491200000, True),
    ('timestamp', 1.5, False),
    ('timestamp', False, False),
    ('messageId', 12, False),
    ('channel', 'client', True),
])
def test_value_goes_to_its_field_only_when_its_type_fits(key, value, typed):
    record = to_avro_record({key: value})
    if typed:
        assert record[key] == value and type(record[key]) is type(value)
        assert record['extra'] is None
    else:
        assert record[key] is None
        assert record['extra'] is not None
    assert from_avro_record(record) == {key: value}


def test_free_form_fields_are_json_text_and_other_keys_go_to_extra():
    record = to_avro_record({'type': 'identify', 'traits': {'Invited User?': True},
                             'properties': [], 'projectId': 'p', 'userId': None})
    assert record['traits'] == '{"Invited User?":true}'
    assert record['properties'] == '[]'
    assert record['extra'] == '{"projectId":"p"}'
    assert record['userId'] is None


@pytest.mark.parametrize('field, text', [
    ('extra', '[1, 2]'),
    ('extra', '{"a": '),
    ('traits', 'not json'),
])
def test_broken_json_text_is_a_value_error(field, text):
    record = to_avro_record({'type': 'identify'})
    record[field] = text
    with pytest.raises(ValueError):
        from_avro_record(record)


def test_generated_sample_events_survive_an_avro_file(tmp_path):
    events = list(generate_events(users=20, days=2, seed=3))
    assert avro_round_trip(tmp_path, events) == [expected_after_round_trip(e) for e in events]
