"""Our mapping language's sources, compiled, and how a call resolves them.

A route of our language (transforms/mapping/language.py) says where each field
of its action comes from: a `ContactMapping` for a contact upsert, an
`EventMapping` for an event send, each field a Source (paths, literals and,
for event names, templates). `map_contact` and `map_event_send` resolve those
fields from one call and hand them to the step every mapping shares
(build.py), which makes the request by Loops' rules and ours.

The defaults reproduce Segment's "Loops (Actions)" destination: identify ->
`PUT /v1/contacts/update`, track -> `POST /v1/events/send`. Trait keys read
by an explicit field are not sent twice as custom properties.
"""
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union

from transforms.core.kinds import MAILING_LISTS
from transforms.core.text import compact_json
from transforms.mapping.build import (MappedRequest, Spread, checked_event_name, checked_user_id,
                                      contact_request, event_request)
from transforms.mapping.values import LOOPS_CONTACT_FIELDS, RESERVED_NAMES, ValueRules
from transforms.segment.parse import ParsedEvent

_PATH_SEGMENT = re.compile(r'''\.([^.\[\]'"\s]+)'''
                           r'''|\[\s*"((?:[^"\\]|\\.)*)"\s*\]'''
                           r"""|\[\s*'((?:[^'\\]|\\.)*)'\s*\]""")
_ESCAPE = re.compile(r'\\(.)')
_PLACEHOLDER = re.compile(r'\{([^{}]*)\}')


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
# The contact fields a ContactMapping maps, in the order a document lists them.
CONTACT_SOURCE_KEYS = ('email', 'firstName', 'lastName', 'userGroup', 'source',
                       'subscribed', 'createdAt', MAILING_LISTS)


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


class FieldLookup(NamedTuple):
    """The explicit contact fields as a mapper looks them up. Most events set
    a few traits where the mapping reads many: a field read only from keys of
    the properties object (the traits) that an event lacks has no value, and
    needs no look-up of its paths one by one."""
    trait_fields: dict     # field -> its traits keys, for fields read only from traits
    trait_keys: frozenset  # all of those keys
    other_fields: tuple    # (field, Source) of the fields read from elsewhere too


@dataclass(frozen=True)
class ContactMapping:
    """How a call becomes a contact upsert (picklable: Beam ships it).

    `contact_fields` maps each of Loops' own contact fields to its Source;
    `contact_properties` is the path of the object whose keys become custom
    properties (renamed, skipped, dates as ISO-8601 as the mapping says);
    `values` reshapes what Loops cannot hold. `consumed_keys`,
    `unsendable_names`, `spread` and `field_lookup` are derived once here so
    that mapping a call does no set-up work.
    """
    contact_fields: dict
    contact_properties: Optional[Path]
    rename: dict
    skip: frozenset
    dates: frozenset
    values: ValueRules
    consumed_keys: frozenset = field(init=False)
    unsendable_names: frozenset = field(init=False)
    spread: Spread = field(init=False)
    field_lookup: FieldLookup = field(init=False)

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
        consumed_keys = frozenset(consumed)
        unsendable = LOOPS_CONTACT_FIELDS | RESERVED_NAMES | mapped
        object.__setattr__(self, 'consumed_keys', consumed_keys)
        object.__setattr__(self, 'unsendable_names', unsendable)
        object.__setattr__(self, 'spread', Spread(self.rename, consumed_keys, unsendable,
                                                  self.dates))
        object.__setattr__(self, 'field_lookup', FieldLookup(
            trait_fields=trait_fields,
            trait_keys=frozenset().union(*trait_fields.values()),
            other_fields=tuple((name, source) for name, source in self.contact_fields.items()
                               if source and name not in trait_fields)))


@dataclass(frozen=True)
class EventMapping:
    """How a call becomes an event send (picklable). `contact_properties` is
    {Loops key: Source}, or a Path whose object is spread flat like a
    contact's traits; `mailing_lists` the Source of the contact's lists (Loops
    takes them with an event); `values` reshapes what Loops cannot hold."""
    event_name: Source
    email: Source
    event_properties: Optional[Path]
    contact_properties: Union[dict, Path]
    colon_replacement: Optional[str]
    values: ValueRules
    mailing_lists: Source = ()
    event_name_text: str = field(init=False, repr=False)

    def __post_init__(self):
        # Where the name was looked for, for the message of an event without one.
        object.__setattr__(self, 'event_name_text', _describe(self.event_name))


