"""Segment calls -> Loops requests, as a `Mapping` (transforms/mapping/language.py) says.

The defaults reproduce Segment's "Loops (Actions)" destination: identify ->
`PUT /v1/contacts/update`, track -> `POST /v1/events/send`. Where that
destination is weak, this module does better: nested objects, arrays and long
strings become valid Loops values (see transforms/mapping/values.py), dates become
ISO-8601, trait keys read by an explicit field are not sent twice, the array
form of `mailingLists` is understood, every event carries a deterministic
`Idempotency-Key`, a contact or event without a userId is still sent by
its email (Loops accepts either), and an invalid email of a call with a
userId costs only itself (a refused part: the rest is sent by the userId).
Loops' own contact fields sent with an event (firstName, subscribed, ...)
are converted as a contact's are, and nothing an event's contact properties
hold is left out without being counted.
"""
import hashlib
import json
import math
import re
from typing import Any, NamedTuple, Optional

from transforms.core.kinds import MAILING_LISTS
from transforms.core.records import (LoopsRequest, contact_key, contact_upsert, event_send,
                                     idempotency_key_for)
from transforms.core.text import compact_json, preview
from transforms.mapping.conform import Refused
from transforms.mapping.language import (LOOPS_CONTACT_FIELDS, READ_ONLY_FIELDS, RESERVED_NAMES,
                                         EventMapping, Literal, Mapping, Path, Source, Template)
from transforms.mapping.values import (DROPPED, MAX_STRING_LENGTH, Adjustments, ValueRules,
                                       is_loops_scalar, is_too_long, is_unsafe_integer,
                                       loops_length, to_loops_properties, to_loops_value)
from transforms.segment.parse import ParsedEvent, Rejected
from transforms.segment.timestamps import parse_timestamp, to_iso8601

# Loops types these default fields as text.
TEXT_FIELDS = ('firstName', 'lastName', 'userGroup', 'source')

# Loops' own contact fields an event sets as a contact upsert does (_add_contact_fields).
_EVENT_CONTACT_FIELDS = frozenset(TEXT_FIELDS) | {'subscribed', 'createdAt', MAILING_LISTS}
_IDENTITY_FIELDS = frozenset({'email', 'userId'})
# Keys an object of contact properties sent with an event cannot set, and the
# adjustment counting each: the event's own fields, and fields Loops sets
# itself. (Its email or userId is counted only when it names someone else
# than the event does: _other_identity.)
_LEFT_OUT = {'eventName': 'dropped_event_field', 'eventProperties': 'dropped_event_field',
             **{name: 'dropped_read_only' for name in READ_ONLY_FIELDS}}
_NOT_SPREAD = _EVENT_CONTACT_FIELDS | _IDENTITY_FIELDS | _LEFT_OUT.keys()
# Names a flattened event contact property may not take.
_NOT_EVENT_CONTACT_PROPERTIES = (LOOPS_CONTACT_FIELDS | RESERVED_NAMES
                                 | {'eventName', 'eventProperties'})

_EMAIL = re.compile(r'[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+')
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')
# Yes/no values as senders write them. Anything else is not a yes or a no.
_FLAGS = {True: True, False: False, 1: True, 0: False,
          'true': True, 'false': False, 'yes': True, 'no': False, '1': True, '0': False}


class MappedRequest(NamedTuple):
    """A Loops request, the value adjustments made to build it (name ->
    count), and the parts of the call left out of it, each to be a failure
    record of its own (stage conform: the rest is sent)."""
    request: LoopsRequest
    adjustments: dict
    refused: tuple = ()


def map_identify(event: ParsedEvent, mapping: Mapping,
                 require_user_id: bool = False) -> MappedRequest:
    """An identify call -> a contact upsert (PUT /v1/contacts/update), by
    userId, or by email when it has none (unless `require_user_id`).

    An invalid email is a refused part when the call has a userId.
    Raises Rejected: missing_user_id, missing_identity, invalid_email (a
    lead's), value_too_long.
    """
    adjustments = Adjustments()
    user_id = _user_id(event, require_user_id)
    traits = _properties_object(event.data, mapping)
    fields = _field_values(event.data, traits, mapping)
    email, refused = _checked_email(fields.get('email'), user_id)
    body = _custom_properties(traits, mapping, adjustments)
    if user_id is not None:
        body['userId'] = user_id
    if email is not None:
        body['email'] = email
    elif user_id is None:
        raise _no_identity(event)
    _add_contact_fields(body, fields, mapping.values, adjustments)
    request = contact_upsert(body, contact_key(user_id, email), event.stamp,
                             event.message_id or event.source)
    return MappedRequest(request, dict(adjustments), refused)


