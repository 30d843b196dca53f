"""Turning free-form Segment values into the flat scalars Loops accepts.

Loops contact and event properties are flat: a value is a string, a number, a
boolean or null (event properties: never null), a string holds at most 500
characters, and a number is a double. Segment traits and properties are
arbitrary JSON. `to_loops_properties` bridges the two by rules (`ValueRules`)
and counts every change it makes in an `adjustments` counter, so a run can
report how much of the input was reshaped rather than sent as is. Flattened
names are camelCase by default (address.city -> addressCity), the names Loops
gives the properties it creates.

Loops' own names are here too: the contact fields Loops has itself
(`LOOPS_CONTACT_FIELDS`), the ones it sets alone (`READ_ONLY_FIELDS`) and
the names it keeps for itself (`RESERVED_NAMES`): never custom properties.

Adjustment names (stable; they appear in metrics and reports): `flattened`,
`json_encoded`, `joined`, `dropped_nested`, `dropped_array`, `truncated`,
`dropped_long`, `dropped_non_finite`, `dropped_long_key`, and for event
properties `dropped_null_event_properties`, `unsafe_integer_as_text`.
"""
import collections
import functools
import json
import math
import re
from dataclasses import dataclass
from math import isfinite
from typing import Any, Optional, Union

from transforms.core.kinds import MAILING_LISTS
from transforms.segment.parse import Rejected

# Names Loops keeps for itself (unconfirmed list): never custom properties.
RESERVED_NAMES = frozenset({'id', 'listId', 'softDeleteAt', 'teamId', 'updatedAt'})
# Contact fields Loops sets itself: never sent.
READ_ONLY_FIELDS = frozenset({'optInStatus'})
# Loops' own contact fields: set only through their explicit field.
LOOPS_CONTACT_FIELDS = frozenset({'email', 'firstName', 'lastName', 'source',
                                  'subscribed', 'userGroup', 'userId',
                                  MAILING_LISTS, 'optInStatus'})
MAX_STRING_LENGTH = 500
# Loops stores numbers as doubles: integers beyond this lose digits.
MAX_SAFE_INTEGER = 2 ** 53 - 1

NESTED_OBJECT_RULES = ('flatten', 'json', 'drop')
ARRAY_RULES = ('join', 'json', 'drop')
LONG_STRING_RULES = ('truncate', 'drop', 'fail')
# Up to 250 code points can never exceed 500 UTF-16 units: no need to count.
_ALWAYS_SHORT = MAX_STRING_LENGTH // 2
# What separates the words of a key (anything but letters and digits).
_WORD_BREAKS = re.compile(r'[\W_]+')

LoopsScalar = Union[str, int, float, bool, None]


class Adjustments(dict):
    """Counts of adjustments (name -> count) for `adjustments[name] += 1`, as
    with collections.Counter, which the functions here also accept; this one
    costs a fifth of a Counter to create, and mapping creates one per event."""

    def __missing__(self, name: str) -> int:
        return 0


class _Dropped:
    """The type of DROPPED: a value that must not be sent (None means "reset")."""

    def __repr__(self) -> str:
        return 'DROPPED'


DROPPED = _Dropped()


