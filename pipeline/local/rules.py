"""What Loops accepts in a request body: contact properties, event fields,
mailing lists, idempotency keys. Sources: /work/shared/reference/loops-api.md
(REF), Loops' OpenAPI spec 1.21.6 (OAS: loops-openapi.yaml, mirrored by
api-evangelist/loops; line numbers), the JS SDK npm `loops` 7.3.0 (JS7) and
the docs pages named. A rule no source backs is marked "unconfirmed:
assumed stricter", the stricter server being the safer one to test a client
against (REF).

Each check raises `ApiError` with the status and message Loops would answer.
Messages name the offending key in double quotes where there is one
(`Invalid value for "plan": ...`, `Invalid property name "".`), so that a
client can drop that key and retry.
"""
import json
import math
import re
from datetime import datetime
from typing import Any, Optional

MAX_STRING = 500
MAX_IDEMPOTENCY_KEY = 100

# "Loops does not allow properties with the following reserved names"
# (https://loops.so/docs/add-users/properties; REF: unconfirmed list).
RESERVED_NAMES = frozenset({'id', 'listId', 'softDeleteAt', 'teamId', 'updatedAt'})
# GET /v1/contacts/properties?list=all lists these first, in this order, with
# these labels (JS7 README "listContactProperties" example;
# https://loops.so/docs/api-reference/list-contact-properties).
DEFAULT_PROPERTIES = (
    {'key': 'firstName', 'label': 'First Name', 'type': 'string'},
    {'key': 'lastName', 'label': 'Last Name', 'type': 'string'},
    {'key': 'email', 'label': 'Email', 'type': 'string'},
    {'key': 'notes', 'label': 'Notes', 'type': 'string'},
    {'key': 'source', 'label': 'Source', 'type': 'string'},
    {'key': 'userGroup', 'label': 'User Group', 'type': 'string'},
    {'key': 'userId', 'label': 'User Id', 'type': 'string'},
    {'key': 'subscribed', 'label': 'Subscribed', 'type': 'boolean'},
    {'key': 'createdAt', 'label': 'Created At', 'type': 'date'},
)
# Fields a request cannot set: "Notes" has no API name
# (https://loops.so/docs/contacts/properties; REF: "cannot be set through the
# API"); optInStatus is set by forms with double opt-in only (OAS 4216-4227).
# Refused by name (unconfirmed: assumed stricter; what Loops does with them
# is undocumented, and ignoring them would hide a client's loss).
NOT_SETTABLE = frozenset({'notes', 'optInStatus'})
PROPERTY_TYPES = ('string', 'number', 'boolean', 'date')
EVENT_ONLY_KEYS = frozenset({'eventName', 'eventProperties'})

EMAIL_PATTERN = re.compile(r'^[^@\s]+@[^@\s]+\.[^@\s]+$')
PROPERTY_NAME_PATTERN = re.compile(r'^[a-z][A-Za-z0-9]*$')
TOO_LONG = 'Some body key or value is longer than allowable'
NOT_AN_OBJECT = 'The request body must be a JSON object.'
EVENT_NAME_COLON = 'Event names cannot contain colons (:).'


class ApiError(Exception):
    """A Loops error answer: HTTP `status` and Loops' words, `message`, which
    error_shapes.py puts in a body of the shape the sandbox is set to."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json_object(raw: bytes) -> dict:
    """A request body -> the JSON object it holds; ApiError 400 otherwise.

    NaN and Infinity are refused, as a strict JSON parser would.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:
        raise ApiError(400, NOT_AN_OBJECT) from None
    if not isinstance(value, dict):
        raise ApiError(400, NOT_AN_OBJECT)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f'{name} is not JSON')


def identity_of(body: dict) -> tuple[Optional[str], Optional[str]]:
    """A contact or event body -> its (email, userId), None for a missing key.

    A key that is present must hold a usable value (ApiError 400): 400 "Bad
    request (e.g. invalid email address)" (OAS 685-702); the email check
    is a plain pattern, the userId's a non-empty text (unconfirmed).
    """
    email = body.get('email')
    if 'email' in body and not (isinstance(email, str) and EMAIL_PATTERN.match(email)):
        raise ApiError(400, 'Invalid email address.')
    user_id = body.get('userId')
    if 'userId' in body and not (isinstance(user_id, str) and user_id):
        raise ApiError(400, 'Invalid value for "userId": must be a non-empty string.')
    return email, user_id


def check_key(key: str, kind: str = 'property') -> None:
    """ApiError 400 for a body key Loops cannot take: over 500 characters
    (REF's "Some body key or value is longer than allowable"), or empty once
    trimmed (unconfirmed: assumed stricter) (`kind` names it in the message:
    'event property')."""
    if len(key) > MAX_STRING:
        raise ApiError(400, TOO_LONG)
    if not key.strip():
        raise ApiError(400, f'Invalid {kind} name "{key}".')