def map_event_send(event: ParsedEvent, mapping: Mapping,
                   require_user_id: bool = False) -> MappedRequest:
    """A track call (or a page, screen or group call the mapping sends as an
    event) -> an event send (POST /v1/events/send) with an Idempotency-Key,
    by userId, or by email when it has none (unless `require_user_id`).

    An invalid email is a refused part when the call has a userId. Null
    event properties are left out; integers Loops would round are sent as
    text (see to_loops_properties). Raises Rejected: missing_event_name,
    colon_in_event_name, missing_user_id, missing_identity, invalid_email (a
    lead's), value_too_long, unsupported_type.
    """
    spec = mapping.events.get(event.type)
    if spec is None:
        raise Rejected('unsupported_type', f'{event.type!r} calls are not mapped to events '
                       '(see the page, screen and group sections of the mapping)')
    data = event.data
    rules = mapping.values
    adjustments = Adjustments()
    event_name = _event_name(event, spec)
    user_id = _user_id(event, require_user_id)
    given_email = _first_value(spec.email, data, skip_blank=True)
    email, refused = _checked_email(given_email, user_id)
    if user_id is None and email is None:
        raise _no_identity(event)
    body = {'eventName': event_name}
    if user_id is not None:
        body['userId'] = user_id
    if email is not None:
        body['email'] = email
    if spec.contact_properties:
        _add_event_contact_properties(body, spec, data, (given_email, user_id), rules,
                                      adjustments)
    if spec.event_properties is not None:
        properties = _resolve(spec.event_properties.keys, data)
        if isinstance(properties, dict):
            event_properties = _valid_names(
                to_loops_properties(properties, rules, adjustments, event_properties=True),
                adjustments)
            if event_properties:
                body['eventProperties'] = event_properties
    request = event_send(body, contact_key(user_id, email), event.stamp,
                         event.message_id or event.source, _idempotency_key(event))
    return MappedRequest(request, dict(adjustments), refused)


def map_event(event: ParsedEvent, mapping: Mapping,
              require_user_id: bool = False) -> MappedRequest:
    """Maps an identify call to an upsert, and the calls the mapping sends as
    events to event sends; any other type raises Rejected('unsupported_type')."""
    if event.type == 'identify':
        return map_identify(event, mapping, require_user_id)
    return map_event_send(event, mapping, require_user_id)


def yes_or_no(value: Any) -> Optional[bool]:
    """True/False from the ways senders write a yes or a no: JSON booleans,
    1/0, and "true"/"false", "yes"/"no", "1"/"0" in any case; None for
    anything else."""
    if isinstance(value, str):
        value = value.strip().lower()
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return _FLAGS.get(value)
    except TypeError:  # unhashable: an object or a list
        return None


def is_valid_property_name(name: Any) -> bool:
    """Whether Loops can hold a property of this name: text of 1 to 500
    characters, not blank, without control characters."""
    return (isinstance(name, str) and name.strip() != '' and not is_too_long(name)
            and _CONTROL.search(name) is None)


def is_valid_loops_body(body: Any) -> bool:
    """True when every key (at most 500 characters) and value of a request
    body is one Loops accepts: a scalar (strings of at most 500 characters,
    finite numbers), except `mailingLists` (list id -> boolean) and
    `eventProperties` (key -> scalar, neither null nor an integer Loops
    would round)."""
    if not isinstance(body, dict):
        return False
    for key, value in body.items():
        if not is_valid_property_name(key):
            return False
        if key == MAILING_LISTS:
            valid = isinstance(value, dict) and all(
                isinstance(k, str) and k and isinstance(v, bool) for k, v in value.items())
        elif key == 'eventProperties':
            valid = isinstance(value, dict) and all(
                is_valid_property_name(k) and is_loops_scalar(v) and v is not None
                and not is_unsafe_integer(v) for k, v in value.items())
        elif key == 'eventName':
            valid = isinstance(value, str) and ':' not in value and is_loops_scalar(value)
        else:
            valid = is_loops_scalar(value)
        if not valid:
            return False
    return True


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


def _properties_object(data: dict, mapping: Mapping) -> Optional[dict]:
    """The object whose keys become custom properties (the traits), if any."""
    if mapping.contact_properties is None:
        return None
    source = _resolve(mapping.contact_properties.keys, data)
    return source if isinstance(source, dict) else None


def _field_values(data: dict, traits: Optional[dict], mapping: Mapping) -> dict:
    """Contact field -> its value, for the explicit fields that have one (an
    email source skips blank text); see FieldLookup for the fields passed over."""
    lookup = mapping.field_lookup
    if traits is None or lookup.trait_keys.isdisjoint(traits):
        fields = lookup.other_fields
    else:
        fields = [(name, source) for name, source in mapping.contact_fields.items()
                  if name not in lookup.trait_fields
                  or not lookup.trait_fields[name].isdisjoint(traits)]
    values = {}
    for name, source in fields:
        value = _first_value(source, data, skip_blank=name == 'email')
        if value is not None:
            values[name] = value
    return values


