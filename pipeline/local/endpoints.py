"""Loops' REST endpoints over a `LoopsAccount`: one function per endpoint,
taking the account and an `ApiCall` and returning the 200 JSON payload or
raising ApiError; `route` picks the endpoint of a method and path."""
import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pipeline.local.account import LoopsAccount
from pipeline.local.rules import (DEFAULT_PROPERTIES, EVENT_ONLY_KEYS, MAX_STRING,
                                  PROPERTY_NAME_PATTERN, PROPERTY_TYPES, RESERVED_NAMES, TOO_LONG,
                                  ApiError, apply_to_contact, check_contact_body, check_event_name,
                                  check_event_properties, check_idempotency_key, identity_of,
                                  parse_json_object, property_label, reserved_name_message)
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND

# For events, email and userId only find (or create) the contact.
EVENT_NON_PROPERTY_KEYS = EVENT_ONLY_KEYS | {'email', 'userId', 'mailingLists'}


@dataclass(frozen=True)
class ApiCall:
    """What an endpoint needs from one HTTP request (never the Authorization header)."""
    query: dict
    body: bytes
    idempotency_key: Optional[str]


def single_query_value(query: dict, name: str) -> Optional[str]:
    """The one value of query parameter `name`, None when absent; 400 when repeated."""
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise ApiError(400, f'Give {name} only once.')
    return values[0]


def check_api_key(account: LoopsAccount, call: ApiCall) -> dict:
    """GET /v1/api-key: the team name of a valid key."""
    return {'success': True, 'teamName': account.team_name}


def get_lists(account: LoopsAccount, call: ApiCall) -> list:
    """GET /v1/lists: [{id, name, description, isPublic}]."""
    return copy.deepcopy(account.mailing_lists)


def get_properties(account: LoopsAccount, call: ApiCall) -> list:
    """GET /v1/contacts/properties?list=custom|all: [{key, label, type}]."""
    which = single_query_value(call.query, 'list') or 'all'
    if which not in ('all', 'custom'):
        raise ApiError(400, 'list must be "custom" or "all".')
    defaults = list(DEFAULT_PROPERTIES) if which == 'all' else []
    return copy.deepcopy(defaults + account.custom_properties)


def create_property(account: LoopsAccount, call: ApiCall) -> dict:
    """POST /v1/contacts/properties {name, type}: adds a custom property."""
    body = parse_json_object(call.body)
    name, kind = body.get('name'), body.get('type')
    if not (isinstance(name, str) and PROPERTY_NAME_PATTERN.match(name)):
        raise ApiError(400, 'name must be a camelCase string.')
    if len(name) > MAX_STRING:
        raise ApiError(400, TOO_LONG)
    if name in RESERVED_NAMES:
        raise ApiError(400, reserved_name_message(name))
    existing = {item['key'] for item in DEFAULT_PROPERTIES + tuple(account.custom_properties)}
    if name in existing:
        raise ApiError(400, f'A property named "{name}" already exists.')
    if kind not in PROPERTY_TYPES:
        raise ApiError(400, f'type must be one of {", ".join(PROPERTY_TYPES)}.')
    account.custom_properties.append({'key': name, 'label': property_label(name), 'type': kind})
    return {'success': True}


def create_contact(account: LoopsAccount, call: ApiCall) -> dict:
    """POST /v1/contacts/create: a new contact; 409 when its email or userId is taken."""
    contact = account.create_contact(parse_json_object(call.body))
    return {'success': True, 'id': contact['id']}


def update_contact(account: LoopsAccount, call: ApiCall) -> dict:
    """PUT /v1/contacts/update: the upsert (match by either id, merge, create).
    `subscribed: true` re-subscribes a contact who unsubscribed."""
    body = parse_json_object(call.body)
    email, user_id = identity_of(body)
    if email is None and user_id is None:
        raise ApiError(400, 'Provide an email or a userId.')
    check_contact_body(body, account.list_ids)
    contact = account.upsert_match(email, user_id)
    if contact is None:
        if email is None:
            raise ApiError(400, 'userId not found and cannot create a new '
                                'contact without an email.')
        contact = account.new_contact()
    apply_to_contact(contact, body)
    return {'success': True, 'id': contact['id']}


