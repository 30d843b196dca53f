"""Segment identify and track calls -> Loops requests, as a mapping file says.

The defaults reproduce Segment's "Loops (Actions)" destination: identify ->
`PUT /v1/contacts/update`, track -> `POST /v1/events/send`. Where that
destination is weak, this module does better: nested objects, arrays and long
strings become valid Loops values (see transforms/values.py), dates become
ISO-8601, trait keys read by an explicit field are not sent twice, the array
form of `mailingLists` is understood, and every event carries a deterministic
`Idempotency-Key`.

Mapping file (YAML or JSON; every key optional, each given key replaces the
default of that key only). The defaults, plus three example keys (`rename`,
`skip`, `contactProperties`) that are empty by default:

    contact:                                  # identify -> PUT /v1/contacts/update
      email: ["$.traits.email", "$.email"]    # a path, or a list: the first present non-null wins
      firstName: ["$.traits.firstName", "$.traits.first_name"]
      lastName: ["$.traits.lastName", "$.traits.last_name"]
      userGroup: ["$.traits.userGroup", "$.traits.user_group"]
      source: ["$.traits.source", {literal: "Segment"}]
      subscribed: "$.traits.subscribed"       # sent only when the value is a JSON boolean
      createdAt: null                         # null = not sent; when mapped, becomes ISO-8601
      mailingLists: "$.traits.mailingLists"
      properties: "$.traits"                  # the object whose keys become custom properties
      rename: {plan_name: plan}               # custom property renames (source key -> Loops key)
      skip: [password]                        # source keys never sent as custom properties
      dates: [createdAt, birthday]            # Loops keys whose values become ISO-8601 text
    event:                                    # track -> POST /v1/events/send
      eventName: "$.event"
      email: ["$.properties.email", "$.context.traits.email"]
      eventProperties: "$.properties"         # null = none
      contactProperties: {plan: "$.properties.plan"}   # Loops key -> source, flat in the body
    values: {nested_objects: flatten, arrays: join, long_strings: truncate, separator: "_"}

A source is a path, `{literal: <JSON value>}`, or a list of them. A path is `$`
followed by `.name` or `["any key"]` / `['any key']` segments, e.g.
`$.traits["Invited User?"]`. `userId` is not mappable: it is always the
event's userId, and an event without one is rejected (Loops matches by it).
"""
import collections
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union

import yaml
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.parse import ParsedEvent, Rejected
from transforms.records import (LoopsRequest, contact_upsert, event_send,
                                idempotency_key_for)
from transforms.timestamps import parse_timestamp, to_iso8601
from transforms.values import (ARRAY_RULES, DROPPED, LONG_STRING_RULES,
                               MAX_STRING_LENGTH, NESTED_OBJECT_RULES,
                               ValueRules, is_loops_scalar, loops_length,
                               to_loops_properties, to_loops_value)

# Names Loops keeps for itself (unconfirmed list): never custom properties.
RESERVED_NAMES = frozenset({'id', 'listId', 'softDeleteAt', 'teamId', 'updatedAt'})
# Loops' own contact fields: set only through their explicit field.
LOOPS_CONTACT_FIELDS = frozenset({'email', 'firstName', 'lastName', 'source',
                                  'subscribed', 'userGroup', 'userId',
                                  'mailingLists', 'optInStatus'})
# Loops types these default fields as text.
TEXT_FIELDS = ('firstName', 'lastName', 'userGroup', 'source')
EVENT_BODY_FIELDS = frozenset({'eventName', 'email', 'userId', 'eventProperties',
                               'mailingLists'})

DEFAULT_MAPPING = {
    'contact': {
        'email': ['$.traits.email', '$.email'],
        'firstName': ['$.traits.firstName', '$.traits.first_name'],
        'lastName': ['$.traits.lastName', '$.traits.last_name'],
        'userGroup': ['$.traits.userGroup', '$.traits.user_group'],
        'source': ['$.traits.source', {'literal': 'Segment'}],
        'subscribed': '$.traits.subscribed',
        'createdAt': None,
        'mailingLists': '$.traits.mailingLists',
        'properties': '$.traits',
        'rename': {},
        'skip': [],
        'dates': ['createdAt', 'birthday'],
    },
    'event': {
        'eventName': '$.event',
        'email': ['$.properties.email', '$.context.traits.email'],
        'eventProperties': '$.properties',
        'contactProperties': {},
    },
    'values': {'nested_objects': 'flatten', 'arrays': 'join',
               'long_strings': 'truncate', 'separator': '_'},
}
CONTACT_SOURCE_KEYS = ('email', 'firstName', 'lastName', 'userGroup', 'source',
                       'subscribed', 'createdAt', 'mailingLists')

