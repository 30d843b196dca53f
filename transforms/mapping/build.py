"""From an action's resolved fields to the Loops request: written once, for every mapping.

A route (transforms/mapping/routes.py) resolves an action's fields from a call:
our mapping language by its sources (mapper.py), a Segment subscription by
Mapping Kit and Segment's own checks (segment_routes.py). What Loops and this
tool then require of the request is here, whichever mapping said it:

- identity: a userId (checked_user_id), or an email when there is none (a
  lead); a call with neither fails (`missing_identity`). An invalid email costs
  only itself when the call has a userId (a refused part: the rest is sent by
  the userId); a lead's fails the call;
- values: custom properties flattened, joined and cut by the mapping's
  ValueRules (values.py), names Loops cannot hold or keeps for itself left out
  (counted), dates as ISO-8601, `subscribed` and mailing-list flags read as a
  yes or a no, text fields as text;
- events: a name without a colon (checked_event_name), no null nor unsafe
  integer among its properties, contact properties that never overwrite the
  event's own fields nor name another contact, and a deterministic
  `Idempotency-Key` (idempotency_key).

What is changed is counted in the MappedRequest's adjustments (`map/<name>`
in the summary); what cannot be sent raises Rejected (the call fails for this
route) or is a refused part (a failure record; the rest is sent).
"""
import hashlib
import json
import math
import re
from typing import Any, NamedTuple, Optional

from transforms.core.kinds import MAILING_LISTS
from transforms.core.records import (LoopsRequest, contact_key, contact_upsert, event_send,
                                     idempotency_key_for)
from transforms.core.text import preview
from transforms.mapping.conform import Refused
from transforms.mapping.values import (DROPPED, LOOPS_CONTACT_FIELDS, MAX_STRING_LENGTH,
                                       READ_ONLY_FIELDS, RESERVED_NAMES, Adjustments, ValueRules,
                                       is_loops_scalar, is_too_long, is_unsafe_integer,
                                       loops_length, to_loops_properties, to_loops_value)
from transforms.segment.parse import ParsedEvent, Rejected
from transforms.segment.timestamps import parse_timestamp, to_iso8601

# Loops types these default fields as text.
TEXT_FIELDS = ('firstName', 'lastName', 'userGroup', 'source')
_TEXT_FIELD_NAMES = frozenset(TEXT_FIELDS)
# Loops' own contact fields other than the identity: a contact upsert's fields,
# and what an event's contact properties may set as a contact upsert does.
CONTACT_FIELDS = frozenset(TEXT_FIELDS) | {'subscribed', 'createdAt', MAILING_LISTS}
# Keys of an event request that its contact properties never set.
EVENT_BODY_FIELDS = frozenset({'eventName', 'email', 'userId', 'eventProperties',
                               MAILING_LISTS})
_IDENTITY_FIELDS = frozenset({'email', 'userId'})
# Keys an object of contact properties sent with an event cannot set, and the
# adjustment counting each: the event's own fields, and fields Loops sets
# itself. (Its email or userId is counted only when it names someone else
# than the event does: _other_identity.)
_LEFT_OUT = {'eventName': 'dropped_event_field', 'eventProperties': 'dropped_event_field',
             **{name: 'dropped_read_only' for name in READ_ONLY_FIELDS}}
_NOT_SPREAD = CONTACT_FIELDS | _IDENTITY_FIELDS | _LEFT_OUT.keys()
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


class Spread(NamedTuple):
    """How an object's keys become a contact's custom properties: `rename`
    (source key -> Loops key), `consumed` (keys read by an explicit field, or
    never sent), `unsendable` (names that are never custom properties: Loops'
    own and reserved ones, and the fields a mapping sets explicitly), `dates`
    (Loops keys whose values become ISO-8601 text)."""
    rename: dict
    consumed: frozenset
    unsendable: frozenset
    dates: frozenset


def contact_request(event: ParsedEvent, user_id: Optional[str], email: Any, fields: dict,
                    custom: Optional[dict], spread: Spread, rules: ValueRules) -> MappedRequest:
    """A contact upsert (PUT /v1/contacts/update) from the fields a route
    resolved from the call: `user_id` checked (checked_user_id), `email` as
    given, `fields` Loops' own fields (CONTACT_FIELDS) -> the values given,
    `custom` the object whose keys become custom properties as `spread`
    says. By userId, or by email when there is none. Raises Rejected:
    invalid_email (a lead's), missing_identity, value_too_long
    (values.long_strings 'fail')."""
    adjustments = Adjustments()
    email, refused = _checked_email(email, user_id)
    body = _custom_properties(custom, spread, rules, adjustments)
    if user_id is not None:
        body['userId'] = user_id
    if email is not None:
        body['email'] = email
    elif user_id is None:
        raise no_identity(event)
    _add_contact_fields(body, fields, rules, adjustments)
    request = contact_upsert(body, contact_key(user_id, email), event.stamp,
                             event.message_id or event.source)
    return MappedRequest(request, dict(adjustments), refused)