def find_contacts(account: LoopsAccount, call: ApiCall) -> list:
    """GET /v1/contacts/find?email=|userId=: [contact] or []."""
    email = single_query_value(call.query, 'email')
    user_id = single_query_value(call.query, 'userId')
    if (email is None) == (user_id is None):
        raise ApiError(400, 'Provide exactly one of email or userId.')
    contact = account.by_email(email) if email is not None else account.by_user_id(user_id)
    return [copy.deepcopy(contact)] if contact else []


def delete_contact(account: LoopsAccount, call: ApiCall) -> dict:
    """POST /v1/contacts/delete {email | userId}: removes the contact; 404 when none."""
    body = parse_json_object(call.body)
    if ('email' in body) == ('userId' in body):
        raise ApiError(400, 'Provide exactly one of email or userId.')
    email, user_id = identity_of(body)
    contact = account.by_email(email) if email is not None else account.by_user_id(user_id)
    if contact is None:
        raise ApiError(404, 'Contact not found.')
    account.contacts.remove(contact)
    return {'success': True, 'message': 'Contact deleted.'}


def send_event(account: LoopsAccount, call: ApiCall) -> dict:
    """POST /v1/events/send: records the event on the contact either id finds.

    An Idempotency-Key is spent by every request that gets here, refused or
    not (the stricter reading of loops-api.md), and answered 409 within 24 h.
    """
    key = call.idempotency_key
    check_idempotency_key(key)
    now = time.time()
    if account.key_in_use(key, now):
        raise ApiError(409, 'Idempotency key has already been used')
    try:
        return _record_event(account, call, now)
    finally:
        account.spend_key(key, now)


def _record_event(account: LoopsAccount, call: ApiCall, now: float) -> dict:
    body = parse_json_object(call.body)
    event_name = check_event_name(body.get('eventName'))
    email, user_id = identity_of(body)
    if email is None and user_id is None:
        raise ApiError(400, 'Provide an email or a userId.')
    check_contact_body(body, account.list_ids, skip=EVENT_ONLY_KEYS)
    event_properties = body.get('eventProperties', {})
    check_event_properties(event_properties)
    # Either id finds the contact; the userId (the customer's stable id)
    # wins when they point at different contacts.
    contact = ((user_id is not None and account.by_user_id(user_id))
               or (email is not None and account.by_email(email)) or None)
    if contact is None:
        if email is None:
            raise ApiError(400, 'Contact not found.')
        contact = account.new_contact()
        apply_to_contact(contact, {'email': email, 'userId': user_id})
    properties = {k: v for k, v in body.items() if k not in EVENT_NON_PROPERTY_KEYS}
    properties['mailingLists'] = body.get('mailingLists', {})
    apply_to_contact(contact, properties)
    account.events.append({
        'eventName': event_name, 'email': email, 'userId': user_id,
        'eventProperties': copy.deepcopy(event_properties),
        'idempotency_key': call.idempotency_key,
        'contact_id': contact['id'], 'received_at': now,
    })
    return {'success': True}


Endpoint = Callable[[LoopsAccount, ApiCall], Any]

# (path under /api) -> {method: endpoint}
ROUTES: dict[str, dict[str, Endpoint]] = {
    '/v1/api-key': {'GET': check_api_key},
    '/v1/contacts/create': {'POST': create_contact},
    CONTACT_UPSERT.path: {CONTACT_UPSERT.method: update_contact},
    '/v1/contacts/find': {'GET': find_contacts},
    '/v1/contacts/delete': {'POST': delete_contact},
    '/v1/contacts/properties': {'GET': get_properties, 'POST': create_property},
    '/v1/lists': {'GET': get_lists},
    EVENT_SEND.path: {EVENT_SEND.method: send_event},
}


def route(account: LoopsAccount, method: str, path: str,
          call: ApiCall) -> tuple[int, Any]:
    """One API request -> (HTTP status, JSON payload), changing `account` on success."""
    endpoints = ROUTES.get(path)
    if endpoints is None:
        return 404, {'success': False, 'message': 'Not found'}
    endpoint = endpoints.get(method)
    if endpoint is None:
        return 405, {'success': False, 'message': 'Method not allowed'}
    try:
        return 200, endpoint(account, call)
    except ApiError as error:
        return error.status, {'success': False, 'message': error.message}