_EMAIL = re.compile(r'[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+')
_PATH_SEGMENT = re.compile(r'''\.([^.\[\]'"\s]+)'''
                           r'''|\[\s*"((?:[^"\\]|\\.)*)"\s*\]'''
                           r"""|\[\s*'((?:[^'\\]|\\.)*)'\s*\]""")
_ESCAPE = re.compile(r'\\(.)')
# The mailing-list values Loops' destination accepts: booleans and their text.
_FLAGS = {True: True, False: False, 'true': True, 'false': False}


class MappingError(ValueError):
    """A mapping file or dict that cannot be used; the message says what is
    wrong and where (e.g. "contact.email[1]: ..."), for a person to fix."""


class Path(NamedTuple):
    """A compiled path: its text (for messages) and the keys from the event root."""
    text: str
    keys: tuple


class Literal(NamedTuple):
    """A fixed value used as a source."""
    value: Any


# Candidates in order of preference; empty means "not sent".
Source = tuple


@dataclass(frozen=True)
class Mapping:
    """A validated, compiled mapping (picklable: Beam ships it to workers).

    Build it with default_mapping(), load_mapping() or mapping_from_dict().
    `contact_fields` maps each explicit Loops contact field to its Source;
    `consumed_keys` and `unsendable_names` are derived once here so that
    mapping an event does no set-up work.
    """
    contact_fields: dict
    contact_properties: Optional[Path]
    rename: dict
    skip: frozenset
    dates: frozenset
    event_name: Source
    event_email: Source
    event_properties: Optional[Path]
    event_contact_properties: dict
    values: ValueRules
    consumed_keys: frozenset = field(init=False)
    unsendable_names: frozenset = field(init=False)

    def __post_init__(self):
        # A trait read by an explicit field (firstName <- traits.first_name)
        # is that field's value, not also a custom property.
        consumed = set(self.skip)
        if self.contact_properties is not None:
            parent = self.contact_properties.keys
            for source in self.contact_fields.values():
                for candidate in source:
                    if (type(candidate) is Path and len(candidate.keys) == len(parent) + 1
                            and candidate.keys[:-1] == parent):
                        consumed.add(candidate.keys[-1])
        mapped = {name for name, source in self.contact_fields.items() if source}
        object.__setattr__(self, 'consumed_keys', frozenset(consumed))
        object.__setattr__(self, 'unsendable_names',
                           LOOPS_CONTACT_FIELDS | RESERVED_NAMES | mapped)


class MappedRequest(NamedTuple):
    """A Loops request and the value adjustments made to build it (name -> count)."""
    request: LoopsRequest
    adjustments: dict


def default_mapping() -> Mapping:
    """The mapping of Segment's Loops destination, with this project's improvements."""
    return mapping_from_dict({})


