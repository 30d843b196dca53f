"""parse_event: reason codes, user ids, stamps, input forms, both JSON decoders."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.segment.parse import (MAX_EVENT_BYTES, SEGMENT_TYPES, ParsedEvent, Rejected,
                                      event_text, parse_event, strict_json_loads)

try:
    import orjson
except ImportError:
    orjson = None

# Every test runs with each decoder parse_event can use: they must agree.
LOADERS = [pytest.param(strict_json_loads, id='stdlib')]
if orjson is not None:
    LOADERS.append(pytest.param(orjson.loads, id='orjson'))


def line(**fields) -> str:
    return json.dumps(fields, ensure_ascii=False)


def sized_line(size: int, padding_char: str = 'x') -> str:
    """An identify line of exactly `size` UTF-8 bytes."""
    skeleton = line(type='identify', userId='u1', traits={'notes': ''})
    room = size - len(skeleton.encode('utf-8'))
    char_bytes = len(padding_char.encode('utf-8'))
    assert room % char_bytes == 0
    notes = padding_char * (room // char_bytes)
    return line(type='identify', userId='u1', traits={'notes': notes})


@pytest.fixture(params=LOADERS)
def loads(request):
    return request.param


@pytest.mark.parametrize('raw, reason, message', [
    ('', 'invalid_json', 'empty line'),
    ('   \n', 'invalid_json', 'empty line'),
    (b'\r\n', 'invalid_json', 'empty line'),
    ('{"type": "track",', 'invalid_json', 'line is not valid JSON: '),
    ('{"type": "track" "event": "x"}', 'invalid_json', 'at column 18'),
    ('{"type": "track",\n"event": x}', 'invalid_json', 'at line 2 column 10'),
    ('not json', 'invalid_json', 'line is not valid JSON: '),
    ('{"type": "track"} trailing', 'invalid_json', 'line is not valid JSON: '),
    ('{"type": "track", "n": NaN}', 'invalid_json', 'line is not valid JSON: '),
    ('{"type": "track", "n": 1e400}', 'invalid_json', 'line is not valid JSON: '),
    ('{"type": "track", "s": "\\ud800"}', 'invalid_json', 'line is not valid JSON: '),
    ('{"type": "track", "s": "\ud800"}', 'invalid_json', 'line is not valid JSON: '),
    ('\ufeff{"type": "track"}', 'invalid_json', 'line is not valid JSON: '),
    (b'{"type": "track", "s": "\xff"}', 'invalid_json', 'line is not valid JSON: '),
    ('{"type": "track", "s": "a\x00b"}', 'invalid_json', 'line is not valid JSON: '),
    ('[' * 5000 + ']' * 5000, 'invalid_json', 'line is not valid JSON: '),
    ('[{"type": "track"}]', 'not_an_object', 'event is an array, not an object'),
    ('"track"', 'not_an_object', 'event is a string, not an object'),
    ('42', 'not_an_object', 'event is a number, not an object'),
    ('1.5', 'not_an_object', 'event is a number, not an object'),
    ('true', 'not_an_object', 'event is a boolean, not an object'),
    ('null', 'not_an_object', 'event is null, not an object'),
    ('{}', 'missing_type', 'event has no type'),
    ('{"event": "Signed Up"}', 'missing_type', 'event has no type'),
    ('{"type": null}', 'missing_type', 'event type is null, not a string'),
    ('{"type": 3}', 'missing_type', 'event type is a number, not a string'),
    ('{"type": true}', 'missing_type', 'event type is a boolean, not a string'),
    ('{"type": ["track"]}', 'missing_type', 'event type is an array, not a string'),
    ('{"type": {"name": "track"}}', 'missing_type', 'event type is an object, not a string'),
    ('{"type": "purchase"}', 'unknown_type', "unknown event type 'purchase'"),
    ('{"type": ""}', 'unknown_type', "unknown event type ''"),
    ('{"type": " track"}', 'unknown_type', "unknown event type ' track'"),
    ('{"type": "tráck"}', 'unknown_type', "unknown event type 'tráck'"),
    (sized_line(33 * 1024), 'too_large', 'event is 33792 bytes, over the 32768-byte limit'),
    (sized_line(MAX_EVENT_BYTES + 1).encode(), 'too_large', 'event is 32769 bytes'),
    # 11,057 characters but 33,049 bytes: the limit is on bytes.
    (sized_line(33_049, '€'), 'too_large', 'event is 33049 bytes'),
])
def test_rejects_with_stable_reason(loads, raw, reason, message):
    with pytest.raises(Rejected) as caught:
        parse_event(raw, 's3://bucket/key.gz', loads=loads)
    assert caught.value.reason == reason
    assert message in caught.value.message
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize('raw', [
    sized_line(MAX_EVENT_BYTES),
    sized_line(MAX_EVENT_BYTES) + '\n',
    sized_line(MAX_EVENT_BYTES) + '\r\n',
    sized_line(MAX_EVENT_BYTES).encode() + b'\n',
    sized_line(MAX_EVENT_BYTES - 1, '€'),
])
def test_accepts_an_event_of_exactly_the_limit(loads, raw):
    assert parse_event(raw, loads=loads).type == 'identify'


def test_messages_never_carry_the_whole_line(loads):
    marker = 'SECRET-TRAIT-VALUE'
    raws = [
        line(type='x' * 500 + marker),
        line(type='track', traits={'a': marker}) + ' {',
        line(type=None, traits={'a': marker}),
        sized_line(40_000).replace('xxxx', marker, 1),
    ]
    for raw in raws:
        with pytest.raises(Rejected) as caught:
            parse_event(raw, loads=loads)
        assert marker not in caught.value.message
        assert len(caught.value.message) < 120


@pytest.mark.parametrize('event_type', ['identify', 'Track', 'PAGE', 'screen', 'Group', 'alias'])
def test_type_is_lower_cased(loads, event_type):
    assert parse_event(line(type=event_type), loads=loads).type == event_type.lower()


def test_segment_types():
    assert SEGMENT_TYPES == {'identify', 'track', 'page', 'screen', 'group', 'alias', 'delete'}


@pytest.mark.parametrize('fields, expected', [
    ({}, ''),
    ({'messageId': None}, ''),
    ({'messageId': 'ajs-next-1730455200000-2f4e'}, 'ajs-next-1730455200000-2f4e'),
    ({'messageId': 'personas_x y?'}, 'personas_x y?'),
    ({'messageId': ''}, ''),
    ({'messageId': 1234}, '1234'),
])
def test_message_id(loads, fields, expected):
    assert parse_event(line(type='track', **fields), loads=loads).message_id == expected


@pytest.mark.parametrize('user_id_json, expected', [
    ('"u-1"', 'u-1'),
    ('"  u-1 \\n"', 'u-1'),
    ('"ユーザー🙂"', 'ユーザー🙂'),
    ('""', None),
    ('"   "', None),
    ('42', '42'),
    ('0', '0'),
    ('-7', '-7'),
    ('18446744073709551615', '18446744073709551615'),
    ('42.0', '42'),
    ('1e16', '10000000000000000'),
    ('42.5', '42.5'),
    ('-0.25', '-0.25'),
    ('true', None),
    ('false', None),
    ('{"id": 1}', None),
    ('[1]', None),
    ('null', None),
])
def test_user_id(loads, user_id_json, expected):
    raw = '{"type": "identify", "userId": %s}' % user_id_json
    assert parse_event(raw, loads=loads).user_id == expected


def test_user_id_missing(loads):
    assert parse_event('{"type": "identify"}', loads=loads).user_id is None


def test_integers_beyond_64_bits_read_the_same_with_both_decoders():
    raw = '{"type": "identify", "userId": 123456789012345678901234567890}'
    user_ids = {parse_event(raw, loads=loads.values[0]).user_id for loads in LOADERS}
    assert len(user_ids) == 1


TS = '2026-11-01T10:00:00.000Z'          # 1793527200000
ORIGINAL = '2026-11-01T09:59:59.000Z'    # 1793527199000
SENT = '2026-11-01T10:00:01.000Z'        # 1793527201000
RECEIVED = '2026-11-01T10:00:02.000Z'    # 1793527202000


@pytest.mark.parametrize('fields, expected', [
    ({'timestamp': TS, 'originalTimestamp': ORIGINAL, 'sentAt': SENT, 'receivedAt': RECEIVED},
     (1793527200000, 1793527202000)),
    ({'originalTimestamp': ORIGINAL, 'sentAt': SENT, 'receivedAt': RECEIVED},
     (1793527199000, 1793527202000)),
    ({'timestamp': None, 'originalTimestamp': ORIGINAL, 'receivedAt': RECEIVED},
     (1793527199000, 1793527202000)),
    ({'timestamp': 'garbage', 'originalTimestamp': ORIGINAL}, (1793527199000, 0)),
    ({'sentAt': SENT, 'receivedAt': RECEIVED}, (1793527201000, 1793527202000)),
    ({'timestamp': {}, 'originalTimestamp': True, 'sentAt': SENT}, (1793527201000, 0)),
    ({'receivedAt': RECEIVED}, (1793527202000, 1793527202000)),
    ({'timestamp': 'garbage', 'receivedAt': 'garbage'}, (0, 0)),
    ({}, (0, 0)),
    ({'timestamp': 1793527200000, 'receivedAt': '1793527202000'}, (1793527200000, 1793527202000)),
    ({'timestamp': '2016', 'receivedAt': RECEIVED}, (1451606400000, 1793527202000)),
    # The epoch itself is a known time, not a reason to fall back.
    ({'timestamp': '1970-01-01T00:00:00Z', 'sentAt': SENT}, (0, 0)),
])
def test_stamp_falls_back_through_the_event_times(loads, fields, expected):
    parsed = parse_event(line(type='track', messageId='m-1', **fields), loads=loads)
    assert parsed.stamp == expected + ('m-1',)


def test_stamp_without_message_id(loads):
    parsed = parse_event(line(type='track', timestamp=TS), loads=loads)
    assert parsed.stamp == (1793527200000, 0, '')


TYPICAL = line(
    type='identify', messageId='ajs-next-1', userId=' 42 ', timestamp=TS, receivedAt=RECEIVED,
    traits={'email': 'zoë@example.com', 'firstName': 'Zoë', 'Invited User?': True,
            'company': {'name': '株式会社'}, 'emoji': '🙂'},
    context={'library': {'name': 'analytics.js'}})


@pytest.mark.parametrize('raw', [
    TYPICAL, TYPICAL + '\n', TYPICAL + '\r\n', TYPICAL.encode(), TYPICAL.encode() + b'\n',
    json.loads(TYPICAL),
    json.dumps(json.loads(TYPICAL)),  # \u escapes instead of raw UTF-8
], ids=['str', 'str-lf', 'str-crlf', 'bytes', 'bytes-lf', 'dict', 'ascii-escaped'])
def test_str_bytes_and_dict_give_the_same_event(loads, raw):
    assert parse_event(raw, 'gs://b/segment-logs/src/1/f.gz', loads=loads) == ParsedEvent(
        type='identify', message_id='ajs-next-1', user_id='42',
        stamp=(1793527200000, 1793527202000, 'ajs-next-1'),
        data=json.loads(TYPICAL), source='gs://b/segment-logs/src/1/f.gz')


def test_dict_is_used_as_is():
    event = {'type': 'track', 'event': 'Signed Up', 'userId': 7}
    parsed = parse_event(event, 'projects/p/subscriptions/s/1')
    assert parsed.data is event
    assert (parsed.user_id, parsed.source) == ('7', 'projects/p/subscriptions/s/1')


@pytest.mark.parametrize('event, reason', [
    ({'type': 'identify', 'traits': {'notes': 'x' * (33 * 1024)}}, 'too_large'),
    # Multi-byte characters count as bytes of compact JSON, not characters.
    ({'type': 'identify', 'traits': {'notes': '€' * 11_000}}, 'too_large'),
    ({'type': 'Purchase'}, 'unknown_type'),
    ({'type': None}, 'missing_type'),
    ({}, 'missing_type'),
])
def test_rejects_dicts(event, reason):
    with pytest.raises(Rejected) as caught:
        parse_event(event)
    assert caught.value.reason == reason


@pytest.mark.parametrize('event', [
    # Just under the limit as compact JSON, though longer with spaces.
    {'type': 'identify', 'traits': {'k%d' % i: i for i in range(2500)}},
    # Values orjson cannot write: an integer over 64 bits, a non-str key.
    {'type': 'identify', 'userId': 2 ** 70, 'traits': {1: 'one'}},
])
def test_accepts_dicts_within_the_limit(event):
    assert len(json.dumps(event, separators=(',', ':'))) <= MAX_EVENT_BYTES
    assert parse_event(event).type == 'identify'


def test_dict_that_cannot_be_json_is_rejected():
    event = {'type': 'track'}
    event['properties'] = event
    with pytest.raises(Rejected) as caught:
        parse_event(event)
    assert caught.value.reason == 'invalid_json'


def test_other_inputs_are_a_programming_error():
    with pytest.raises(TypeError):
        parse_event(['{"type": "track"}'])


@pytest.mark.parametrize('raw, expected', [
    ('{"type": "track"}\n', '{"type": "track"}'),
    ('{"type": "track"}\r\n', '{"type": "track"}'),
    ('  {"a": "zoë"}  ', '  {"a": "zoë"}  '),
    (b'{"a": "zo\xc3\xab"}\n', '{"a": "zoë"}'),
    (b'{"a": "\xff"}', '{"a": "\ufffd"}'),
    (b'', ''),
])
def test_event_text_of_lines(raw, expected):
    assert event_text(raw) == expected


def test_event_text_of_a_dict_is_single_line_json():
    event = {'type': 'identify', 'traits': {'name': 'Zoë\nSmith', 'n': [1, None]}}
    text = event_text(event)
    assert '\n' not in text and 'Zoë' in text
    assert json.loads(text) == event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)

events = st.fixed_dictionaries(
    {'type': st.sampled_from(sorted(SEGMENT_TYPES)) | json_values},
    optional={'userId': json_values, 'messageId': json_values, 'timestamp': json_values,
              'originalTimestamp': json_values, 'sentAt': json_values,
              'receivedAt': json_values, 'traits': json_values})


def outcome(raw, loads):
    """What parse_event makes of raw, comparable across decoders."""
    try:
        parsed = parse_event(raw, 'src', loads=loads)
    except Rejected as rejected:
        return 'rejected', rejected.reason
    assert isinstance(parsed, ParsedEvent)
    return ('parsed', parsed.type, parsed.message_id, parsed.user_id, parsed.stamp,
            repr(parsed.data))


def outcomes(raw):
    return {outcome(raw, loads.values[0]) for loads in LOADERS}


@given(st.text() | st.binary())
def test_arbitrary_input_is_parsed_or_rejected(raw):
    assert len(outcomes(raw)) == 1


@given(st.text(alphabet='{}[]":,\\ u0123456789abcdefABCDEFtrunls.-+eE\x00\ufeff'))
def test_json_like_text_is_read_the_same_by_both_decoders(raw):
    assert len(outcomes(raw)) == 1


@given(json_values | events)
def test_arbitrary_json_is_parsed_or_rejected(value):
    text = json.dumps(value, ensure_ascii=False)
    results = outcomes(text) | outcomes(text.encode()) | outcomes(json.dumps(value))
    assert len(results) == 1
    if isinstance(value, dict):
        assert outcome(value, strict_json_loads) == results.pop()
