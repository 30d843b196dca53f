"""Making requests fit the Loops account they are sent to.

Loops' docs say contact properties must exist in the account before use, with
a type (string, number, boolean or date); a property the account lacks may not
be stored, and a value of the wrong type may be refused or stored wrongly.
`conform_body` checks one request body against the account (`AccountSchema`):
it coerces values whose meaning is certain ("42" -> 42 for a number property),
applies the `unknown_properties` policy to properties the account lacks, and
leaves out, one by one, the parts it cannot send without losing data, so that
every loss is a failure record rather than a silent drop, and a refused part
costs only itself.

Loops stores numbers as doubles, so an integer beyond ±(2^53 − 1) is never
sent as a number: for a string property it is sent as its text, every digit
kept; for any other property, or one the account lacks, it is refused.

Two contact fields can never be sent: Loops' `notes` cannot be set through
its API (the Notes field is written in Loops' app) and `optInStatus` is set
by Loops itself (forms with double opt-in); Loops refuses a request that
carries either. Each is a refused part, so that it costs neither the rest of
an upsert nor a whole event.

Refusal reasons (stable; they become failure records' `reason`, stage
`conform`): `unknown_property` (policy 'fail'), `type_mismatch` (a value that
cannot be coerced safely), `unsafe_integer` (an integer Loops would round),
`unknown_mailing_list`, `not_settable` (notes, optInStatus). Adjustment names (counted per value): `coerced`,
`unsafe_integer_as_text`, `unknown_property_sent`, `unknown_property_dropped`.
"""
import collections
import dataclasses
import json
import math
import re
from typing import Any, NamedTuple

from transforms.core.kinds import CONTACT_UPSERT, MAILING_LISTS, RequestKind
from transforms.core.text import preview
from transforms.mapping.values import LOOPS_CONTACT_FIELDS, is_unsafe_integer
from transforms.segment.parse import Rejected
from transforms.segment.timestamps import parse_timestamp, to_iso8601

LOOPS_TYPES = ('string', 'number', 'boolean', 'date')
# The properties every Loops account has, which `GET /v1/contacts/properties`
# lists before the custom ones (npm loops 7.3.0 README "listContactProperties";
# https://loops.so/docs/api-reference/list-contact-properties).
DEFAULT_PROPERTY_KEYS = frozenset({'firstName', 'lastName', 'email', 'notes', 'source',
                                   'userGroup', 'userId', 'subscribed', 'createdAt'})
UNKNOWN_PROPERTY_POLICIES = ('send', 'drop', 'fail')
# Contact fields no request can set, and why (see the module docstring).
NOT_SETTABLE = {
    'notes': "Loops' Notes field cannot be set through its API (it is written in Loops' app); "
             'map the value to a custom property to keep it',
    'optInStatus': 'Loops sets optInStatus itself (forms with double opt-in)',
}

_NUMBER_TEXT = re.compile(r'[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?',
                          re.ASCII)
_BOOLEAN_TEXT = {'true': True, 'false': False}
_PREVIEW_CHARS = 60


@dataclasses.dataclass(frozen=True)
class AccountSchema:
    """What a Loops account accepts: property key -> Loops type (string,
    number, boolean or date; default properties included), and the ids of its
    mailing lists. Picklable: Beam ships it to workers."""
    properties: dict
    mailing_lists: frozenset

    @classmethod
    def from_json(cls, properties: Any, lists: Any) -> 'AccountSchema':
        """The answers of `GET /v1/contacts/properties` ([{key, label, type}])
        and `GET /v1/lists` ([{id, name, ...}]) -> AccountSchema. Raises
        ValueError when an answer does not have that shape."""
        if not isinstance(properties, list) or not all(
                isinstance(item, dict) and isinstance(item.get('key'), str)
                and isinstance(item.get('type'), str) for item in properties):
            raise ValueError('contact properties: expected a list of {key, label, type}, got '
                             f'{preview(properties, _PREVIEW_CHARS)}')
        if not isinstance(lists, list) or not all(
                isinstance(item, dict) and isinstance(item.get('id'), str) for item in lists):
            raise ValueError(f'mailing lists: expected a list of {{id, name}}, got '
                             f'{preview(lists, _PREVIEW_CHARS)}')
        return cls({item['key']: item['type'] for item in properties},
                   frozenset(item['id'] for item in lists))

    @property
    def custom_properties(self) -> list:
        """The keys of the account's own properties, Loops' defaults left out."""
        return [key for key in self.properties if key not in DEFAULT_PROPERTY_KEYS]


def check_policy(unknown_properties: str) -> None:
    """Raises ValueError unless `unknown_properties` is 'send', 'drop' or 'fail'."""
    if unknown_properties not in UNKNOWN_PROPERTY_POLICIES:
        raise ValueError(f'unknown_properties must be one of '
                         f'{", ".join(UNKNOWN_PROPERTY_POLICIES)}, not {unknown_properties!r}')


def is_custom_property(key: str, kind: RequestKind = CONTACT_UPSERT) -> bool:
    """Whether a top-level body key is a custom contact property: not one of
    Loops' own contact fields, nor one of the request's own fields."""
    return key not in LOOPS_CONTACT_FIELDS and key not in kind.own_fields


