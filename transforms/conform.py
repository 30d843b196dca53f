"""Making requests fit the Loops account they are sent to.

Loops' docs say contact properties must exist in the account before use, with
a type (string, number, boolean or date); a property the account lacks may not
be stored, and a value of the wrong type may be refused or stored wrongly.
`conform_body` checks one request body against the account (`AccountSchema`):
it coerces values whose meaning is certain ("42" -> 42 for a number property),
applies the `unknown_properties` policy to properties the account lacks, and
rejects what it cannot send without losing data, so that every loss is a
failure record rather than a silent drop.

Rejection reasons (stable; they become failure records' `reason`):
`unknown_property` (policy 'fail'), `type_mismatch` (a value that cannot be
coerced safely), `unknown_mailing_list`. Adjustment names (counted per value):
`coerced`, `unknown_property_sent`, `unknown_property_dropped`.
"""
import collections
import dataclasses
import json
import math
import re
from typing import Any

import apache_beam as beam

from transforms.loops_client import LoopsClient
from transforms.mapping import LOOPS_CONTACT_FIELDS
from transforms.metrics import CounterFamily, ReasonCounters
from transforms.parse import Rejected
from transforms.records import failure_record
from transforms.timestamps import parse_timestamp, to_iso8601

PROPERTIES_PATH = '/v1/contacts/properties?list=all'
LISTS_PATH = '/v1/lists'
LOOPS_TYPES = ('string', 'number', 'boolean', 'date')
UNKNOWN_PROPERTY_POLICIES = ('send', 'drop', 'fail')
MAILING_LISTS = 'mailingLists'
# Keys of an event send that are not contact properties.
EVENT_ONLY_FIELDS = frozenset({'eventName', 'eventProperties'})
FAILED = 'failed'

# Loops stores numbers as doubles: integers beyond this lose digits.
MAX_SAFE_INTEGER = 2 ** 53 - 1
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
                             f'{_preview(properties)}')
        if not isinstance(lists, list) or not all(
                isinstance(item, dict) and isinstance(item.get('id'), str) for item in lists):
            raise ValueError(f'mailing lists: expected a list of {{id, name}}, got '
                             f'{_preview(lists)}')
        return cls({item['key']: item['type'] for item in properties},
                   frozenset(item['id'] for item in lists))

    @classmethod
    def fetch(cls, client: LoopsClient) -> 'AccountSchema':
        """Reads the account's properties (default and custom) and mailing lists.
        Raises AuthError, LoopsError, or ValueError for an unexpected answer."""
        return cls.from_json(client.get(PROPERTIES_PATH), client.get(LISTS_PATH))


def check_policy(unknown_properties: str) -> None:
    """Raises ValueError unless `unknown_properties` is 'send', 'drop' or 'fail'."""
    if unknown_properties not in UNKNOWN_PROPERTY_POLICIES:
        raise ValueError(f'unknown_properties must be one of '
                         f'{", ".join(UNKNOWN_PROPERTY_POLICIES)}, not {unknown_properties!r}')


def is_custom_property(key: str, is_event: bool) -> bool:
    """Whether a top-level body key is a custom contact property (not one of
    Loops' own fields, nor, for an event send, eventName/eventProperties)."""
    return key not in LOOPS_CONTACT_FIELDS and not (is_event and key in EVENT_ONLY_FIELDS)


def coerce_value(key: str, value: Any, loops_type: str) -> Any:
    """One property value -> the value to send for a property of `loops_type`.

    null always passes (it resets). number: numeric text -> int or float
    (never booleans, never "12abc", never integers Loops would round).
    boolean: "true"/"false" in any case -> bool. date: any Segment timestamp
    form, epoch numbers included -> ISO-8601 text. string: numbers and
    booleans -> their JSON text. A type Loops may add later passes unchanged.
    Raises Rejected('type_mismatch') for a value that cannot be coerced safely.
    """
    if value is None or loops_type not in LOOPS_TYPES:
        return value
    if loops_type == 'string':
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
            return json.dumps(value)
    elif loops_type == 'number':
        number = _number(value)
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
                   f'{_preview(value)} cannot be sent as a {loops_type}')