def map_contact(event: ParsedEvent, spec: ContactMapping, require_user_id: bool = False,
                key_id: str = '') -> MappedRequest:
    """A call -> a contact upsert, its fields where `spec` says (see
    contact_request). Raises Rejected: missing_user_id, missing_identity,
    invalid_email (a lead's), value_too_long. (`key_id` is an event send's.)"""
    user_id = checked_user_id(event, event.user_id, require_user_id)
    data = event.data
    traits = _properties_object(data, spec)
    fields = _field_values(data, traits, spec)
    return contact_request(event, user_id, fields.pop('email', None), fields, traits,
                           spec.spread, spec.values)


def map_event_send(event: ParsedEvent, spec: EventMapping, require_user_id: bool = False,
                   key_id: str = '') -> MappedRequest:
    """A call -> an event send, its fields where `spec` says (see
    event_request). Raises Rejected: missing_event_name, colon_in_event_name,
    missing_user_id, missing_identity, invalid_email (a lead's),
    value_too_long."""
    data = event.data
    name = checked_event_name(event, _first_value(spec.event_name, data), spec.colon_replacement,
                              spec.event_name_text)
    user_id = checked_user_id(event, event.user_id, require_user_id)
    contact_properties = spec.contact_properties
    spread_contact = type(contact_properties) is Path
    if spread_contact:
        contact_properties = _resolve(contact_properties.keys, data)
    elif contact_properties:
        contact_properties = _given_values(contact_properties, data)
    event_properties = (None if spec.event_properties is None
                        else _resolve(spec.event_properties.keys, data))
    mailing_lists = _first_value(spec.mailing_lists, data) if spec.mailing_lists else None
    return event_request(event, name, user_id, _first_value(spec.email, data, skip_blank=True),
                         event_properties, contact_properties, spread_contact, mailing_lists,
                         spec.values, key_id)


# --- Resolving sources ---

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
        kind = type(candidate)
        if kind is Path:
            # _resolve, written out: this is the look-up every field makes.
            value = data
            for key in candidate.keys:
                value = value.get(key) if type(value) is dict else None
                if value is None:
                    break
        elif kind is Literal:
            value = candidate.value
        else:
            value = _render(candidate, data)
        if value is None or (skip_blank and isinstance(value, str) and not value.strip()):
            continue
        return value
    return None


def _given_values(sources: dict, data: dict) -> dict:
    """Loops key -> the first value of its Source, for the keys that have one."""
    values = {}
    for name, source in sources.items():
        value = _first_value(source, data)
        if value is not None:
            values[name] = value
    return values


def _properties_object(data: dict, spec: ContactMapping) -> Optional[dict]:
    """The object whose keys become custom properties (the traits), if any."""
    if spec.contact_properties is None:
        return None
    source = _resolve(spec.contact_properties.keys, data)
    return source if isinstance(source, dict) else None


def _field_values(data: dict, traits: Optional[dict], spec: ContactMapping) -> dict:
    """Contact field -> its value, for the explicit fields that have one (an
    email source skips blank text); see FieldLookup for the fields passed over."""
    lookup = spec.field_lookup
    if traits is None or lookup.trait_keys.isdisjoint(traits):
        fields = lookup.other_fields
    else:
        fields = [(name, source) for name, source in spec.contact_fields.items()
                  if name not in lookup.trait_fields
                  or not lookup.trait_fields[name].isdisjoint(traits)]
    values = {}
    for name, source in fields:
        value = _first_value(source, data, skip_blank=name == 'email')
        if value is not None:
            values[name] = value
    return values


def _render(template: Template, data: dict) -> Optional[str]:
    """A template's text with its placeholders filled, or None when one has
    no scalar value."""
    pieces = []
    for index, part in enumerate(template.parts):
        if index % 2 == 0:
            pieces.append(part)
            continue
        value = _resolve(part.keys, data)
        if value is None or isinstance(value, (dict, list)):
            return None
        pieces.append(value if isinstance(value, str) else compact_json(value))
    return ''.join(pieces)


def _describe(source: Source) -> str:
    return ', '.join(c.text if type(c) in (Path, Template) else repr(c.value)
                     for c in source) or 'nothing'
