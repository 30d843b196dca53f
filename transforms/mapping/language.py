"""The mapping language: a YAML or JSON document -> a validated `Mapping`.

The defaults reproduce Segment's "Loops (Actions)" destination; every key a
document gives replaces the default of that key only. The defaults, plus
example keys (`rename`, `skip`, `contactProperties`) that are empty by default:

    contact:                                  # identify -> PUT /v1/contacts/update
      email: ["$.traits.email", "$.email"]    # a path, or a list: the first present non-null wins
      firstName: ["$.traits.firstName", "$.traits.first_name"]
      lastName: ["$.traits.lastName", "$.traits.last_name"]
      userGroup: ["$.traits.userGroup", "$.traits.user_group"]
      source: ["$.traits.source", {literal: "Segment"}]
      subscribed: "$.traits.subscribed"       # true/false, "true"/"false", "yes"/"no", 1/0
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
      contactProperties: {plan: "$.properties.plan"}   # Loops key -> source, flat in the body,
                                              # or one path whose object is spread like traits
                                              # (Loops' firstName, lastName, userGroup, source,
                                              # subscribed, createdAt: set as by a contact)
      colon_replacement: null                 # null: a name with ':' is a failure; or e.g. "-"
    page: null                                # off; {eventName: "Viewed {name} Page"} sends
    screen: null                              # page/screen/group calls as events (the other
    group: null                               # keys as under `event`)
    values: {nested_objects: flatten, arrays: join, long_strings: truncate, separator: null}
                                              # separator null: flattened names in camelCase
                                              # (address.city -> addressCity); "_": address_city

A source is a path, `{literal: <JSON value>}`, or a list of them. A path is `$`
followed by `.name` or `["any key"]` / `['any key']` segments, e.g.
`$.traits["Invited User?"]`. An `eventName` may also be a template: text with
`{name}` or `{properties.title}` placeholders (paths without the `$.`), which
counts as absent when a placeholder has no value. `userId` is not mappable:
it is always the event's userId.
"""
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union

import yaml
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.kinds import MAILING_LISTS
from transforms.core.text import preview
from transforms.mapping.values import (ARRAY_RULES, LONG_STRING_RULES, NESTED_OBJECT_RULES,
                                       ValueRules)

# Names Loops keeps for itself (unconfirmed list): never custom properties.
RESERVED_NAMES = frozenset({'id', 'listId', 'softDeleteAt', 'teamId', 'updatedAt'})
# Contact fields Loops sets itself: never sent.
READ_ONLY_FIELDS = frozenset({'optInStatus'})
# Loops' own contact fields: set only through their explicit field.
LOOPS_CONTACT_FIELDS = frozenset({'email', 'firstName', 'lastName', 'source',
                                  'subscribed', 'userGroup', 'userId',
                                  MAILING_LISTS, 'optInStatus'})
EVENT_BODY_FIELDS = frozenset({'eventName', 'email', 'userId', 'eventProperties',
                               MAILING_LISTS})
# Call types that can become event sends, and what each sends by default.
EVENT_TYPES = ('track', 'page', 'screen', 'group')

_EVENT_DEFAULTS = {
    'eventName': '$.event',
    'email': ['$.properties.email', '$.context.traits.email'],
    'eventProperties': '$.properties',
    'contactProperties': {},
    'colon_replacement': None,
}
DEFAULT_MAPPING = {
    'contact': {
        'email': ['$.traits.email', '$.email'],
        'firstName': ['$.traits.firstName', '$.traits.first_name'],
        'lastName': ['$.traits.lastName', '$.traits.last_name'],
        'userGroup': ['$.traits.userGroup', '$.traits.user_group'],
        'source': ['$.traits.source', {'literal': 'Segment'}],
        'subscribed': '$.traits.subscribed',
        'createdAt': None,
        MAILING_LISTS: '$.traits.mailingLists',
        'properties': '$.traits',
        'rename': {},
        'skip': [],
        'dates': ['createdAt', 'birthday'],
    },
    'event': dict(_EVENT_DEFAULTS),
    'page': None,
    'screen': None,
    'group': None,
    'values': {'nested_objects': 'flatten', 'arrays': 'join',
               'long_strings': 'truncate', 'separator': None},
}
# What a page/screen/group section takes when it is turned on: eventName is required.
_CALL_EVENT_DEFAULTS = {
    'page': {**_EVENT_DEFAULTS, 'eventName': None},
    'screen': {**_EVENT_DEFAULTS, 'eventName': None},
    'group': {**_EVENT_DEFAULTS, 'eventName': None, 'eventProperties': '$.traits'},
}
CONTACT_SOURCE_KEYS = ('email', 'firstName', 'lastName', 'userGroup', 'source',
                       'subscribed', 'createdAt', MAILING_LISTS)

