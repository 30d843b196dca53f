"""Segment timestamps in every form seen in real data -> epoch milliseconds (UTC).

Segment libraries and custom senders disagree on how to write a time (see
segment-events.md), so `parse_timestamp` accepts all of the forms below and
returns None rather than raising for anything else: one odd timestamp must
never fail a whole line.
"""
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)

DAY_MS = 86_400_000

# The range datetime can represent (years 1 to 9999, UTC), so that every
# result of parse_timestamp can be written back by to_iso8601.
MIN_MS = -62_135_596_800_000
MAX_MS = 253_402_300_799_999

# Epoch numbers whose absolute value is below this are seconds, not
# milliseconds: 1e11 ms is only 1973-03-03, while 1e11 s is the year 5138.
EPOCH_SECONDS_BELOW = 1e11

# Segment's libraries write '2026-11-01T10:00:17.123Z', and every archive line
# carries two or three such times: they are read from three lookups, the
# minute ('2026-11-01T10:00:') from a cache of the minutes seen so far, the
# second ('17.') and the millisecond ('123Z') from fixed tables. The cache
# holds up to a week of minutes and starts afresh when full, so it cannot grow
# without bound; a text not of that exact form takes the general path.
_CANONICAL_LENGTH = len('2026-11-01T10:00:17.123Z')
_MINUTE_TEXT = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:', re.ASCII)
_MAX_CACHED_MINUTES = 7 * 24 * 60
_minute_ms_cache: dict = {}   # minute text -> epoch ms, or False when not a valid minute
_SECOND_MS = {f'{second:02d}.': second * 1000 for second in range(60)}
_MILLISECOND = {f'{millisecond:03d}Z': millisecond for millisecond in range(1000)}

_EPOCH_TEXT = re.compile(r'[+-]?[0-9]{1,19}(?:\.[0-9]+)?', re.ASCII)
_YEAR_TEXT = re.compile(r'[0-9]{4}', re.ASCII)

# The forms datetime.fromisoformat rejects: an unpadded month, day or hour,
# a year or year-month alone, lower-case 't'/'z', and (on Python < 3.11) 'Z',
# '+0530' and fractions other than 3 or 6 digits. Also accepts everything
# well-formed, so it is a complete fallback on its own.
_ISO_TEXT = re.compile(
    r'(?P<year>[0-9]{4})'
    r'(?:-(?P<month>[0-9]{1,2})'
    r'(?:-(?P<day>[0-9]{1,2})'
    r'(?:[T ](?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})'
    r'(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?'
    r'(?:Z|(?P<sign>[+-])(?P<zone_hour>[0-9]{2})(?::?(?P<zone_minute>[0-9]{2}))?)?'
    r')?)?)?',
    re.ASCII | re.IGNORECASE)


def parse_timestamp(value: Any) -> Optional[int]:
    """A Segment timestamp -> epoch milliseconds UTC, or None when it is not one.

    Accepted:
    - ISO 8601 text: 'Z', '+00:00', '+0530' or '-08' offsets, or no zone at all
      (read as UTC); 1 to 9 fractional digits (truncated to milliseconds);
      'T' or a space between date and time; a date alone; a year alone
      ('2016' -> 2016-01-01); an unpadded month, day or hour ('2015-2-02').
    - Epoch numbers, as int, float or numeric text: milliseconds, except that
      an absolute value below 1e11 is epoch *seconds* (1e11 ms would be 1973).
      Floats are rounded to the nearest millisecond. A text of exactly four
      digits is a year, not an epoch number.
    None, booleans, objects, empty or unparseable text, impossible dates
    (2015-02-30, 24:00) and times outside years 1 to 9999 give None.
    """
    if type(value) is str:
        if len(value) == _CANONICAL_LENGTH:
            ms = _canonical_ms(value)
            if ms is not None:
                return ms
        # Digit-only text is an epoch number or a year, never a basic-format
        # date such as 20161101 (which fromisoformat would accept).
        if not value.isdigit():
            try:
                return _moment_ms(datetime.fromisoformat(value))
            except ValueError:
                pass
        return _text_ms(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _epoch_ms(value)
    return None


def to_iso8601(ms: int) -> str:
    """Epoch milliseconds -> ISO 8601 UTC text with millisecond precision,
    e.g. 1793527200000 -> '2026-11-01T10:00:00.000Z'.

    Raises OverflowError outside years 1 to 9999 (MIN_MS..MAX_MS).
    """
    moment = _NAIVE_EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec='milliseconds') + 'Z'