@dataclass(frozen=True)
class ValueRules:
    """How to reshape values Loops cannot take.

    nested_objects: 'flatten' (address.city -> addressCity), 'json' (JSON
    text) or 'drop'. arrays: 'join' (", "-joined items), 'json' or 'drop'.
    long_strings (over 500 characters): 'truncate', 'drop' or 'fail' (the
    event is rejected). separator: how the keys of flattened objects are
    joined: None builds a camelCase name from their words (see
    camel_case_name); text joins them as they are (address_city with "_").
    """
    nested_objects: str = 'flatten'
    arrays: str = 'join'
    long_strings: str = 'truncate'
    separator: Optional[str] = None

    def __post_init__(self):
        for name, allowed in (('nested_objects', NESTED_OBJECT_RULES),
                              ('arrays', ARRAY_RULES),
                              ('long_strings', LONG_STRING_RULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f'{name} must be one of {", ".join(allowed)}, '
                                 f'not {getattr(self, name)!r}')
        if self.separator is not None and not isinstance(self.separator, str):
            raise ValueError(f'separator must be None (camelCase) or text, '
                             f'not {self.separator!r}')


@functools.lru_cache(maxsize=4096)
def camel_case_name(parent: str, key: str) -> str:
    """The flattened name of `key` within `parent`, in camelCase: the words
    of both (runs of letters and digits), each after the first with its first
    letter upper-cased. 'address', 'city' -> 'addressCity';
    'shipping_address', 'zip code' -> 'shippingAddressZipCode'. A name
    flattened further is one word already, so it stays as it is. A key
    without a word ('', '$', a control character) is appended as it is, so
    that a name Loops cannot hold stays visible as one (and is dropped,
    counted). (Cached: events repeat the same few nested keys.)"""
    words = [word for word in _WORD_BREAKS.split(parent) if word]
    key_words = [word for word in _WORD_BREAKS.split(key) if word]
    name = ''.join(word[0].upper() + word[1:] if i else word
                   for i, word in enumerate(words + key_words))
    return name if key_words else name + key


def is_unsafe_integer(value: Any) -> bool:
    """Whether `value` is an integer Loops would round: beyond ±(2^53 − 1)."""
    return type(value) is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def loops_length(text: str) -> int:
    """The length of `text` as Loops counts it: in UTF-16 code units.

    Loops' limit is unconfirmed as code points or UTF-16 units; counting units
    is the stricter reading (an emoji counts 2), so a string within it is
    accepted either way.
    """
    if text.isascii():
        return len(text)
    return len(text.encode('utf-16-le', 'surrogatepass')) // 2


def is_too_long(text: str) -> bool:
    """Whether `text` is over Loops' 500-character limit (see loops_length);
    short text, the usual kind, is not counted."""
    return len(text) > _ALWAYS_SHORT and loops_length(text) > MAX_STRING_LENGTH


def is_loops_scalar(value: Any) -> bool:
    """True when `value` is a valid Loops property value: null, a boolean, an
    integer, a finite number, or a string of at most 500 characters."""
    if value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return loops_length(value) <= MAX_STRING_LENGTH
    return False


def to_loops_properties(obj: dict, rules: ValueRules,
                        adjustments: collections.Counter,
                        prefix: str = '', *, event_properties: bool = False) -> dict:
    """Returns `obj` as a flat dict of Loops scalars, reshaped by `rules`.

    Keys are kept as they are; flattened keys are `prefix` and the key joined
    by the separator, or in camelCase (when `prefix` is empty, the key
    alone). Where a flattened key equals another key, the later one in
    document order wins. Every change is counted in `adjustments`. Raises
    Rejected('value_too_long') when a long string meets the 'fail' rule. Keys
    over 500 characters are dropped (counted `dropped_long_key`).

    `event_properties`: the values are an event's properties, which Loops
    cannot hold null (left out, counted `dropped_null_event_properties`) and
    has no account type for: an integer it would round is sent as its text,
    every digit kept (counted `unsafe_integer_as_text`). A contact's null
    resets a property, and its integers are fitted to the account's types
    (transforms/mapping/conform.py).
    """
    flat = {}
    separator = rules.separator
    flatten = rules.nested_objects == 'flatten'
    # An explicit stack instead of recursion: free-form JSON can nest deeper
    # than Python's recursion limit allows.
    stack = [(prefix, iter(obj.items()))]
    while stack:
        parent, items = stack[-1]
        for key, value in items:
            if not parent:
                name = key
            elif separator is None:
                name = camel_case_name(parent, key)
            else:
                name = f'{parent}{separator}{key}'
            # Loops refuses a body with a key over 500 characters (400), which
            # would lose every other update of the contact merged with it.
            # (is_too_long's own first test, written out: it runs for every key.)
            if len(name) > _ALWAYS_SHORT and is_too_long(name):
                adjustments['dropped_long_key'] += 1
                continue
            kind = type(value)
            # Fast path for the common values that never change (hot loop).
            if (kind is str and len(value) <= _ALWAYS_SHORT) or kind is bool \
                    or (kind is float and isfinite(value)):
                flat[name] = value
                continue
            if kind is int:
                if event_properties and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                    adjustments['unsafe_integer_as_text'] += 1
                    value = _limit_length(name, str(value), rules, adjustments)
                    if value is DROPPED:
                        continue
                flat[name] = value
                continue
            if value is None:
                if event_properties:
                    adjustments['dropped_null_event_properties'] += 1
                else:
                    flat[name] = None
                continue
            if flatten and isinstance(value, dict) and value:
                adjustments['flattened'] += 1
                stack.append((name, iter(value.items())))
                break
            converted = to_loops_value(name, value, rules, adjustments)
            if converted is not DROPPED:
                flat[name] = converted
        else:
            stack.pop()
    return flat


def to_loops_value(key: str, value: Any, rules: ValueRules,
                   adjustments: collections.Counter) -> Union[LoopsScalar, _Dropped]:
    """Returns one value as a Loops scalar, or DROPPED when it must not be sent.

    Like `to_loops_properties` for a single value, except that a non-empty
    object cannot be flattened into one value: under 'flatten' it is dropped
    (counted `dropped_nested`). `key` names the value in a rejection message.
    """
    if type(value) is str and len(value) <= _ALWAYS_SHORT:
        return value   # the usual value, sent as it is
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        adjustments['dropped_non_finite'] += 1
        return DROPPED
    if isinstance(value, str):
        return _limit_length(key, value, rules, adjustments)
    if isinstance(value, dict):
        if value and rules.nested_objects == 'json':
            return _encoded(key, value, rules, adjustments)
        adjustments['dropped_nested'] += 1
        return DROPPED
    if isinstance(value, list):
        if value and rules.arrays == 'join':
            return _joined(key, value, rules, adjustments)
        if value and rules.arrays == 'json':
            return _encoded(key, value, rules, adjustments)
        adjustments['dropped_array'] += 1
        return DROPPED
    # Not a JSON value (a decoder's own type): its text is the closest scalar.
    return _limit_length(key, str(value), rules, adjustments)


def truncate(text: str, limit: int = MAX_STRING_LENGTH) -> str:
    """`text` cut to at most `limit` UTF-16 code units, never splitting a
    surrogate pair (an emoji is kept whole or left out)."""
    units = text.encode('utf-16-le', 'surrogatepass')[:limit * 2]
    if len(units) >= 2 and 0xD800 <= int.from_bytes(units[-2:], 'little') <= 0xDBFF:
        units = units[:-2]
    return units.decode('utf-16-le', 'surrogatepass')


def _limit_length(key: str, text: str, rules: ValueRules,
                  adjustments: collections.Counter) -> Union[str, _Dropped]:
    if len(text) <= _ALWAYS_SHORT:
        return text
    length = loops_length(text)
    if length <= MAX_STRING_LENGTH:
        return text
    if rules.long_strings == 'truncate':
        adjustments['truncated'] += 1
        return truncate(text)
    if rules.long_strings == 'drop':
        adjustments['dropped_long'] += 1
        return DROPPED
    raise Rejected('value_too_long',
                   f'{key!r} is {length} characters long; Loops accepts at most '
                   f'{MAX_STRING_LENGTH} (values.long_strings is "fail")')


def _json_text(value: Any) -> Optional[str]:
    """Compact JSON text (compact to spend the 500 characters on content), or
    None when the value holds a NaN or infinity, which JSON cannot express."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(',', ':'),
                          allow_nan=False, default=str)
    except ValueError:
        return None


def _encoded(key: str, value: Any, rules: ValueRules,
             adjustments: collections.Counter) -> Union[str, _Dropped]:
    text = _json_text(value)
    if text is None:
        adjustments['dropped_non_finite'] += 1
        return DROPPED
    adjustments['json_encoded'] += 1
    return _limit_length(key, text, rules, adjustments)


def _joined(key: str, items: list, rules: ValueRules,
            adjustments: collections.Counter) -> Union[str, _Dropped]:
    parts = []
    for item in items:
        text = item if isinstance(item, str) else _json_text(item)
        if text is None:
            adjustments['dropped_non_finite'] += 1
        else:
            parts.append(text)
    if not parts:
        return DROPPED
    adjustments['joined'] += 1
    return _limit_length(key, ', '.join(parts), rules, adjustments)