def coerce_value(key: str, value: Any, loops_type: str) -> Any:
    """One property value -> the value to send for a property of `loops_type`.

    null always passes (it resets). number: numeric text -> int or float
    (never booleans, never "12abc"). boolean: "true"/"false" in any case ->
    bool. date: any Segment timestamp form, epoch numbers included ->
    ISO-8601 text. string: numbers and booleans -> their JSON text (an
    integer Loops would round as a number keeps every digit). A type Loops
    may add later passes unchanged, but for an integer Loops would round.
    Raises Rejected('unsafe_integer') for an integer beyond ±(2^53 − 1), or
    integer text of one, for any type but string; Rejected('type_mismatch')
    for another value that cannot be coerced safely.
    """
    if value is None:
        return value
    if loops_type == 'string':
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
            return json.dumps(value)
    elif is_unsafe_integer(value):
        raise unsafe_integer(key, value)
    elif loops_type not in LOOPS_TYPES:
        return value
    elif loops_type == 'number':
        number = _number(value)
        if is_unsafe_integer(number):
            raise unsafe_integer(key, value)
        if number is not None:
            return number
    elif loops_type == 'boolean':
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEAN_TEXT:
            return _BOOLEAN_TEXT[value.strip().lower()]
    elif loops_type == 'date' and not isinstance(value, bool):
        ms = parse_timestamp(value)
        if ms is not None:
            return to_iso8601(ms)
    raise Rejected('type_mismatch', f'{key!r} is a {loops_type} property in Loops; '
                   f'{preview(value, _PREVIEW_CHARS)} cannot be sent as a {loops_type}')


def unsafe_integer(key: str, value: Any) -> Rejected:
    """The refusal of an integer Loops would round, naming the property."""
    return Rejected('unsafe_integer', f'{key!r} is {preview(value, _PREVIEW_CHARS)}, an '
                    'integer Loops would round (it stores numbers as doubles, exact up to '
                    '±(2^53 − 1)); make it a string property in Loops to keep every digit')


def is_changed(value: Any, coerced: Any) -> bool:
    """Whether coerce_value changed a value (1 == 1.0 == True, so compare types too)."""
    return type(coerced) is not type(value) or coerced != value


class Refused(NamedTuple):
    """A part of a request the account cannot take: its `reason` (a failure
    record's reason) and a `message` naming the part, for a person."""
    reason: str
    message: str


class Conformed(NamedTuple):
    """A body fitted to the account: what to send, the adjustments made
    (name -> count), and the parts left out because the account refuses them."""
    body: dict
    adjustments: collections.Counter
    refused: list


def conform_body(body: dict, schema: AccountSchema, unknown_properties: str, *,
                 kind: RequestKind = CONTACT_UPSERT) -> Conformed:
    """A request body -> the body to send, without the parts the account refuses.

    Custom properties the account has are coerced to its types (see
    coerce_value); those it lacks are sent, dropped or refused as
    `unknown_properties` says ('send', 'drop', 'fail'). A mailing-list id the
    account lacks is refused alone; the other lists stay. Loops' own fields
    pass unchanged, and so do the request's own fields (`kind.own_fields`:
    an event's name and properties): only the flat top-level contact
    properties are conformed. A field no request can set (NOT_SETTABLE) is
    refused. A refused part costs only itself: the rest of the body is sent.
    Refusal reasons: unknown_property, type_mismatch, unsafe_integer,
    unknown_mailing_list, not_settable. The input is not changed.
    """
    check_policy(unknown_properties)
    adjustments = collections.Counter()
    refused = []
    conformed = {}
    for key, value in body.items():
        if key in NOT_SETTABLE:
            refused.append(Refused('not_settable', f'{key!r} ({preview(value, _PREVIEW_CHARS)}) '
                                   f'cannot be sent: {NOT_SETTABLE[key]}; the rest of the event '
                                   'was sent'))
            continue
        if key == MAILING_LISTS:
            value = _known_mailing_lists(value, schema, refused)
            if not value:
                continue
        elif is_custom_property(key, kind):
            loops_type = schema.properties.get(key)
            if loops_type is None:
                if unknown_properties == 'fail':
                    refused.append(Refused(
                        'unknown_property', f'{key!r} is not a contact property of the Loops '
                        'account (create it in Loops, or use --unknown_properties=send|drop); '
                        'the rest of the event was sent'))
                    continue
                if unknown_properties == 'drop':
                    adjustments['unknown_property_dropped'] += 1
                    continue
                if is_unsafe_integer(value):
                    refused.append(_refused(unsafe_integer(key, value)))
                    continue
                adjustments['unknown_property_sent'] += 1
            else:
                try:
                    coerced = coerce_value(key, value, loops_type)
                except Rejected as rejected:
                    refused.append(_refused(rejected))
                    continue
                if is_unsafe_integer(value):
                    adjustments['unsafe_integer_as_text'] += 1
                elif is_changed(value, coerced):
                    adjustments['coerced'] += 1
                value = coerced
        conformed[key] = value
    return Conformed(conformed, adjustments, refused)


def _refused(rejected: Rejected) -> Refused:
    return Refused(rejected.reason, f'{rejected.message}; the rest of the event was sent')


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    if '.' in text or 'e' in text or 'E' in text:
        number = float(text)
        return number if math.isfinite(number) else None
    return int(text)


def _known_mailing_lists(value: Any, schema: AccountSchema, refused: list) -> Any:
    """The lists of a mailingLists object that exist in the account; each
    unknown one is refused on its own."""
    if not isinstance(value, dict):
        return value
    known = {}
    for list_id, flag in value.items():
        if list_id in schema.mailing_lists:
            known[list_id] = flag
        else:
            refused.append(Refused(
                'unknown_mailing_list', f'mailing list {list_id!r} does not exist in the Loops '
                'account; the rest of the event was sent'))
    return known
