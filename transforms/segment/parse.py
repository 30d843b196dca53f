"""Parsing one Segment event: text (or an Avro-decoded dict) -> ParsedEvent.

This runs on every line of every archive, so it does only what each line
needs: one JSON decode (orjson when installed), the type check, the user id
and the event's order key. Everything else is left to the mappers.
"""
import json
import re
from typing import Any, Callable, NamedTuple, Optional

from transforms.core.records import Stamp
from transforms.core.text import compact_json
from transforms.segment.timestamps import parse_timestamp

try:
    import orjson
except ImportError:
    orjson = None

# The five spec calls, alias, and the user-deletion request Segment forwards
# to destinations (transforms/segment/deletions.py).
SEGMENT_TYPES = frozenset({'identify', 'track', 'page', 'screen', 'group', 'alias', 'delete'})
# Where an event's own time is, most trusted first (receivedAt when none is).
_EVENT_TIME_KEYS = ('timestamp', 'originalTimestamp', 'sentAt')
MAX_EVENT_BYTES = 32 * 1024

# UTF-8 needs at most 4 bytes per character, so a text this short is within
# the limit without encoding it.
_SURELY_SMALL_CHARS = MAX_EVENT_BYTES // 4

# orjson reads integers in this range exactly and all others as floats.
_MIN_EXACT_INT = -2 ** 63
_MAX_EXACT_INT = 2 ** 64 - 1

_SURROGATE = re.compile('[\ud800-\udfff]')

_JSON_KINDS = {dict: 'an object', list: 'an array', str: 'a string', int: 'a number',
               float: 'a number', bool: 'a boolean', type(None): 'null'}