_PATH_SEGMENT = re.compile(r'''\.([^.\[\]'"\s]+)'''
                           r'''|\[\s*"((?:[^"\\]|\\.)*)"\s*\]'''
                           r"""|\[\s*'((?:[^'\\]|\\.)*)'\s*\]""")
_ESCAPE = re.compile(r'\\(.)')
_PLACEHOLDER = re.compile(r'\{([^{}]*)\}')


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


class Template(NamedTuple):
    """Event-name text with placeholders: `parts` alternate literal text
    (even positions) and paths (odd positions)."""
    text: str
    parts: tuple


# Candidates in order of preference; empty means "not sent".
Source = tuple


@dataclass(frozen=True)
class EventMapping:
    """How one call type (track, page, screen, group) becomes an event send.
    `contact_properties` is {Loops key: Source}, or a Path whose object is
    spread flat like a contact's traits."""
    event_name: Source
    email: Source
    event_properties: Optional[Path]
    contact_properties: Union[dict, Path]
    colon_replacement: Optional[str]


class FieldLookup(NamedTuple):
    """The explicit contact fields as a mapper looks them up. Most events set
    a few traits where the mapping reads many: a field read only from keys of
    the properties object (the traits) that an event lacks has no value, and
    needs no look-up of its paths one by one."""
    trait_fields: dict     # field -> its traits keys, for fields read only from traits
    trait_keys: frozenset  # all of those keys
    other_fields: tuple    # (field, Source) of the fields read from elsewhere too


@dataclass(frozen=True)
class Mapping:
    """A validated, compiled mapping (picklable: Beam ships it to workers).

    Build it with default_mapping(), load_mapping() or mapping_from_dict().
    `contact_fields` maps each explicit Loops contact field to its Source;
    `events` maps each call type sent as an event to its EventMapping;
    `consumed_keys`, `unsendable_names` and `field_lookup` are derived once
    here so that mapping an event does no set-up work.
    """
    contact_fields: dict
    contact_properties: Optional[Path]
    rename: dict
    skip: frozenset
    dates: frozenset
    events: dict
    values: ValueRules
    consumed_keys: frozenset = field(init=False)
    unsendable_names: frozenset = field(init=False)
    field_lookup: 'FieldLookup' = field(init=False)

    def __post_init__(self):
        # A trait read by an explicit field (firstName <- traits.first_name)
        # is that field's value, not also a custom property.
        consumed = set(self.skip)
        trait_fields = {}
        if self.contact_properties is not None:
            parent = self.contact_properties.keys
            for name, source in self.contact_fields.items():
                keys = [candidate.keys[-1] for candidate in source
                        if type(candidate) is Path and len(candidate.keys) == len(parent) + 1
                        and candidate.keys[:-1] == parent]
                consumed.update(keys)
                if source and len(keys) == len(source):
                    trait_fields[name] = frozenset(keys)
        mapped = {name for name, source in self.contact_fields.items() if source}
        object.__setattr__(self, 'consumed_keys', frozenset(consumed))
        object.__setattr__(self, 'unsendable_names',
                           LOOPS_CONTACT_FIELDS | RESERVED_NAMES | mapped)
        object.__setattr__(self, 'field_lookup', FieldLookup(
            trait_fields=trait_fields,
            trait_keys=frozenset().union(*trait_fields.values()),
            other_fields=tuple((name, source) for name, source in self.contact_fields.items()
                               if source and name not in trait_fields)))

    @property
    def event_types(self) -> frozenset:
        """The call types this mapping sends as events (track, and page,
        screen or group when their section is given)."""
        return frozenset(self.events)


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
        raise MappingError('a mapping is an object with the sections contact, event, page, '
                           f'screen, group and values, not {_type_name(d)}')
    _check_keys(d, DEFAULT_MAPPING, '', 'section')
    sections = {name: _section(d, name) for name in DEFAULT_MAPPING}
    contact = sections['contact']
    events = {'track': _event_mapping(sections['event'], 'event')}
    for call_type in ('page', 'screen', 'group'):
        if sections[call_type] is not None:
            events[call_type] = _event_mapping(sections[call_type], call_type)
    return Mapping(
        contact_fields={key: _source(contact[key], f'contact.{key}')
                        for key in CONTACT_SOURCE_KEYS},
        contact_properties=_optional_path(contact['properties'], 'contact.properties'),
        rename=_renames(contact['rename']),
        skip=frozenset(_names(contact['skip'], 'contact.skip')),
        dates=frozenset(_names(contact['dates'], 'contact.dates')),
        events=events,
        values=_value_rules(sections['values']),
    )