def load_mapping(path: str) -> Mapping:
    """Reads a YAML (.yaml, .yml) or JSON (.json) mapping file and merges it
    over the defaults. Raises MappingError, naming the file, when it cannot be
    read, parsed or used."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in ('.yaml', '.yml', '.json'):
        raise MappingError(f'{path}: a mapping file is YAML (.yaml, .yml) or JSON (.json)')
    try:
        # Beam's file systems: the file may be local, gs:// or s3:// (a Flex
        # Template launcher has no local copy).
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
            text = file.read().decode('utf-8')
    except (OSError, UnicodeDecodeError, BeamIOError) as error:
        raise MappingError(f'{path}: cannot read the mapping file: {error}') from None
    try:
        document = json.loads(text) if extension == '.json' else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        kind = 'JSON' if extension == '.json' else 'YAML'
        raise MappingError(f'{path}: not valid {kind}: {_one_line(error)}') from None
    try:
        return mapping_from_dict({} if document is None else document)
    except MappingError as error:
        raise MappingError(f'{path}: {error}') from None


def _one_line(error: Exception) -> str:
    """A parser's error as one line: what, and where (PyYAML's own message
    spans several lines with a drawing of the spot)."""
    problem = getattr(error, 'problem', None)
    mark = getattr(error, 'problem_mark', None)
    if problem and mark is not None:
        return f'{problem} at line {mark.line + 1}, column {mark.column + 1}'
    return ' '.join(str(error).split())


def mapping_from_dict(d: dict) -> Mapping:
    """Validates a mapping document (the parsed file) and merges it over the
    defaults, key by key within each section. Raises MappingError."""
    if not isinstance(d, dict):
        raise MappingError('a mapping is an object with the sections contact, '
                           f'event and values, not {_type_name(d)}')
    _check_keys(d, DEFAULT_MAPPING, '', 'section')
    sections = {}
    for name, defaults in DEFAULT_MAPPING.items():
        # A section left empty in YAML (`contact:`) reads as null: the defaults.
        given = d.get(name)
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise MappingError(f'{name}: expected an object, got {_type_name(given)}')
        if 'userId' in given and name in ('contact', 'event'):
            raise MappingError(f"{name}.userId: userId is not mappable: it is always "
                               "the event's userId (events without one are rejected)")
        _check_keys(given, defaults, f'{name}.', 'key')
        sections[name] = {**defaults, **given}
    contact, event, values = sections['contact'], sections['event'], sections['values']
    return Mapping(
        contact_fields={key: _source(contact[key], f'contact.{key}')
                        for key in CONTACT_SOURCE_KEYS},
        contact_properties=_optional_path(contact['properties'], 'contact.properties'),
        rename=_renames(contact['rename']),
        skip=frozenset(_names(contact['skip'], 'contact.skip')),
        dates=frozenset(_names(contact['dates'], 'contact.dates')),
        event_name=_required_source(event['eventName'], 'event.eventName'),
        event_email=_source(event['email'], 'event.email'),
        event_properties=_optional_path(event['eventProperties'], 'event.eventProperties'),
        event_contact_properties=_event_contact_properties(event['contactProperties']),
        values=_value_rules(values),
    )


def map_identify(event: ParsedEvent, mapping: Mapping) -> MappedRequest:
    """An identify call -> a contact upsert (PUT /v1/contacts/update).

    Raises Rejected: missing_user_id, invalid_email, value_too_long.
    """
    data = event.data
    rules = mapping.values
    adjustments = collections.Counter()
    user_id = _user_id(event)
    body = _custom_properties(data, mapping, adjustments)
    body['userId'] = user_id
    fields = mapping.contact_fields
    email = _email(fields['email'], data)
    if email is not None:
        body['email'] = email
    for name in TEXT_FIELDS:
        value = _first_value(fields[name], data)
        if value is not None:
            text = _text_value(name, value, rules, adjustments)
            if text is not DROPPED:
                body[name] = text
    subscribed = _first_value(fields['subscribed'], data)
    if isinstance(subscribed, bool):
        body['subscribed'] = subscribed
    elif subscribed is not None:
        adjustments['dropped_subscribed'] += 1
    created_at = _first_value(fields['createdAt'], data)
    if created_at is not None:
        iso = _iso_date(created_at)
        if iso is None:
            adjustments['dropped_date'] += 1
        else:
            body['createdAt'] = iso
    lists = _first_value(fields['mailingLists'], data)
    if lists is not None:
        mailing_lists = _mailing_lists(lists, adjustments)
        if mailing_lists:
            body['mailingLists'] = mailing_lists
    request = contact_upsert(body, user_id, event.order, event.message_id or event.source)
    return MappedRequest(request, dict(adjustments))


def map_track(event: ParsedEvent, mapping: Mapping) -> MappedRequest:
    """A track call -> an event send (POST /v1/events/send) with an Idempotency-Key.

    Raises Rejected: missing_event_name, missing_user_id, invalid_email,
    value_too_long.
    """
    data = event.data
    rules = mapping.values
    adjustments = collections.Counter()
    event_name = _first_value(mapping.event_name, data)
    if not isinstance(event_name, str) or not event_name.strip():
        raise Rejected('missing_event_name',
                       f'track has no event name at {_describe(mapping.event_name)}')
    if loops_length(event_name) > MAX_STRING_LENGTH:
        raise Rejected('value_too_long', f'the event name is {loops_length(event_name)} '
                       f'characters long; Loops accepts at most {MAX_STRING_LENGTH}')
    user_id = _user_id(event)
    body = {'eventName': event_name, 'userId': user_id}
    email = _email(mapping.event_email, data)
    if email is not None:
        body['email'] = email
    for name, source in mapping.event_contact_properties.items():
        value = _first_value(source, data)
        if value is not None:
            converted = to_loops_value(name, value, rules, adjustments)
            if converted is not DROPPED:
                body[name] = converted
    if mapping.event_properties is not None:
        properties = _resolve(mapping.event_properties.keys, data)
        if isinstance(properties, dict):
            event_properties = to_loops_properties(properties, rules, adjustments)
            if event_properties:
                body['eventProperties'] = event_properties
    request = event_send(body, user_id, event.order, event.message_id or event.source,
                         _idempotency_key(event))
    return MappedRequest(request, dict(adjustments))


def map_event(event: ParsedEvent, mapping: Mapping) -> MappedRequest:
    """Maps an identify or a track call; any other type raises
    Rejected('unsupported_type')."""
    if event.type == 'identify':
        return map_identify(event, mapping)
    if event.type == 'track':
        return map_track(event, mapping)
    raise Rejected('unsupported_type',
                   f'{event.type!r} calls are not mapped (only identify and track)')


def _is_loops_key(key: Any) -> bool:
    return isinstance(key, str) and loops_length(key) <= MAX_STRING_LENGTH


def is_valid_loops_body(body: Any) -> bool:
    """True when every key (at most 500 characters) and value of a request
    body is one Loops accepts: a scalar (strings of at most 500 characters,
    finite numbers), except `mailingLists` (list id -> boolean) and
    `eventProperties` (key -> scalar)."""
    if not isinstance(body, dict):
        return False
    for key, value in body.items():
        if not _is_loops_key(key):
            return False
        if key == 'mailingLists':
            valid = isinstance(value, dict) and all(
                isinstance(k, str) and k and isinstance(v, bool) for k, v in value.items())
        elif key == 'eventProperties':
            valid = isinstance(value, dict) and all(
                _is_loops_key(k) and is_loops_scalar(v) for k, v in value.items())
        else:
            valid = is_loops_scalar(value)
        if not valid:
            return False
    return True


def compile_path(text: str) -> Path:
    """'$.traits["Invited User?"]' -> Path(text, ('traits', 'Invited User?')).
    Raises ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.startswith('$'):
        raise ValueError(f"{text!r} is not a path (paths start with '$.')")
    keys = []
    position = 1
    while position < len(text):
        match = _PATH_SEGMENT.match(text, position)
        if match is None:
            raise ValueError(f'{text!r} is not a valid path: cannot read {text[position:]!r} '
                             '(segments are .name, ["any key"] or [\'any key\'])')
        name, double_quoted, single_quoted = match.groups()
        if name is not None:
            keys.append(name)
        else:
            keys.append(_ESCAPE.sub(r'\1', double_quoted if double_quoted is not None
                                    else single_quoted))
        position = match.end()
    return Path(text, tuple(keys))