def _add_contact_fields(body: dict, fields: dict, rules: ValueRules,
                        adjustments: Adjustments) -> None:
    """Loops' own contact fields other than the identity, from the values
    of `_field_values`."""
    for name in TEXT_FIELDS:
        value = fields.get(name)
        if value is not None:
            text = _text_value(name, value, rules, adjustments)
            if text is not DROPPED:
                body[name] = text
    for name, convert, dropped in _CONVERTED_FIELDS:
        value = fields.get(name)
        if value is not None:
            converted = convert(value)
            if converted is None:
                adjustments[dropped] += 1
            else:
                body[name] = converted
    lists = fields.get(MAILING_LISTS)
    if lists is not None:
        mailing_lists = _mailing_lists(lists, adjustments)
        if mailing_lists:
            body[MAILING_LISTS] = mailing_lists


# Contact fields whose value is converted (None: unusable, counted as the adjustment named).
_CONVERTED_FIELDS = (('subscribed', lambda value: yes_or_no(value), 'dropped_subscribed'),
                     ('createdAt', lambda value: _iso_date(value), 'dropped_date'))


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


def _event_name(event: ParsedEvent, spec: EventMapping) -> str:
    name = _first_value(spec.event_name, event.data)
    if not isinstance(name, str) or not name.strip():
        raise Rejected('missing_event_name',
                       f'{event.type} has no event name at {_describe(spec.event_name)}')
    if ':' in name:
        if spec.colon_replacement is None:
            raise Rejected('colon_in_event_name',
                           f'the event name {preview(name)} holds a colon, which Loops does '
                           'not accept in event names (or set colon_replacement in the mapping)')
        name = name.replace(':', spec.colon_replacement)
    if is_too_long(name):
        raise Rejected('value_too_long', f'the event name is {loops_length(name)} '
                       f'characters long; Loops accepts at most {MAX_STRING_LENGTH}')
    return name


def _user_id(event: ParsedEvent, required: bool) -> Optional[str]:
    if not event.user_id:
        if required:
            raise Rejected('missing_user_id', f'{event.type} has no userId '
                           '(--identity user_id sends only events with one)')
        return None
    if is_too_long(event.user_id):
        # Cutting a userId could merge two people into one contact.
        raise Rejected('value_too_long', f'the userId is {loops_length(event.user_id)} '
                       f'characters long; Loops accepts at most {MAX_STRING_LENGTH}')
    return event.user_id


def _no_identity(event: ParsedEvent) -> Rejected:
    return Rejected('missing_identity', f'{event.type} has neither a userId nor an email '
                    '(Loops finds contacts by one of them)')


def _checked_email(value: Any, user_id: Optional[str]) -> tuple:
    """(the valid email or None, the refused parts): an invalid email is
    refused alone when the call has a userId to be sent by; a lead's raises
    Rejected('invalid_email')."""
    try:
        return _valid_email(value), ()
    except Rejected as rejected:
        if user_id is None:
            raise
        return None, (Refused(rejected.reason,
                              f'{rejected.message}; the rest of the event was sent'),)


def _valid_email(value: Any) -> Optional[str]:
    """The stripped email, None when absent (an email source skips blank text:
    forms send "" for an unknown email). Raises Rejected('invalid_email')."""
    if value is None:
        return None
    email = value.strip() if isinstance(value, str) else value
    if not isinstance(email, str) or not _EMAIL.fullmatch(email) or is_too_long(email):
        raise Rejected('invalid_email', f'{preview(value)} is not a valid email address')
    return email


def _text_value(name: str, value: Any, rules: ValueRules, adjustments: Adjustments) -> Any:
    """A value for a text field of Loops: numbers and booleans as their JSON text."""
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        value = json.dumps(value)
    return to_loops_value(name, value, rules, adjustments)


def _valid_names(properties: dict, adjustments: Adjustments) -> dict:
    """`properties` without the names Loops cannot hold (counted)."""
    if _all_plain_names(properties):
        return properties
    invalid = [name for name in properties if not is_valid_property_name(name)]
    for name in invalid:
        del properties[name]
    if invalid:
        adjustments['dropped_invalid_name'] += len(invalid)
    return properties


def _all_plain_names(names: dict) -> bool:
    """True when the names are surely valid: printable ASCII without spaces
    (so none is blank), 500 characters in all. Most events' names are, and
    checking them together costs less than one of them alone; any other
    names are checked one by one."""
    try:
        joined = ''.join(names)
    except TypeError:   # a name that is not text
        return False
    return (len(joined) <= MAX_STRING_LENGTH and joined.isascii() and joined.isprintable()
            and ' ' not in joined and '' not in names)