def event_request(event: ParsedEvent, name: str, user_id: Optional[str], email: Any,
                  event_properties: Any, contact_properties: Any, spread_contact: bool,
                  mailing_lists: Any, rules: ValueRules, key_id: str = '') -> MappedRequest:
    """An event send (POST /v1/events/send) from the fields a route resolved
    from the call: `name` and `user_id` checked (checked_event_name,
    checked_user_id), `email` as given; `contact_properties` Loops key ->
    value given, or, with `spread_contact`, an object spread flat like a
    contact's traits (what an event cannot set left out, counted);
    `mailing_lists` the contact's lists in any form a contact's take, or
    None. By userId, or by email when there is none, with an Idempotency-Key
    (see idempotency_key for `key_id`). Null event properties are left out;
    integers Loops would round are sent as text (see to_loops_properties).
    Raises Rejected: invalid_email (a lead's), missing_identity,
    value_too_long."""
    adjustments = Adjustments()
    given_email = email
    email, refused = _checked_email(email, user_id)
    if user_id is None and email is None:
        raise no_identity(event)
    body = {'eventName': name}
    if user_id is not None:
        body['userId'] = user_id
    if email is not None:
        body['email'] = email
    if contact_properties:
        _add_event_contact_properties(body, contact_properties, spread_contact,
                                      (given_email, user_id), rules, adjustments)
    if mailing_lists is not None:
        lists = _mailing_lists(mailing_lists, adjustments)
        if lists:
            body[MAILING_LISTS] = {**body.get(MAILING_LISTS, {}), **lists}
    if isinstance(event_properties, dict):
        properties = _valid_names(
            to_loops_properties(event_properties, rules, adjustments, event_properties=True),
            adjustments)
        if properties:
            body['eventProperties'] = properties
    request = event_send(body, contact_key(user_id, email), event.stamp,
                         event.message_id or event.source, idempotency_key(event, key_id))
    return MappedRequest(request, dict(adjustments), refused)


def checked_user_id(event: ParsedEvent, user_id: Optional[str], required: bool) -> Optional[str]:
    """The userId a request names its contact by, or None. Raises Rejected:
    missing_user_id (`required`: --identity user_id), value_too_long."""
    if not user_id:
        if required:
            raise Rejected('missing_user_id', f'{event.type} has no userId '
                           '(--identity user_id sends only events with one)')
        return None
    if is_too_long(user_id):
        # Cutting a userId could merge two people into one contact.
        raise Rejected('value_too_long', f'the userId is {loops_length(user_id)} '
                       f'characters long; Loops accepts at most {MAX_STRING_LENGTH}')
    return user_id


def checked_event_name(event: ParsedEvent, name: Any, colon_replacement: Optional[str],
                       source: str) -> str:
    """An event's name as Loops accepts it: its colons replaced by
    `colon_replacement` (None: a colon fails). `source` says where the name
    was looked for. Raises Rejected: missing_event_name, colon_in_event_name,
    value_too_long."""
    if not isinstance(name, str) or not name.strip():
        raise Rejected('missing_event_name', f'{event.type} has no event name at {source}')
    if ':' in name:
        if colon_replacement is None:
            raise Rejected('colon_in_event_name',
                           f'the event name {preview(name)} holds a colon, which Loops does '
                           'not accept in event names (or set colon_replacement in the mapping)')
        name = name.replace(':', colon_replacement)
    if is_too_long(name):
        raise Rejected('value_too_long', f'the event name is {loops_length(name)} '
                       f'characters long; Loops accepts at most {MAX_STRING_LENGTH}')
    return name


def no_identity(event: ParsedEvent) -> Rejected:
    return Rejected('missing_identity', f'{event.type} has neither a userId nor an email '
                    '(Loops finds contacts by one of them)')