# --- Mapping events ---

def _resolve(keys: tuple, data: dict) -> Any:
    """The value at `keys`, or None when any step is missing or not an object."""
    value = data
    for key in keys:
        if type(value) is not dict:
            return None
        value = value.get(key)
        if value is None:
            return None
    return value


def _first_value(source: Source, data: dict, skip_blank: bool = False) -> Any:
    """The first candidate that is present and not null (nor blank text, when
    `skip_blank`); None when there is none."""
    for candidate in source:
        value = candidate.value if type(candidate) is Literal else _resolve(candidate.keys, data)
        if value is None or (skip_blank and isinstance(value, str) and not value.strip()):
            continue
        return value
    return None


def _user_id(event: ParsedEvent) -> str:
    if not event.user_id:
        raise Rejected('missing_user_id', f'{event.type} has no userId '
                       '(Loops contacts are matched by userId)')
    if loops_length(event.user_id) > MAX_STRING_LENGTH:
        # Cutting a userId could merge two people into one contact.
        raise Rejected('value_too_long', f'the userId is {loops_length(event.user_id)} '
                       f'characters long; Loops accepts at most {MAX_STRING_LENGTH}')
    return event.user_id


def _email(source: Source, data: dict) -> Optional[str]:
    """The stripped email, None when absent (blank text counts as absent: forms
    send "" for an unknown email). Raises Rejected('invalid_email')."""
    value = _first_value(source, data, skip_blank=True)
    if value is None:
        return None
    email = value.strip() if isinstance(value, str) else value
    if (not isinstance(email, str) or not _EMAIL.fullmatch(email)
            or loops_length(email) > MAX_STRING_LENGTH):
        raise Rejected('invalid_email', f'{_preview(value)} is not a valid email address')
    return email