def is_changed(value: Any, coerced: Any) -> bool:
    """Whether coerce_value changed a value (1 == 1.0 == True, so compare types too)."""
    return type(coerced) is not type(value) or coerced != value


def conform_body(body: dict, schema: AccountSchema, unknown_properties: str, *,
                 is_event: bool = False) -> tuple[dict, collections.Counter]:
    """A request body -> (the body to send, adjustments made).

    Custom properties the account has are coerced to its types (see
    coerce_value); those it lacks are sent, dropped or rejected as
    `unknown_properties` says ('send', 'drop', 'fail'). Every mailing-list id
    must exist in the account. Loops' own fields pass unchanged; for an event
    send (`is_event`), so do eventName and eventProperties: only the flat
    top-level contact properties are conformed. The input is not changed.
    Raises Rejected: unknown_property, type_mismatch, unknown_mailing_list.
    """
    check_policy(unknown_properties)
    adjustments = collections.Counter()
    conformed = {}
    for key, value in body.items():
        if key == MAILING_LISTS:
            _check_mailing_lists(value, schema)
        elif is_custom_property(key, is_event):
            loops_type = schema.properties.get(key)
            if loops_type is None:
                if unknown_properties == 'fail':
                    raise Rejected('unknown_property',
                                   f'{key!r} is not a contact property of the Loops account '
                                   '(create it in Loops, or use --unknown_properties=send|drop)')
                if unknown_properties == 'drop':
                    adjustments['unknown_property_dropped'] += 1
                    continue
                adjustments['unknown_property_sent'] += 1
            else:
                coerced = coerce_value(key, value, loops_type)
                if is_changed(value, coerced):
                    adjustments['coerced'] += 1
                value = coerced
        conformed[key] = value
    return conformed, adjustments


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
    number = int(text)
    return number if abs(number) <= MAX_SAFE_INTEGER else None


def _check_mailing_lists(value: Any, schema: AccountSchema) -> None:
    if not isinstance(value, dict):
        return
    unknown = sorted(list_id for list_id in value if list_id not in schema.mailing_lists)
    if unknown:
        raise Rejected('unknown_mailing_list',
                       f'mailing list {", ".join(map(repr, unknown))} does not exist in the '
                       'Loops account')


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + '...'


class _ConformRequest(beam.DoFn):
    def __init__(self, schema: AccountSchema, unknown_properties: str):
        self._schema = schema
        self._unknown_properties = unknown_properties

    def setup(self):
        self._failed = ReasonCounters('map')
        self._adjusted = CounterFamily('conform/')

    def process(self, request):
        try:
            body, adjustments = conform_body(request.body, self._schema,
                                             self._unknown_properties,
                                             is_event=request.is_event)
        except Rejected as rejected:
            self._failed.inc(rejected.reason)
            yield beam.pvalue.TaggedOutput(FAILED, failure_record(
                'map', rejected.reason, rejected.message, request=request,
                source=request.source))
            return
        for name, n in adjustments.items():
            self._adjusted.inc(name, n)
        yield dataclasses.replace(request, body=body)


class ConformToAccount(beam.PTransform):
    """LoopsRequest -> LoopsRequest fitted to the Loops account (see conform_body).

    Returns (requests, failures): failures are records of stage `map` with
    the request and its source, counted as `map/failed` and `map/<reason>`
    (applied per event right after mapping, so they count as map failures).
    Adjustments are counted as `conform/<adjustment>`.
    """

    def __init__(self, schema: AccountSchema, unknown_properties: str = 'send'):
        super().__init__()
        check_policy(unknown_properties)
        self._schema = schema
        self._unknown_properties = unknown_properties

    def expand(self, requests):
        conformed = requests | 'Conform' >> beam.ParDo(
            _ConformRequest(self._schema, self._unknown_properties)).with_outputs(
                FAILED, main='requests')
        return conformed.requests, conformed.failed