def _spread(source: dict, rename: dict, consumed: frozenset, unsendable: frozenset,
            rules: ValueRules, adjustments: Adjustments) -> dict:
    """An object's keys as flat Loops properties: renamed, without the keys
    read elsewhere and the names Loops keeps, values made Loops scalars."""
    if rename or not consumed.isdisjoint(source) or not unsendable.isdisjoint(source):
        source = _selected(source, rename, consumed, unsendable, adjustments)
    properties = to_loops_properties(source, rules, adjustments)
    # Flattening can build a name Loops keeps (user.id -> userId, list.id -> listId).
    if not unsendable.isdisjoint(properties):
        for name in properties.keys() & unsendable:
            adjustments['dropped_reserved' if name in RESERVED_NAMES
                        else 'dropped_flattened_collision'] += 1
            del properties[name]
    return _valid_names(properties, adjustments)


def _selected(source: dict, rename: dict, consumed: frozenset, unsendable: frozenset,
              adjustments: Adjustments) -> dict:
    """`source` renamed, without the keys read elsewhere and the names Loops keeps."""
    selected = {}
    for key, value in source.items():
        if key in consumed:
            continue
        name = rename.get(key, key)
        if name in unsendable:
            if name in RESERVED_NAMES:
                adjustments['dropped_reserved'] += 1
            continue
        selected[name] = value
    return selected


def _custom_properties(traits: Optional[dict], mapping: Mapping,
                       adjustments: Adjustments) -> dict:
    if traits is None:
        return {}
    properties = _spread(traits, mapping.rename, mapping.consumed_keys,
                         mapping.unsendable_names, mapping.values, adjustments)
    if not mapping.dates.isdisjoint(properties):
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


def _add_event_contact_properties(body: dict, spec: EventMapping, data: dict, identity: tuple,
                                  rules: ValueRules, adjustments: Adjustments) -> None:
    """Contact properties sent with an event, added to its `body`: per key,
    or one object spread flat. Loops' own contact fields among them are sent
    as a contact upsert sends them. From an object, what cannot be sent is
    counted: an email or userId other than the event's own (`identity`,
    the email as given and the userId), the event's own fields, fields Loops
    sets itself, reserved names."""
    fields = {}
    if type(spec.contact_properties) is Path:
        source = _resolve(spec.contact_properties.keys, data)
        if not isinstance(source, dict):
            return
        if not _NOT_SPREAD.isdisjoint(source):
            source = _set_apart(source, identity, fields, adjustments)
        body.update(_spread(source, {}, frozenset(), _NOT_EVENT_CONTACT_PROPERTIES, rules,
                            adjustments))
    else:
        for name, source in spec.contact_properties.items():
            value = _first_value(source, data)
            if value is None:
                continue
            if name in _EVENT_CONTACT_FIELDS:
                fields[name] = value
                continue
            converted = to_loops_value(name, value, rules, adjustments)
            if converted is not DROPPED:
                body[name] = converted
    if fields:
        _add_contact_fields(body, fields, rules, adjustments)


def _set_apart(source: dict, identity: tuple, fields: dict, adjustments: Adjustments) -> dict:
    """`source` without the keys that are not custom properties: Loops' own
    contact fields go to `fields`, the rest is counted as left out."""
    rest = {}
    for key, value in source.items():
        if key in _EVENT_CONTACT_FIELDS:
            fields[key] = value
        elif key in _IDENTITY_FIELDS:
            if _other_identity(key, value, identity):
                adjustments['dropped_other_identity'] += 1
        elif key in _LEFT_OUT:
            adjustments[_LEFT_OUT[key]] += 1
        else:
            rest[key] = value
    return rest


def _other_identity(key: str, value: Any, identity: tuple) -> bool:
    """Whether an email or userId among an event's contact properties names
    someone else than the event does (an event names its contact by its own
    userId and email only; the same one, or none, loses nothing)."""
    if value is None:
        return False
    given_email, user_id = identity
    if isinstance(value, str):
        value = value.strip()
    elif type(value) is int:
        value = str(value)
    if key == 'userId':
        return value != user_id
    own = given_email.strip() if isinstance(given_email, str) else given_email
    return not (isinstance(value, str) and isinstance(own, str)
                and value.lower() == own.lower())


def _iso_date(value: Any) -> Optional[str]:
    ms = parse_timestamp(value)
    return None if ms is None else to_iso8601(ms)


def _mailing_lists(value: Any, adjustments: Adjustments) -> dict:
    """{id: bool} from the object form {id: bool|"true"|"false"...} or the
    array form [{"listId": id, "subscribed": ...}]; unusable entries are counted."""
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
        subscribed = yes_or_no(flag)
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
    return ', '.join(c.text if type(c) in (Path, Template) else repr(c.value)
                     for c in source) or 'nothing'
