"""Every timestamp form of segment-events.md, and what must give None."""
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.segment.timestamps import MAX_MS, MIN_MS, parse_timestamp, to_iso8601


@pytest.mark.parametrize('value, expected', [
    # Zones: Z, +00:00, +0530, -08, none (read as UTC).
    ('2026-11-01T10:00:00.123Z', '2026-11-01T10:00:00.123Z'),
    ('2026-11-01T10:00:00Z', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01T10:00:00+00:00', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01T10:00:00.123+00:00', '2026-11-01T10:00:00.123Z'),
    ('2026-11-01T15:30:00+05:30', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01T15:30:00+0530', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01T02:00:00-08', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01T02:00:00-08:00', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01T01:30:00.5-0830', '2026-11-01T10:00:00.500Z'),
    ('2026-11-01T10:00:00', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01T10:00', '2026-11-01T10:00:00.000Z'),
    # Offsets that move the date.
    ('2026-11-01T23:30:00-05:00', '2026-11-02T04:30:00.000Z'),
    ('2026-01-01T00:30:00+01:00', '2025-12-31T23:30:00.000Z'),
    # Fractions of 1 to 9 digits, truncated to milliseconds.
    ('2026-11-01T10:00:00.1Z', '2026-11-01T10:00:00.100Z'),
    ('2026-11-01T10:00:00.12Z', '2026-11-01T10:00:00.120Z'),
    ('2026-11-01T10:00:00.1234Z', '2026-11-01T10:00:00.123Z'),
    ('2026-11-01T10:00:00.123456Z', '2026-11-01T10:00:00.123Z'),
    ('2026-11-01T10:00:00.1234567Z', '2026-11-01T10:00:00.123Z'),
    ('2026-11-01T10:00:00.123456789Z', '2026-11-01T10:00:00.123Z'),
    ('2026-11-01T10:00:00.999999999Z', '2026-11-01T10:00:00.999Z'),
    ('2026-11-01T10:00:00,25Z', '2026-11-01T10:00:00.250Z'),
    ('2026-11-01T10:00:00.1234567+0530', '2026-11-01T04:30:00.123Z'),
    # A space instead of T, lower-case t/z, surrounding whitespace.
    ('2026-11-01 10:00:00.123Z', '2026-11-01T10:00:00.123Z'),
    ('2026-11-01 10:00:00', '2026-11-01T10:00:00.000Z'),
    ('2026-11-01t10:00:00z', '2026-11-01T10:00:00.000Z'),
    (' 2026-11-01T10:00:00Z\n', '2026-11-01T10:00:00.000Z'),
    # A date only, a year only, a year and month, unpadded fields.
    ('2026-11-01', '2026-11-01T00:00:00.000Z'),
    ('2016', '2016-01-01T00:00:00.000Z'),
    ('2016-11', '2016-11-01T00:00:00.000Z'),
    ('2015-2-02', '2015-02-02T00:00:00.000Z'),
    ('2015-2-2', '2015-02-02T00:00:00.000Z'),
    ('2015-12-2', '2015-12-02T00:00:00.000Z'),
    ('2015-2-02T10:00:00Z', '2015-02-02T10:00:00.000Z'),
    ('2015-2-02 9:05:00.25+0100', '2015-02-02T08:05:00.250Z'),
    # Leap days.
    ('2016-02-29T12:00:00Z', '2016-02-29T12:00:00.000Z'),
    ('2000-02-29', '2000-02-29T00:00:00.000Z'),
    ('2016-2-29', '2016-02-29T00:00:00.000Z'),
    # Epoch milliseconds (number or numeric text), seconds below 1e11.
    (1793527200123, '2026-11-01T10:00:00.123Z'),
    (1793527200123.0, '2026-11-01T10:00:00.123Z'),
    (1793527200123.6, '2026-11-01T10:00:00.124Z'),
    ('1793527200123', '2026-11-01T10:00:00.123Z'),
    (1793527200, '2026-11-01T10:00:00.000Z'),
    (1793527200.5, '2026-11-01T10:00:00.500Z'),
    ('1793527200', '2026-11-01T10:00:00.000Z'),
    ('1793527200.123', '2026-11-01T10:00:00.123Z'),
    (0, '1970-01-01T00:00:00.000Z'),
    (-1000, '1969-12-31T23:43:20.000Z'),
    ('-1000', '1969-12-31T23:43:20.000Z'),
    (99_999_999_999, '5138-11-16T09:46:39.000Z'),
    (100_000_000_000, '1973-03-03T09:46:40.000Z'),
    (1e11, '1973-03-03T09:46:40.000Z'),
    # Digit-only text is an epoch number (here seconds), not a basic ISO date.
    ('20161101', '1970-08-22T08:18:21.000Z'),
    # The edges of the representable range.
    ('0001-01-01T00:00:00Z', '0001-01-01T00:00:00.000Z'),
    ('9999-12-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'),
])
def test_parses_every_form(value, expected):
    assert to_iso8601(parse_timestamp(value)) == expected


@pytest.mark.parametrize('value', [
    None, True, False, {}, [], {'timestamp': '2016'}, b'2016', object(),
    float('nan'), float('inf'), float('-inf'),
    '', '   ', 'garbage', 'not a date 2016', '2016 or so', 'null', 'NaN',
    '2026-11-01T24:00:00Z', '2026-13-01', '2026-00-10', '2026-11-31', '2015-02-29',
    '1900-02-29', '2026-11-01T10:60:00Z', '2026-11-01T10:00:61Z',
    '2026-11-01T10:00:00+24:00', '2015-2-02T10:00:00+05:75', '2015-2-02T10:00:00+25',
    '2026-11-01T10:00:00Q', '2026/11/01', '01/11/2026', '2026-11-01T',
    '0000', '0000-01-01', '10000-01-01',
    '0001-01-01T00:00:00+01:00', '9999-12-31T23:59:59-01:00',
    '２０１６', '1e12', '12345678901234567890',
    1e20, -1e20, MAX_MS + 1, MIN_MS - 1,
])
def test_what_is_not_a_timestamp_gives_none(value):
    assert parse_timestamp(value) is None


def test_unix_epoch_is_zero_not_unknown():
    assert parse_timestamp('1970-01-01T00:00:00Z') == 0


@pytest.mark.parametrize('ms, expected', [
    (0, '1970-01-01T00:00:00.000Z'),
    (-1, '1969-12-31T23:59:59.999Z'),
    (1793527200007, '2026-11-01T10:00:00.007Z'),
    (MIN_MS, '0001-01-01T00:00:00.000Z'),
    (MAX_MS, '9999-12-31T23:59:59.999Z'),
])
def test_to_iso8601(ms, expected):
    assert to_iso8601(ms) == expected


@pytest.mark.parametrize('ms', [MIN_MS - 1, MAX_MS + 1])
def test_to_iso8601_out_of_range_raises(ms):
    with pytest.raises(OverflowError):
        to_iso8601(ms)


@given(st.integers(MIN_MS, MAX_MS))
def test_round_trip(ms):
    assert parse_timestamp(to_iso8601(ms)) == ms


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.none() | st.integers(-1439, 1439).map(
                        lambda minutes: timezone(timedelta(minutes=minutes)))),
       st.sampled_from(['auto', 'seconds', 'milliseconds', 'microseconds']))
def test_agrees_with_datetime(moment, timespec):
    expected_moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    expected = (expected_moment - epoch) // timedelta(milliseconds=1)
    if timespec == 'seconds':
        expected -= expected % 1000
    text = moment.isoformat(timespec=timespec)
    assert parse_timestamp(text) == expected
    # Surrounding whitespace sends the same text through the regex fallback.
    assert parse_timestamp(f' {text} ') == expected


@given(st.text() | st.from_regex(r'\A[0-9]{1,4}(-[0-9]{1,2}){0,2}([ T][0-9:.,+Z-]{0,20})?\Z'))
def test_text_gives_a_time_in_range_or_none(text):
    ms = parse_timestamp(text)
    assert ms is None or (type(ms) is int and MIN_MS <= ms <= MAX_MS)


@given(st.integers() | st.floats())
def test_number_gives_a_time_in_range_or_none(number):
    ms = parse_timestamp(number)
    assert ms is None or (type(ms) is int and MIN_MS <= ms <= MAX_MS)
