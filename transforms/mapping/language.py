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
      mailingLists: null                      # the contact's lists, sent with the event
                                              # (the forms a contact's mailingLists takes)
      colon_replacement: null                 # null: a name with ':' is a failure; or e.g. "-"
    page: null                                # off; {eventName: "Viewed {name} Page"} sends
    screen: null                              # page/screen/group calls as events (the other
    group: null                               # keys as under `event`)
    rules:                                    # any call its FQL trigger matches -> either action
      - name: Signed Up updates the contact   # optional; sets its event sends' keys apart
        trigger: 'type = "track" and event = "Signed Up"'
        contact: {email: "$.properties.email", properties: "$.properties"}
                                              # or event: {...}: the keys of that section,
                                              # each defaulting as there
    values: {nested_objects: flatten, arrays: join, long_strings: truncate, separator: null}
                                              # separator null: flattened names in camelCase
                                              # (address.city -> addressCity); "_": address_city

A source is a path, `{literal: <JSON value>}`, or a list of them. A path is `$`
followed by `.name` or `["any key"]` / `['any key']` segments, e.g.
`$.traits["Invited User?"]`. An `eventName` may also be a template: text with
`{name}` or `{properties.title}` placeholders (paths without the `$.`), which
counts as absent when a placeholder has no value. `userId` is not mappable:
it is always the event's userId.

Sections and rules are routes (transforms/mapping/routes.py): a call gets a
request from every route that takes it, in order: `contact` takes identify
calls, `event` track calls, `page`, `screen` and `group` theirs when given,
then each rule the calls its trigger matches (FQL, as Segment's destination
triggers are written: `type`, `event`, `name`, `userId`, `properties.`,
`traits.`, `context.` paths, comparisons, `contains()`, `match()`, `exists`,
`and`, `or`, `!`).
"""
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND, MAILING_LISTS
from transforms.core.text import preview
from transforms.mapping.build import EVENT_BODY_FIELDS
from transforms.mapping.fql import FqlError
from transforms.mapping.mapper import (CONTACT_SOURCE_KEYS, ContactMapping, EventMapping, Literal,
                                       Path, Source, compile_path, compile_template, map_contact,
                                       map_event_send)
from transforms.mapping.routes import fql_route, parse_trigger, section_route
from transforms.mapping.values import (ARRAY_RULES, LONG_STRING_RULES, LOOPS_CONTACT_FIELDS,
                                       NESTED_OBJECT_RULES, READ_ONLY_FIELDS, RESERVED_NAMES,
                                       ValueRules)

__all__ = ['DEFAULT_MAPPING', 'Mapping', 'MappingError', 'Path', 'compile_path',
           'compile_template', 'default_mapping', 'load_mapping', 'mapping_from_dict']

_EVENT_DEFAULTS = {
    'eventName': '$.event',
    'email': ['$.properties.email', '$.context.traits.email'],
    'eventProperties': '$.properties',
    'contactProperties': {},
    MAILING_LISTS: None,
    'colon_replacement': None,
}
_CONTACT_DEFAULTS = {
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
}
DEFAULT_MAPPING = {
    'contact': dict(_CONTACT_DEFAULTS),
    'event': dict(_EVENT_DEFAULTS),
    'page': None,
    'screen': None,
    'group': None,
    'rules': [],
    'values': {'nested_objects': 'flatten', 'arrays': 'join',
               'long_strings': 'truncate', 'separator': None},
}
# What a page/screen/group section takes when it is turned on: eventName is required.
_CALL_EVENT_DEFAULTS = {
    'page': {**_EVENT_DEFAULTS, 'eventName': None},
    'screen': {**_EVENT_DEFAULTS, 'eventName': None},
    'group': {**_EVENT_DEFAULTS, 'eventName': None, 'eventProperties': '$.traits'},
}
# The keys of a rule, besides its action (`contact` or `event`).
_RULE_KEYS = ('name', 'trigger', 'contact', 'event')
_ACTIONS = {'contact': (CONTACT_UPSERT, map_contact), 'event': (EVENT_SEND, map_event_send)}


class MappingError(ValueError):
    """A mapping file or dict that cannot be used; the message says what is
    wrong and where (e.g. "contact.email[1]: ..."), for a person to fix."""


@dataclass(frozen=True)
class Mapping:
    """A validated, compiled mapping of our language (picklable: Beam ships
    it to workers). Build it with default_mapping(), load_mapping() or
    mapping_from_dict().

    `contact` says how an identify call becomes a contact upsert; `events`
    maps each call type sent as an event to its EventMapping; `rules` are the
    routes of the document's `rules:`; `values` the value rules they all
    share. `routes` (derived) is what the per-event path runs: the sections'
    routes (identify -> contact, track -> event, page, screen, group when
    given), then the rules, in order (transforms/mapping/routes.py).
    """
    contact: ContactMapping
    events: dict
    rules: tuple
    values: ValueRules
    routes: tuple = field(init=False)
    # Nothing a document of ours says is left unused.
    skipped = ()

    def __post_init__(self):
        sections = (section_route('contact', 'identify', CONTACT_UPSERT, map_contact,
                                  self.contact),)
        sections += tuple(section_route('event' if call_type == 'track' else call_type,
                                        call_type, EVENT_SEND, map_event_send, spec)
                          for call_type, spec in self.events.items())
        object.__setattr__(self, 'routes', sections + self.rules)


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
                           f'screen, group, rules and values, not {_type_name(d)}')
    _check_keys(d, DEFAULT_MAPPING, '', 'section')
    values = _value_rules(_section(d, 'values'))
    events = {'track': _event_mapping(_section(d, 'event'), 'event', values)}
    for call_type in ('page', 'screen', 'group'):
        section = _section(d, call_type)
        if section is not None:
            events[call_type] = _event_mapping(section, call_type, values)
    return Mapping(contact=_contact_mapping(_section(d, 'contact'), 'contact', values),
                   events=events, rules=_rules(d.get('rules'), values), values=values)


def _section(d: dict, name: str) -> Optional[dict]:
    """The section `name` of a document merged over its defaults; None for a
    call-type section that is off."""
    defaults = DEFAULT_MAPPING[name]
    given = d.get(name)
    if defaults is None:  # page, screen, group: off unless given
        if given is None:
            return None
        defaults = _CALL_EVENT_DEFAULTS[name]
    return _merged(given, defaults, name)


def _merged(given: Any, defaults: dict, where: str) -> dict:
    """A section as given (an object, or null for an empty one: `contact:`
    in YAML), merged over its defaults."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise MappingError(f'{where}: expected an object, got {_type_name(given)}')
    if 'userId' in given and not where.endswith('values'):
        raise MappingError(f"{where}.userId: userId is not mappable: it is always "
                           "the event's userId")
    _check_keys(given, defaults, f'{where}.', 'key')
    return {**defaults, **given}