def _text_value(name: str, value: Any, rules: ValueRules,
                adjustments: collections.Counter) -> Any:
    """A value for a text field of Loops: numbers and booleans as their JSON text."""
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        value = json.dumps(value)
    return to_loops_value(name, value, rules, adjustments)


def _custom_properties(data: dict, mapping: Mapping,
                       adjustments: collections.Counter) -> dict:
    if mapping.contact_properties is None:
        return {}
    source = _resolve(mapping.contact_properties.keys, data)
    if not isinstance(source, dict):
        return {}
    unsendable = mapping.unsendable_names
    selected = {}
    for key, value in source.items():
        if key in mapping.consumed_keys:
            continue
        name = mapping.rename.get(key, key)
        if name in unsendable:
            if name in RESERVED_NAMES:
                adjustments['dropped_reserved'] += 1
            continue
        selected[name] = value
    properties = to_loops_properties(selected, mapping.values, adjustments)
    # Flattening can build a name Loops keeps (list + Id with separator '').
    for name in properties.keys() & unsendable:
        if name in RESERVED_NAMES:
            adjustments['dropped_reserved'] += 1
        del properties[name]
    for name in mapping.dates & properties.keys():
        if properties[name] is None:
            continue
        iso = _iso_date(properties[name])
        if iso is None:
            adjustments['dropped_date'] += 1
            del properties[name]
        else:
            properties[name] = iso
    return properties


def _iso_date(value: Any) -> Optional[str]:
    ms = parse_timestamp(value)
    return None if ms is None else to_iso8601(ms)


def _mailing_lists(value: Any, adjustments: collections.Counter) -> dict:
    """{id: bool} from the object form {id: bool|"true"|"false"} or the array
    form [{"listId": id, "subscribed": ...}]; unusable entries are counted."""
    if isinstance(value, dict):
        entries = value.items()
    elif isinstance(value, list):
        entries = [(entry.get('listId'), entry.get('subscribed')) if isinstance(entry, dict)
                   else (None, None) for entry in value]
    else:
        adjustments['dropped_mailing_list'] += 1
        return {}
    lists = {}
    for list_id, flag in entries:
        subscribed = _FLAGS.get(flag) if isinstance(flag, (bool, str)) else None
        if isinstance(list_id, str) and list_id and subscribed is not None:
            lists[list_id] = subscribed
        else:
            adjustments['dropped_mailing_list'] += 1
    return lists


