"""Loops' audience import by CSV (a dashboard feature, not the API), as
/work/shared/reference/loops-api.md describes it.

The header row names the columns: the default ones by label (`Email`,
`First Name`, `Last Name`, `User Group`, `Source`, `User ID`, `Subscribed`),
custom properties by API name. Each row finds its contact by User ID, then by
Email, and updates it, or creates one (which needs an Email). Cells are
trimmed; an empty cell leaves the value as it is and `null` clears it. Values
of number and boolean properties are stored typed, all others as text. An
import can unsubscribe (`Subscribed` false) but never re-subscribes. A row
that cannot be imported changes nothing and is reported with its row number,
the header being row 1.
"""
import copy
import csv
import io
import math
import re
from typing import TYPE_CHECKING, Any, Optional

from pipeline.local.rules import (EMAIL_PATTERN, MAX_STRING, PROPERTY_NAME_PATTERN,
                                  RESERVED_NAMES, TOO_LONG, ApiError, reserved_name_message)

if TYPE_CHECKING:
    from pipeline.local.account import LoopsAccount

# The import's column names of the default properties (REF; its "User ID" is
# not the API's label "User Id").
COLUMN_KEYS = {'Email': 'email', 'First Name': 'firstName', 'Last Name': 'lastName',
               'User Group': 'userGroup', 'Source': 'source', 'User ID': 'userId',
               'Subscribed': 'subscribed'}
COLUMN_LABELS = {key: label for label, key in COLUMN_KEYS.items()}
CLEAR = 'null'
DEFAULT_SOURCE = 'CSV Upload'
_BOOLEANS = {'true': True, 'false': False}
_INTEGER = re.compile(r'[+-]?[0-9]+')


def import_csv(account: 'LoopsAccount', text: str) -> dict:
    """Imports the CSV `text` into `account`: {'created': n, 'updated': n,
    'errors': [{'row': number, 'message': text}]}. ApiError 400 for a header
    that cannot be used (then nothing is imported)."""
    rows = csv.reader(io.StringIO(text.removeprefix('\ufeff')))
    keys = column_keys(next(rows, []))
    types = account.property_types()
    result: dict[str, Any] = {'created': 0, 'updated': 0, 'errors': []}
    for number, cells in enumerate(rows, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        try:
            outcome = _import_row(account, keys, cells, types)
        except ApiError as error:
            result['errors'].append({'row': number, 'message': error.message})
        else:
            result[outcome] += 1
    return result


def column_keys(header: list[str]) -> list[str]:
    """The header's cells -> the property key of each column; ApiError 400 for
    an empty header, a column twice, or a name that cannot be a property."""
    keys = []
    for cell in header:
        name = cell.strip()
        key = COLUMN_KEYS.get(name, name)
        if name in RESERVED_NAMES:
            raise ApiError(400, reserved_name_message(name))
        if name not in COLUMN_KEYS and (name in COLUMN_LABELS or name == 'mailingLists'
                                        or not PROPERTY_NAME_PATTERN.match(name)
                                        or len(name) > MAX_STRING):
            raise ApiError(400, f'Invalid column name "{name}".')
        if key in keys:
            raise ApiError(400, f'Duplicate column "{name}".')
        keys.append(key)
    if 'email' not in keys and 'userId' not in keys:
        raise ApiError(400, 'The CSV file needs an "Email" or a "User ID" column.')
    return keys


def _import_row(account: 'LoopsAccount', keys: list[str], cells: list[str],
                types: dict[str, str]) -> str:
    """Imports one row: 'created' or 'updated'; ApiError (and no change) when it can't."""
    if len(cells) != len(keys):
        raise ApiError(400, f'Expected {len(keys)} cells, found {len(cells)}.')
    given = {key: cell.strip() for key, cell in zip(keys, cells) if cell.strip()}
    email, user_id = given.pop('email', None), given.pop('userId', None)
    contact = _match(account, email, user_id)
    values = {key: _typed(key, text, types.get(key)) for key, text in given.items()}
    subscribed = values.pop('subscribed', None)
    if contact is None:
        if email is None:
            raise ApiError(400, 'An email is required to create a contact.')
        before = None
        contact = account.new_contact()
        contact['source'] = DEFAULT_SOURCE
        outcome = 'created'
    else:
        before = copy.deepcopy(contact)
        outcome = 'updated'
    contact.update({'email': email or contact['email'], 'userId': user_id or contact['userId']})
    contact.update(values)
    if subscribed is False:
        contact['subscribed'] = False
    account.workflows.imported(before, contact)
    return outcome


def _match(account: 'LoopsAccount', email: Optional[str],
           user_id: Optional[str]) -> Optional[dict]:
    """The contact a row updates (by User ID, then Email), None for a new one;
    ApiError when the row's ids are unusable or belong to different people."""
    for label, value in (('Email', email), ('User ID', user_id)):
        if value == CLEAR:
            raise ApiError(400, f'Invalid value for "{label}": it cannot be cleared.')
    if email is not None and not EMAIL_PATTERN.match(email):
        raise ApiError(400, 'Invalid email address.')
    contact = account.by_user_id(user_id) if user_id is not None else None
    if contact is not None:
        if email is not None and (contact['email'] or '').lower() != email.lower():
            raise ApiError(400, f'The contact with User ID "{user_id}" has another email.')
        return contact
    contact = account.by_email(email) if email is not None else None
    if contact is not None and user_id is not None and contact['userId'] is not None:
        raise ApiError(400, f'The contact with Email "{email}" has another User ID.')
    return contact


def _typed(key: str, text: str, kind: Optional[str]) -> Any:
    """A cell's text -> the value stored for property `key` of type `kind`."""
    column = COLUMN_LABELS.get(key, key)
    if key == 'subscribed':
        return _boolean(column, text)
    if text == CLEAR:
        return None
    if len(text) > MAX_STRING:
        raise ApiError(400, TOO_LONG)
    if kind == 'number':
        return _number(column, text)
    if kind == 'boolean':
        return _boolean(column, text)
    return text


def _boolean(column: str, text: str) -> bool:
    value = _BOOLEANS.get(text.lower())
    if value is None:
        raise ApiError(400, f'Invalid value for "{column}": must be true or false.')
    return value


def _number(column: str, text: str) -> float | int:
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(400, f'Invalid value for "{column}": must be a number.')
    return value