def _section(d: dict, name: str) -> Optional[dict]:
    """The section `name` of a document merged over its defaults; None for a
    call-type section that is off."""
    defaults = DEFAULT_MAPPING[name]
    given = d.get(name)
    if defaults is None:  # page, screen, group: off unless given
        if given is None:
            return None
        defaults = _CALL_EVENT_DEFAULTS[name]
    elif given is None:   # a section left empty in YAML (`contact:`) reads as null
        given = {}
    if not isinstance(given, dict):
        raise MappingError(f'{name}: expected an object, got {_type_name(given)}')
    if 'userId' in given and name != 'values':
        raise MappingError(f"{name}.userId: userId is not mappable: it is always "
                           "the event's userId")
    _check_keys(given, defaults, f'{name}.', 'key')
    return {**defaults, **given}


def _event_mapping(section: dict, where: str) -> EventMapping:
    replacement = section['colon_replacement']
    if replacement is not None and (not isinstance(replacement, str) or ':' in replacement):
        raise MappingError(f'{where}.colon_replacement: expected null or text without ":", '
                           f'got {preview(replacement)}')
    contact_properties = section['contactProperties']
    return EventMapping(
        event_name=_event_name_source(section['eventName'], f'{where}.eventName'),
        email=_source(section['email'], f'{where}.email'),
        event_properties=_optional_path(section['eventProperties'], f'{where}.eventProperties'),
        contact_properties=(_path(contact_properties, f'{where}.contactProperties')
                            if isinstance(contact_properties, str)
                            else _event_contact_properties(contact_properties, where)),
        colon_replacement=replacement,
    )


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


def compile_template(text: str) -> Template:
    """'Viewed {name} Page' -> Template; ValueError for an empty or unreadable
    placeholder."""
    parts = []
    for index, piece in enumerate(_PLACEHOLDER.split(text)):
        if index % 2 == 0:
            if '{' in piece or '}' in piece:
                raise ValueError(f'{text!r}: unbalanced braces')
            parts.append(piece)
        else:
            if not piece.strip():
                raise ValueError(f'{text!r}: an empty placeholder')
            parts.append(compile_path('$.' + piece.strip()))
    return Template(text, tuple(parts))


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


def _event_name_source(value: Any, where: str) -> Source:
    """Like a source, but text that is not a path is a template."""
    if value is None:
        raise MappingError(f'{where}: required, cannot be null')
    items = value if isinstance(value, list) else [value]
    if not items:
        raise MappingError(f'{where}: an empty list')
    candidates = []
    for i, item in enumerate(items):
        here = f'{where}[{i}]' if isinstance(value, list) else where
        if isinstance(item, str) and not item.startswith('$'):
            try:
                candidates.append(compile_template(item))
            except ValueError as error:
                raise MappingError(f'{here}: {error}') from None
        else:
            candidates.append(_candidate(item, here))
    return tuple(candidates)


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
                       f'{{literal: value}}, got {preview(value)}')


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
        raise MappingError(f'{where}: expected a list of property names, got {preview(value)}')
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
            raise MappingError(f'{where}: expected a property name, got {preview(loops_key)}')
        if loops_key in LOOPS_CONTACT_FIELDS or loops_key in RESERVED_NAMES:
            raise MappingError(f'{where}: {loops_key!r} is a Loops field or reserved name, '
                               'not a custom property')
    return dict(value)


def _event_contact_properties(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise MappingError(f'{where}.contactProperties: expected an object (Loops key: '
                           f'source) or a path, got {_type_name(value)}')
    properties = {}
    for key, source in value.items():
        here = f'{where}.contactProperties.{key}'
        if not isinstance(key, str) or not key:
            raise MappingError(f'{here}: a property name must be non-empty text')
        if key in EVENT_BODY_FIELDS or key in RESERVED_NAMES:
            raise MappingError(f'{here}: {key!r} is a field of the event request or a '
                               'reserved name, not a contact property')
        if key in READ_ONLY_FIELDS:
            raise MappingError(f'{here}: {key!r} is read-only in Loops (Loops sets it), '
                               'not a contact property')
        properties[key] = _required_source(source, here)
    return properties


def _value_rules(values: dict) -> ValueRules:
    for key, allowed in (('nested_objects', NESTED_OBJECT_RULES), ('arrays', ARRAY_RULES),
                         ('long_strings', LONG_STRING_RULES)):
        if values[key] not in allowed:
            raise MappingError(f'values.{key}: expected one of {", ".join(allowed)}, '
                               f'got {preview(values[key])}')
    if values['separator'] is not None and not isinstance(values['separator'], str):
        raise MappingError(f'values.separator: expected null (camelCase) or text, '
                           f'got {preview(values["separator"])}')
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