class Rejected(Exception):
    """An input that cannot become a Loops request. `reason` is a short stable
    code (it becomes the failure record's `reason`), `message` is for a person.

    Reasons raised by parse_event: too_large, invalid_json, not_an_object,
    missing_type, unknown_type. Messages never contain the whole event.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class UndecodableEvent(NamedTuple):
    """An event a reader could not decode, e.g. an Avro record whose JSON text
    is invalid: parse_event rejects it as `invalid_json`, keeping its text."""
    text: str      # the record as JSON, for the failure record
    problem: str   # what is wrong, for a person


class ParsedEvent(NamedTuple):
    """One accepted Segment event, with the fields every later step needs.

    `type` is lower-cased; `user_id` is stringified the way Segment libraries
    do (numbers as their digits); `stamp` is (event time ms, received time ms,
    message_id) with unknown times as 0; `data` is the decoded event itself.
    """
    type: str                 # identify, track, page, screen, group, alias, delete
    message_id: str           # '' when the event has none
    user_id: Optional[str]    # stringified; None when missing, null or empty
    stamp: Stamp              # (event time ms, received time ms, message_id)
    data: dict                # the event object as it arrived
    source: str               # file path or Pub/Sub message id


def strict_json_loads(data: str | bytes) -> Any:
    """JSON text (str, or UTF-8 bytes) -> its value, exactly as orjson.loads
    reads it, using only the standard library.

    Like orjson it rejects NaN/Infinity, numbers too large for a double, lone
    surrogates and invalid UTF-8, and reads integers outside [-2**63, 2**64)
    as floats. Raises ValueError for anything that is not valid JSON.
    """
    text = data.decode('utf-8') if isinstance(data, bytes) else data
    if _SURROGATE.search(text):
        raise ValueError('str is not valid UTF-8: surrogates not allowed')
    try:
        value = json.loads(text, parse_constant=_reject_constant,
                           parse_float=_finite_float, parse_int=_orjson_int)
    except RecursionError:
        raise ValueError('nested too deeply') from None
    # A surrogate can only come from a \u escape here, and json combines
    # valid pairs, so any surrogate left in the value is a lone one.
    if ('\\ud' in text or '\\uD' in text) and _has_surrogate(value):
        raise ValueError('lone surrogate in string')
    return value


LOADS: Callable[[str | bytes], Any] = orjson.loads if orjson is not None else strict_json_loads


def parse_event(raw: str | bytes | dict, source: str = '', *,
                loads: Callable[[str | bytes], Any] = LOADS) -> ParsedEvent:
    """One archive line (str or UTF-8 bytes, a trailing newline is fine) or an
    already decoded event dict (Avro input) -> ParsedEvent.

    `source` (file path or Pub/Sub message id) is passed through. `loads` is
    the JSON decoder: orjson.loads when installed, else strict_json_loads;
    both give the same results. Raises Rejected (see its reasons).
    """
    if isinstance(raw, (str, bytes)):
        if len(raw) > _SURELY_SMALL_CHARS:   # shorter lines are surely within the limit
            _check_size(raw)
        try:
            data = loads(raw)
        except ValueError as error:
            raise _invalid_json(raw, error) from None
        if type(data) is not dict:
            raise Rejected('not_an_object', f'event is {_json_kind(data)}, not an object')
    elif isinstance(raw, dict):
        data = raw
        try:
            _check_size(_compact_json(raw))
        except (ValueError, RecursionError) as error:
            raise Rejected('invalid_json', f'event cannot be written as JSON: {error}') from None
    elif isinstance(raw, UndecodableEvent):
        raise Rejected('invalid_json', raw.problem)
    else:
        raise TypeError(f'parse_event takes str, bytes or dict, not {type(raw).__name__}')

    get = data.get
    event_type = get('type')
    if type(event_type) is not str:
        raise Rejected('missing_type', _missing_type_message(data, event_type))
    if event_type not in SEGMENT_TYPES:   # the types are lower case: most need no lower()
        event_type = event_type.lower()
        if event_type not in SEGMENT_TYPES:
            raise Rejected('unknown_type', f'unknown event type {event_type[:40]!r}')

    message_id = get('messageId')
    if type(message_id) is not str:
        message_id = '' if message_id is None else str(message_id)
    received_ms = parse_timestamp(get('receivedAt'))
    for key in _EVENT_TIME_KEYS:
        event_ms = parse_timestamp(get(key))
        if event_ms is not None:
            break
    else:
        event_ms = received_ms
    stamp = Stamp(0 if event_ms is None else event_ms,
                  0 if received_ms is None else received_ms,
                  message_id)
    return ParsedEvent(event_type, message_id, _user_id(get('userId')), stamp, data, source)


def event_text(raw: str | bytes | dict) -> str:
    """The original text of a parse_event input, for failure records: a line
    without its line ending, bytes decoded as UTF-8 (bad bytes replaced), a
    dict as compact JSON."""
    if isinstance(raw, UndecodableEvent):
        return raw.text
    if isinstance(raw, bytes):
        raw = raw.decode('utf-8', errors='replace')
    if isinstance(raw, str):
        return raw.rstrip('\r\n')
    return compact_json(raw)


def _user_id(value: Any) -> Optional[str]:
    # Exact type checks: bool is an int subclass but is never an id.
    kind = type(value)
    if kind is str:
        return value.strip() or None
    if kind is int:
        return str(value)
    if kind is float:
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _check_size(line: str | bytes) -> None:
    if isinstance(line, str):
        if len(line) <= _SURELY_SMALL_CHARS:
            return
        line = line.encode('utf-8', errors='surrogatepass')
    if len(line) <= MAX_EVENT_BYTES:
        return
    size = len(line.rstrip(b'\r\n'))
    if size > MAX_EVENT_BYTES:
        raise Rejected('too_large',
                       f'event is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit')


def _compact_json(event: dict) -> bytes:
    # orjson is ten times faster; it refuses what JSON can still carry
    # (integers over 64 bits, non-str keys, deep nesting), so fall back.
    if orjson is not None:
        try:
            return orjson.dumps(event, default=str)
        except TypeError:
            pass
    text = json.dumps(event, ensure_ascii=False, separators=(',', ':'), default=str)
    return text.encode('utf-8', errors='surrogatepass')


def _invalid_json(raw: str | bytes, error: ValueError) -> Rejected:
    if not raw.strip():
        return Rejected('invalid_json', 'empty line')
    if isinstance(error, json.JSONDecodeError):
        where = (f'column {error.colno}' if error.lineno == 1
                 else f'line {error.lineno} column {error.colno}')
        return Rejected('invalid_json', f'line is not valid JSON: {error.msg} at {where}')
    return Rejected('invalid_json', f'line is not valid JSON: {error}')


def _missing_type_message(data: dict, event_type: Any) -> str:
    if 'type' not in data:
        return 'event has no type'
    return f'event type is {_json_kind(event_type)}, not a string'


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> float:
    raise ValueError(f'{name} is not allowed')


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float('inf'), float('-inf')):
        raise ValueError('number is infinity when parsed as double')
    return number


def _orjson_int(text: str) -> int | float:
    number = int(text)
    return number if _MIN_EXACT_INT <= number <= _MAX_EXACT_INT else _finite_float(text)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(item) for item in value)
    return False