def check_scalar(name: str, value: Any) -> None:
    """ApiError 400 unless `value` is a string (<= 500 chars), number, boolean
    or null: "`string`, `number`, `null` (to reset a value), `boolean` or
    `date`" (JS7 README "createContact"; OAS `ContactFields`
    additionalProperties); the 500-character limit is REF's."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f'Invalid value for "{name}": numbers must be finite.')
    if not isinstance(value, (str, int, float, bool, type(None))):
        raise ApiError(400, f'Invalid value for "{name}": nested objects and '
                            'arrays are not valid property values.')
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise ApiError(400, TOO_LONG)


def check_mailing_lists(value: Any, list_ids: frozenset) -> None:
    """ApiError 400 unless `value` maps known mailing-list ids to booleans
    ("An object of mailing list IDs and boolean subscription statuses", OAS
    `ContactFields`). An unknown id is refused (unconfirmed: assumed stricter)."""
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise ApiError(400, 'Invalid value for "mailingLists": must be an object of '
                            'mailing list id -> true/false.')
    unknown = sorted(set(value) - list_ids)
    if unknown:
        raise ApiError(400, f'Unknown mailing list id: {unknown[0]}.')


def check_contact_body(body: dict, list_ids: frozenset, types: Optional[dict] = None,
                       skip: frozenset = frozenset()) -> None:
    """ApiError 400 unless every top-level key of `body` (but `skip`) is a valid
    contact property: named, not reserved, settable, not too long, a scalar of
    its property's type in `types` (key -> string, number, boolean or date;
    None: no types known), or valid mailingLists.

    A key that is no property of the account is stored as sent: Loops asks
    that properties be created first (OAS 671-675) but does not document
    what it does otherwise, and the client's `unknown_properties` policy is
    what decides whether such keys are sent.
    """
    for key, value in body.items():
        check_key(key)
        if key in skip:
            continue
        if key in RESERVED_NAMES:
            raise ApiError(400, reserved_name_message(key))
        if key in NOT_SETTABLE:
            raise ApiError(400, f'"{key}" cannot be set through the API.')
        if key == 'mailingLists':
            check_mailing_lists(value, list_ids)
        elif key == 'subscribed' and not isinstance(value, bool):
            raise ApiError(400, 'Invalid value for "subscribed": must be true or false.')
        else:
            check_scalar(key, value)
            check_type(key, value, (types or {}).get(key))


def check_type(key: str, value: Any, kind: Optional[str]) -> None:
    """ApiError 400 naming `key` when a non-null `value` is not of its
    property's type `kind` (null resets any property, OAS `ContactFields`).
    Dates are Unix milliseconds or an ECMA-262 date-time string
    (https://loops.so/docs/contacts/properties). Unconfirmed: assumed
    stricter (Loops documents the types, not what it does with a wrong one)."""
    if value is None or kind is None:
        return
    fits = {'string': isinstance(value, str),
            'number': isinstance(value, (int, float)) and not isinstance(value, bool),
            'boolean': isinstance(value, bool),
            'date': is_date(value)}.get(kind, True)
    if not fits:
        raise ApiError(400, f'Invalid value for "{key}": must be a {kind}.')


def is_date(value: Any) -> bool:
    """Unix milliseconds (a number) or an ISO-8601 date-time text."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def reserved_name_message(name: str) -> str:
    """The 400 message for a reserved name used as a contact property."""
    return f'"{name}" is a reserved name and cannot be a contact property.'


def check_event_name(value: Any) -> str:
    """`value` if it can name a custom event; ApiError 400. `eventName` is
    required (OAS `EventRequest` 4535-4583); "Custom event names can not
    contain colon characters (:)" (https://loops.so/docs/events), refused
    (unconfirmed: assumed stricter, the API's answer is not documented)."""
    if not (isinstance(value, str) and value):
        raise ApiError(400, 'eventName is required.')
    check_scalar('eventName', value)
    if ':' in value:
        raise ApiError(400, EVENT_NAME_COLON)
    return value


def check_event_properties(value: Any, refuse_null: bool = False) -> dict:
    """`value` with its names trimmed, unless ApiError 400: it must be an
    object of scalar values under named keys. Event property names are
    trimmed ("Empty spaces are trimmed from the beginning and end of property
    names", https://loops.so/docs/events/properties). Values are "`string`,
    `number`, `boolean` or `date`" (OAS 1529-1537; JS7 `EventProperties` has
    no null, dist/index.d.ts:124); what Loops does with a null is
    undocumented: `refuse_null` refuses it by name (the stricter reading)."""
    if not isinstance(value, dict):
        raise ApiError(400, 'Invalid value for "eventProperties": must be an object.')
    trimmed = {}
    for key, item in value.items():
        check_key(key, 'event property')
        name = f'eventProperties.{key}'
        if item is None and refuse_null:
            raise ApiError(400, f'Invalid value for "{name}": must be a string, number, '
                                'boolean or date.')
        check_scalar(name, item)
        trimmed[key.strip()] = item
    return trimmed


def check_idempotency_key(key: Optional[str]) -> None:
    """ApiError 400 when an Idempotency-Key header is over 100 characters
    (`maxLength: 100`, OAS 1544-1561; the answer to a longer one is
    undocumented: unconfirmed, assumed stricter)."""
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f'Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters.')


def apply_to_contact(contact: dict, properties: dict) -> None:
    """Merges validated `properties` into `contact`. A contact's mailingLists
    holds only the lists it is on, each `true` ("key-value pairs of mailing
    list IDs and `true`", OAS 4210-4215; JS7 `Record<string, true>`): `false`
    takes a list off."""
    for key, value in properties.items():
        if key != 'mailingLists':
            contact[key] = value
            continue
        for list_id, subscribed in value.items():
            if subscribed:
                contact['mailingLists'][list_id] = True
            else:
                contact['mailingLists'].pop(list_id, None)


def property_label(name: str) -> str:
    """'planTier' -> 'Plan Tier', the label Loops shows for a property."""
    return re.sub(r'(?<!^)(?=[A-Z])', ' ', name).title()