def idempotency_key(event: ParsedEvent, key_id: str = '') -> str:
    """The Idempotency-Key of an event send of this call: from its messageId,
    or its content when it has none (a redelivery of the same payload gets the
    same key). `key_id` sets apart the event sends of one call after its first
    (another route's): '' for the first."""
    if event.message_id:
        basis = event.message_id
    else:
        canonical = json.dumps(event.data, sort_keys=True, ensure_ascii=False, default=str)
        digest = hashlib.sha256(canonical.encode('utf-8', 'surrogatepass')).hexdigest()
        basis = f'content-sha256:{digest}'
    return idempotency_key_for(f'{basis}#{key_id}' if key_id else basis)


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


# --- Identity ---

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


# --- Loops' own contact fields ---

def _add_contact_fields(body: dict, fields: dict, rules: ValueRules,
                        adjustments: Adjustments) -> None:
    """Loops' own contact fields other than the identity, from their values
    given (None: no value; any other key of `fields` is not one of them)."""
    for name, value in fields.items():
        if value is None:
            continue
        if name in _TEXT_FIELD_NAMES:
            text = _text_value(name, value, rules, adjustments)
            if text is not DROPPED:
                body[name] = text
        elif name in _CONVERTED_FIELDS:
            convert, dropped = _CONVERTED_FIELDS[name]
            converted = convert(value)
            if converted is None:
                adjustments[dropped] += 1
            else:
                body[name] = converted
        elif name == MAILING_LISTS:
            mailing_lists = _mailing_lists(value, adjustments)
            if mailing_lists:
                body[MAILING_LISTS] = mailing_lists


def _iso_date(value: Any) -> Optional[str]:
    ms = parse_timestamp(value)
    return None if ms is None else to_iso8601(ms)


# Contact fields whose value is converted (None: unusable, counted as the adjustment named).
_CONVERTED_FIELDS = {'subscribed': (yes_or_no, 'dropped_subscribed'),
                     'createdAt': (_iso_date, 'dropped_date')}


def _text_value(name: str, value: Any, rules: ValueRules, adjustments: Adjustments) -> Any:
    """A value for a text field of Loops: numbers and booleans as their JSON text."""
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        value = json.dumps(value)
    return to_loops_value(name, value, rules, adjustments)


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


# --- Custom properties ---

def _custom_properties(custom: Optional[dict], spread: Spread, rules: ValueRules,
                       adjustments: Adjustments) -> dict:
    if custom is None:
        return {}
    properties = _spread(custom, spread.rename, spread.consumed, spread.unsendable, rules,
                         adjustments)
    if not spread.dates.isdisjoint(properties):
        for name in spread.dates & properties.keys():
            if properties[name] is None:
                continue
            iso = _iso_date(properties[name])
            if iso is None:
                adjustments['dropped_date'] += 1
                del properties[name]
            else:
                properties[name] = iso
    return properties


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
            elif name in READ_ONLY_FIELDS:
                adjustments['dropped_read_only'] += 1
            continue
        selected[name] = value
    return selected


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
    """True when the names are surely valid: printable (Python's printable
    leaves out control characters and every space but ' '), 500 UTF-16
    units in all, none empty, and none blank (only ' '). Most events' names
    are, and checking them together costs less than one of them alone; any
    other names are checked one by one."""
    try:
        joined = ''.join(names)
    except TypeError:   # a name that is not text
        return False
    if len(joined) > MAX_STRING_LENGTH or not joined.isprintable() or '' in names:
        return False
    if not joined.isascii() and loops_length(joined) > MAX_STRING_LENGTH:
        return False
    return ' ' not in joined or all(name.strip(' ') for name in names)


# --- Contact properties sent with an event ---

def _add_event_contact_properties(body: dict, given: Any, spread: bool, identity: tuple,
                                  rules: ValueRules, adjustments: Adjustments) -> None:
    """Contact properties sent with an event, added to its `body`: per key,
    or (`spread`) one object spread flat. Loops' own contact fields among
    them are sent as a contact upsert sends them. From an object, what cannot
    be sent is counted: an email or userId other than the event's own
    (`identity`: the email as given, and the userId), the event's own fields,
    fields Loops sets itself, reserved names."""
    fields = {}
    if spread:
        if not isinstance(given, dict):
            return
        if not _NOT_SPREAD.isdisjoint(given):
            given = _set_apart(given, identity, fields, adjustments)
        body.update(_spread(given, {}, frozenset(), _NOT_EVENT_CONTACT_PROPERTIES, rules,
                            adjustments))
    else:
        for name, value in given.items():
            if name in CONTACT_FIELDS:
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
        if key in CONTACT_FIELDS:
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