def _contact_mapping(section: dict, where: str, values: ValueRules) -> ContactMapping:
    return ContactMapping(
        contact_fields={key: _source(section[key], f'{where}.{key}')
                        for key in CONTACT_SOURCE_KEYS},
        contact_properties=_optional_path(section['properties'], f'{where}.properties'),
        rename=_renames(section['rename'], f'{where}.rename'),
        skip=frozenset(_names(section['skip'], f'{where}.skip')),
        dates=frozenset(_names(section['dates'], f'{where}.dates')),
        values=values,
    )


def _event_mapping(section: dict, where: str, values: ValueRules) -> EventMapping:
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
        values=values,
        mailing_lists=_source(section[MAILING_LISTS], f'{where}.{MAILING_LISTS}'),
    )


def _rules(given: Any, values: ValueRules) -> tuple:
    """The routes of a document's `rules:` list, in order."""
    if given is None:
        return ()
    if not isinstance(given, list):
        raise MappingError(f'rules: expected a list of rules, got {_type_name(given)}')
    routes, names = [], {}
    for index, rule in enumerate(given):
        where = f'rules[{index}]'
        if not isinstance(rule, dict):
            raise MappingError(f'{where}: expected an object with a trigger and an action '
                               f'(contact or event), got {_type_name(rule)}')
        _check_keys(rule, dict.fromkeys(_RULE_KEYS), f'{where}.', 'key')
        name = _rule_name(rule.get('name', where), where)
        if name in names:
            raise MappingError(f'{where}.name: {name!r} is the name of {names[name]} too '
                               '(a rule\'s name sets its event sends apart)')
        names[name] = where
        actions = [action for action in _ACTIONS if action in rule]
        if len(actions) != 1:
            raise MappingError(f'{where}: a rule has one action, contact or event, '
                               f'not {" and ".join(actions) or "none"}')
        action = actions[0]
        kind, resolve = _ACTIONS[action]
        here = f'{where}.{action}'
        if action == 'contact':
            spec = _contact_mapping(_merged(rule[action], _CONTACT_DEFAULTS, here), here, values)
        else:
            spec = _event_mapping(_merged(rule[action], _EVENT_DEFAULTS, here), here, values)
        trigger, condition = _trigger(rule.get('trigger'), f'{where}.trigger')
        label = where if name == where else f"{where} '{name}'"
        routes.append(fql_route(label, trigger, condition, kind, resolve, spec, name))
    return tuple(routes)


def _rule_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MappingError(f'{where}.name: expected text, got {preview(value)}')
    return value


def _trigger(value: Any, where: str) -> tuple:
    """(the FQL text, its condition) of a rule's trigger."""
    if not isinstance(value, str) or not value.strip():
        raise MappingError(f'{where}: required: an FQL condition such as '
                           'type = "track" and event = "Signed Up"')
    try:
        return value, parse_trigger(value)
    except FqlError as error:
        raise MappingError(f'{where}: {error}') from None


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


def _renames(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise MappingError(f'{where}: expected an object (source key: Loops key), '
                           f'got {_type_name(value)}')
    for source_key, loops_key in value.items():
        here = f'{where}.{source_key}'
        if not isinstance(source_key, str):
            raise MappingError(f'{here}: a source key must be text')
        if not isinstance(loops_key, str) or not loops_key:
            raise MappingError(f'{here}: expected a property name, got {preview(loops_key)}')
        if loops_key in LOOPS_CONTACT_FIELDS or loops_key in RESERVED_NAMES:
            raise MappingError(f'{here}: {loops_key!r} is a Loops field or reserved name, '
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
