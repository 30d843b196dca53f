"""What Loops accepts in a request body, as /work/shared/reference/loops-api.md
describes it: contact properties, event fields, mailing lists, idempotency keys.

Each check raises `ApiError` with the status and message Loops would answer.
Messages name the offending key in double quotes where there is one
(`Invalid value for "plan": ...`, `Invalid property name "".`), so that a
client can drop that key and retry.
"""
import json
import math
import re
from typing import Any, Optional

MAX_STRING = 500
MAX_IDEMPOTENCY_KEY = 100

RESERVED_NAMES = frozenset({'id', 'listId', 'softDeleteAt', 'teamId', 'updatedAt'})
DEFAULT_PROPERTIES = (
    {'key': 'email', 'label': 'Email', 'type': 'string'},
    {'key': 'firstName', 'label': 'First Name', 'type': 'string'},
    {'key': 'lastName', 'label': 'Last Name', 'type': 'string'},
    {'key': 'source', 'label': 'Source', 'type': 'string'},
    {'key': 'subscribed', 'label': 'Subscribed', 'type': 'boolean'},
    {'key': 'userGroup', 'label': 'User Group', 'type': 'string'},
    {'key': 'userId', 'label': 'User ID', 'type': 'string'},
)
PROPERTY_TYPES = ('string', 'number', 'boolean', 'date')
EVENT_ONLY_KEYS = frozenset({'eventName', 'eventProperties'})

EMAIL_PATTERN = re.compile(r'^[^@\s]+@[^@\s]+\.[^@\s]+$')
PROPERTY_NAME_PATTERN = re.compile(r'^[a-z][A-Za-z0-9]*$')
TOO_LONG = 'Some body key or value is longer than allowable'
NOT_AN_OBJECT = 'The request body must be a JSON object.'
EVENT_NAME_COLON = 'Event names cannot contain colons (:).'


class ApiError(Exception):
    """A Loops error answer: HTTP `status` with `{"success": false, "message"}`."""

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

    A key that is present must hold a usable value (ApiError 400).
    """
    email = body.get('email')
    if 'email' in body and not (isinstance(email, str) and EMAIL_PATTERN.match(email)):
        raise ApiError(400, 'Invalid email address.')
    user_id = body.get('userId')
    if 'userId' in body and not (isinstance(user_id, str) and user_id):
        raise ApiError(400, 'Invalid value for "userId": must be a non-empty string.')
    return email, user_id


def check_key(key: str, kind: str = 'property') -> None:
    """ApiError 400 for a body key Loops cannot take: over 500 characters, or
    empty once trimmed (`kind` names it in the message: 'event property')."""
    if len(key) > MAX_STRING:
        raise ApiError(400, TOO_LONG)
    if not key.strip():
        raise ApiError(400, f'Invalid {kind} name "{key}".')


def check_scalar(name: str, value: Any) -> None:
    """ApiError 400 unless `value` is a string (<= 500 chars), number, boolean or null."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f'Invalid value for "{name}": numbers must be finite.')
    if not isinstance(value, (str, int, float, bool, type(None))):
        raise ApiError(400, f'Invalid value for "{name}": nested objects and '
                            'arrays are not valid property values.')
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise ApiError(400, TOO_LONG)


def check_mailing_lists(value: Any, list_ids: frozenset) -> None:
    """ApiError 400 unless `value` maps known mailing-list ids to booleans."""
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise ApiError(400, 'Invalid value for "mailingLists": must be an object of '
                            'mailing list id -> true/false.')
    unknown = sorted(set(value) - list_ids)
    if unknown:
        raise ApiError(400, f'Unknown mailing list id: {unknown[0]}.')


def check_contact_body(body: dict, list_ids: frozenset,
                       skip: frozenset = frozenset()) -> None:
    """ApiError 400 unless every top-level key of `body` (but `skip`) is a valid
    contact property: named, not reserved, not too long, a scalar or valid
    mailingLists."""
    for key, value in body.items():
        check_key(key)
        if key in skip:
            continue
        if key in RESERVED_NAMES:
            raise ApiError(400, reserved_name_message(key))
        if key == 'mailingLists':
            check_mailing_lists(value, list_ids)
        elif key == 'subscribed' and not isinstance(value, bool):
            raise ApiError(400, 'Invalid value for "subscribed": must be true or false.')
        else:
            check_scalar(key, value)


def reserved_name_message(name: str) -> str:
    """The 400 message for a reserved name used as a contact property."""
    return f'"{name}" is a reserved name and cannot be a contact property.'


def check_event_name(value: Any) -> str:
    """`value` if it can name a custom event (a string without colons); ApiError 400."""
    if not (isinstance(value, str) and value):
        raise ApiError(400, 'eventName is required.')
    check_scalar('eventName', value)
    if ':' in value:
        raise ApiError(400, EVENT_NAME_COLON)
    return value


def check_event_properties(value: Any) -> None:
    """ApiError 400 unless `value` is an object of scalar values under named keys."""
    if not isinstance(value, dict):
        raise ApiError(400, 'Invalid value for "eventProperties": must be an object.')
    for key, item in value.items():
        check_key(key, 'event property')
        check_scalar(f'eventProperties.{key}', item)


def check_idempotency_key(key: Optional[str]) -> None:
    """ApiError 400 when an Idempotency-Key header is over 100 characters."""
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f'Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters.')


def apply_to_contact(contact: dict, properties: dict) -> None:
    """Merges validated `properties` into `contact` (mailingLists merged per list)."""
    for key, value in properties.items():
        if key == 'mailingLists':
            contact['mailingLists'].update(value)
        else:
            contact[key] = value


def property_label(name: str) -> str:
    """'planTier' -> 'Plan Tier', the label Loops shows for a property."""
    return re.sub(r'(?<!^)(?=[A-Z])', ' ', name).title()