def _canonical_ms(text: str) -> Optional[int]:
    """Epoch ms of a 'YYYY-MM-DDTHH:MM:SS.sssZ' text, or None when the text is
    not a valid time of exactly that form (the general path then decides)."""
    minute_ms = _minute_ms_cache.get(text[:17])
    if minute_ms is None:
        minute_ms = _cache_minute(text[:17])
    second_ms = _SECOND_MS.get(text[17:20])
    millisecond = _MILLISECOND.get(text[20:])
    if minute_ms is False or second_ms is None or millisecond is None:
        return None
    return minute_ms + second_ms + millisecond


def _cache_minute(minute: str) -> int | bool:
    if len(_minute_ms_cache) >= _MAX_CACHED_MINUTES:
        _minute_ms_cache.clear()
    ms = None
    if _MINUTE_TEXT.fullmatch(minute):
        ms = _moment_ms_of_text(minute + '00.000Z')
    _minute_ms_cache[minute] = False if ms is None else ms
    return _minute_ms_cache[minute]


def _moment_ms_of_text(text: str) -> Optional[int]:
    try:
        return _moment_ms(datetime.fromisoformat(text))
    except ValueError:
        return None


def _moment_ms(moment: datetime) -> Optional[int]:
    # Timedelta floor division rather than timestamp(): exact integer
    # milliseconds (truncating the microseconds), no float rounding.
    epoch = _NAIVE_EPOCH if moment.tzinfo is None else _UTC_EPOCH
    ms = (moment - epoch) // _ONE_MS
    return ms if MIN_MS <= ms <= MAX_MS else None


def _epoch_ms(number: int | float) -> Optional[int]:
    if isinstance(number, float) and not math.isfinite(number):
        return None
    if -EPOCH_SECONDS_BELOW < number < EPOCH_SECONDS_BELOW:
        number *= 1000
    ms = round(number)
    return ms if MIN_MS <= ms <= MAX_MS else None


def _text_ms(value: str) -> Optional[int]:
    text = value.strip()
    if _YEAR_TEXT.fullmatch(text):
        return _fields_ms(int(text), 1, 1, 0, 0, 0, 0, 0)
    if _EPOCH_TEXT.fullmatch(text):
        return _epoch_ms(float(text) if '.' in text else int(text))
    match = _ISO_TEXT.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.group(
        'year', 'month', 'day', 'hour', 'minute', 'second', 'fraction')
    offset_minutes = 0
    if match['sign']:
        zone_minute = int(match['zone_minute'] or 0)
        if zone_minute > 59:
            return None
        offset_minutes = int(match['zone_hour']) * 60 + zone_minute
        if match['sign'] == '-':
            offset_minutes = -offset_minutes
    return _fields_ms(int(year), int(month or 1), int(day or 1), int(hour or 0),
                      int(minute or 0), int(second or 0),
                      int((fraction or '0')[:3].ljust(3, '0')), offset_minutes)


def _fields_ms(year: int, month: int, day: int, hour: int, minute: int,
               second: int, millisecond: int, offset_minutes: int) -> Optional[int]:
    if abs(offset_minutes) >= 24 * 60:
        return None
    try:
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    ms = _moment_ms(moment)
    if ms is None:
        return None
    ms += millisecond - offset_minutes * 60_000
    return ms if MIN_MS <= ms <= MAX_MS else None