def _idempotency_key(event: ParsedEvent) -> str:
    if event.message_id:
        return idempotency_key_for(event.message_id)
    # No messageId: the event's own content is the only stable identity, so a
    # redelivery of the same payload gets the same key.
    canonical = json.dumps(event.data, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(canonical.encode('utf-8', 'surrogatepass')).hexdigest()
    return idempotency_key_for(f'content-sha256:{digest}')


def _describe(source: Source) -> str:
    return ', '.join(c.text if type(c) is Path else repr(c.value) for c in source) or 'nothing'


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + '...'


# --- Reading a mapping document ---

def _check_keys(given: dict, known: dict, where: str, kind: str) -> None:
    for key in given:
        if key not in known:
            raise MappingError(f'{where}{key}: unknown {kind} (expected one of '
                               f'{", ".join(known)})')


def _source(value: Any, where: str) -> Source:
    """null -> () (not sent); a path, {literal: value} or a list of them -> candidates."""
    if value is None:
        return ()
    if isinstance(value, list):
        if not value:
            raise MappingError(f'{where}: an empty list; use null to not send this field')
        return tuple(_candidate(item, f'{where}[{i}]') for i, item in enumerate(value))
    return (_candidate(value, where),)


def _required_source(value: Any, where: str) -> Source:
    if value is None:
        raise MappingError(f'{where}: required, cannot be null')
    return _source(value, where)


def _candidate(value: Any, where: str) -> Union[Path, Literal]:
    if isinstance(value, str):
        return _path(value, where)
    if isinstance(value, dict) and list(value) == ['literal']:
        literal = value['literal']
        if literal is None or not _is_json(literal):
            raise MappingError(f'{where}: a literal is text, a number, a boolean, '
                               f'an object or a list, not {_type_name(literal)}')
        return Literal(literal)
    raise MappingError(f'{where}: expected a path such as "$.traits.email" or '
                       f'{{literal: value}}, got {_preview(value)}')


def _path(value: Any, where: str) -> Path:
    if not isinstance(value, str):
        raise MappingError(f'{where}: expected a path such as "$.traits", '
                           f'got {_type_name(value)}')
    try:
        return compile_path(value)
    except ValueError as error:
        raise MappingError(f'{where}: {error}') from None


def _optional_path(value: Any, where: str) -> Optional[Path]:
    return None if value is None else _path(value, where)


def _names(value: Any, where: str) -> list:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MappingError(f'{where}: expected a list of property names, got {_preview(value)}')
    return value


def _renames(value: Any) -> dict:
    if not isinstance(value, dict):
        raise MappingError(f'contact.rename: expected an object (source key: Loops key), '
                           f'got {_type_name(value)}')
    for source_key, loops_key in value.items():
        where = f'contact.rename.{source_key}'
        if not isinstance(source_key, str):
            raise MappingError(f'{where}: a source key must be text')
        if not isinstance(loops_key, str) or not loops_key:
            raise MappingError(f'{where}: expected a property name, got {_preview(loops_key)}')
        if loops_key in LOOPS_CONTACT_FIELDS or loops_key in RESERVED_NAMES:
            raise MappingError(f'{where}: {loops_key!r} is a Loops field or reserved name, '
                               'not a custom property')
    return dict(value)


def _event_contact_properties(value: Any) -> dict:
    if not isinstance(value, dict):
        raise MappingError('event.contactProperties: expected an object (Loops key: source), '
                           f'got {_type_name(value)}')
    properties = {}
    for key, source in value.items():
        where = f'event.contactProperties.{key}'
        if not isinstance(key, str) or not key:
            raise MappingError(f'{where}: a property name must be non-empty text')
        if key in EVENT_BODY_FIELDS or key in RESERVED_NAMES:
            raise MappingError(f'{where}: {key!r} is a field of the event request or a '
                               'reserved name, not a contact property')
        properties[key] = _required_source(source, where)
    return properties


def _value_rules(values: dict) -> ValueRules:
    for key, allowed in (('nested_objects', NESTED_OBJECT_RULES), ('arrays', ARRAY_RULES),
                         ('long_strings', LONG_STRING_RULES)):
        if values[key] not in allowed:
            raise MappingError(f'values.{key}: expected one of {", ".join(allowed)}, '
                               f'got {_preview(values[key])}')
    if not isinstance(values['separator'], str):
        raise MappingError(f'values.separator: expected text, got {_preview(values["separator"])}')
    return ValueRules(**values)


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _type_name(value: Any) -> str:
    return {dict: 'an object', list: 'a list', str: 'text', bool: 'a boolean',
            int: 'a number', float: 'a number', type(None): 'null'}.get(
                type(value), type(value).__name__)
