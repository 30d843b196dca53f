"""Loops' REST endpoints over a `LoopsAccount`: one function per endpoint,
taking the account and an `ApiCall` and returning the 200 JSON payload or
raising ApiError; `route` picks the endpoint of a method and path.

Each endpoint's docstring names where Loops documents what it imitates:
Loops' OpenAPI spec 1.21.6 (OAS: loops-openapi.yaml, mirrored by
api-evangelist/loops; line numbers), the JS SDK npm `loops` 7.3.0 (JS7:
README sections, dist/index.d.ts lines), the docs pages by URL, or
/work/shared/reference/loops-api.md (REF).
"""
import copy
import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlencode

from pipeline.local.account import LoopsAccount
from pipeline.local.rules import (DEFAULT_PROPERTIES, EMAIL_PATTERN, EVENT_ONLY_KEYS, MAX_STRING,
                                  PROPERTY_NAME_PATTERN, PROPERTY_TYPES, RESERVED_NAMES, TOO_LONG,
                                  ApiError, check_contact_body, check_event_name,
                                  check_event_properties, check_idempotency_key, identity_of,
                                  parse_json_object, property_label, reserved_name_message)
from pipeline.local.workflows import APP_WORKFLOW_URL
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND

DEFAULT_PER_PAGE, MIN_PER_PAGE, MAX_PER_PAGE = 20, 10, 50


@dataclass(frozen=True)
class ApiCall:
    """What an endpoint needs from one HTTP request (never the Authorization
    header): `base_url` is where the client reached the API
    ('http://127.0.0.1:8787/api'), `path_param` the URL-decoded parameter of
    a path such as /v1/workflows/{id}."""
    query: dict
    body: bytes
    idempotency_key: Optional[str]
    base_url: str = ''
    path_param: Optional[str] = None


def single_query_value(query: dict, name: str) -> Optional[str]:
    """The one value of query parameter `name`, None when absent; 400 when
    repeated (unconfirmed: assumed stricter)."""
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise ApiError(400, f'Give {name} only once.')
    return values[0]


def check_api_key(account: LoopsAccount, call: ApiCall) -> dict:
    """GET /v1/api-key: the team name of a valid key (OAS 55-81)."""
    return {'success': True, 'teamName': account.team_name}


def get_lists(account: LoopsAccount, call: ApiCall) -> list:
    """GET /v1/lists: [{id, name, description, isPublic}], description text
    or null (OAS `MailingList` 5096-5134; JS7 README "listMailingLists")."""
    return copy.deepcopy(account.mailing_lists)


def get_properties(account: LoopsAccount, call: ApiCall) -> list:
    """GET /v1/contacts/properties?list=custom|all: [{key, label, type}], the
    default properties first (OAS 1015-1032; JS7 README
    "listContactProperties"). Another `list` value is refused (unconfirmed:
    assumed stricter)."""
    which = single_query_value(call.query, 'list') or 'all'
    if which not in ('all', 'custom'):
        raise ApiError(400, 'list must be "custom" or "all".')
    defaults = list(DEFAULT_PROPERTIES) if which == 'all' else []
    return copy.deepcopy(defaults + account.custom_properties)


def create_property(account: LoopsAccount, call: ApiCall) -> dict:
    """POST /v1/contacts/properties {name, type}: adds a custom property.

    Both are required, `type` one of string, number, boolean, date; 400 for
    an invalid type, "Property already exists." for a name the account has,
    default properties included (OAS 4481-4534, 993-998), and for a reserved
    name (https://loops.so/docs/api-reference/create-contact-property). The
    name "should be in camelCase" (OAS 4492-4494): another is refused
    (unconfirmed: assumed stricter; a client that creates camelCase names
    works with either server).
    """
    body = parse_json_object(call.body)
    name, kind = body.get('name'), body.get('type')
    if not isinstance(name, str) or not name:
        raise ApiError(400, 'name is required.')
    if len(name) > MAX_STRING:
        raise ApiError(400, TOO_LONG)
    if name in RESERVED_NAMES:
        raise ApiError(400, reserved_name_message(name))
    if name in account.property_types():
        raise ApiError(400, 'Property already exists.')
    if not PROPERTY_NAME_PATTERN.match(name):
        raise ApiError(400, 'name must be in camelCase, like planName.')
    if kind not in PROPERTY_TYPES:
        raise ApiError(400, f'Invalid property type: must be one of {", ".join(PROPERTY_TYPES)}.')
    account.custom_properties.append({'key': name, 'label': property_label(name), 'type': kind})
    return {'success': True}


def create_contact(account: LoopsAccount, call: ApiCall) -> dict:
    """POST /v1/contacts/create: a new contact, `email` required; 409 when
    its email or userId is taken (OAS 660-702, `ContactFields` 4241-4294)."""
    contact = account.create_contact(parse_json_object(call.body))
    return {'success': True, 'id': contact['id']}


def update_contact(account: LoopsAccount, call: ApiCall) -> dict:
    """PUT /v1/contacts/update: the upsert (match by either id, merge, create;
    OAS 712-780). `subscribed: true` re-subscribes a contact who unsubscribed
    (REF). With a userId alone, the contact must exist (JS7 README
    "updateContact"; the message is REF's)."""
    body = parse_json_object(call.body)
    email, user_id = identity_of(body)
    if email is None and user_id is None:
        raise ApiError(400, 'Provide an email or a userId.')
    check_contact_body(body, account.list_ids, account.property_types())
    contact = account.upsert_match(email, user_id)
    if contact is not None:
        account.change_contact(contact, body)
    elif email is None:
        raise ApiError(400, 'userId not found and cannot create a new contact without an email.')
    else:
        contact = account.add_contact(body)
    return {'success': True, 'id': contact['id']}


def find_contacts(account: LoopsAccount, call: ApiCall) -> list:
    """GET /v1/contacts/find?email=|userId=: [contact] or []; exactly one
    parameter, 400 for an invalid email (OAS 789-823)."""
    email = single_query_value(call.query, 'email')
    user_id = single_query_value(call.query, 'userId')
    if (email is None) == (user_id is None):
        raise ApiError(400, 'Provide exactly one of email or userId.')
    if email is not None and not EMAIL_PATTERN.match(email):
        raise ApiError(400, 'Invalid email address.')
    contact = account.by_email(email) if email is not None else account.by_user_id(user_id)
    return [copy.deepcopy(contact)] if contact else []


def delete_contact(account: LoopsAccount, call: ApiCall) -> dict:
    """POST /v1/contacts/delete {email | userId}: removes the contact; 400
    for both or neither, 404 when none (OAS 843-866; JS7 README "deleteContact")."""
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
    not, and answered 409 within 24 h ("This endpoint will return a `409
    Conflict` response if the idempotency key has been used in the previous
    24 hours", OAS 1544-1561; whether a refused request spends its key is
    undocumented: REF's stricter reading).
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
    """The contact either id finds gets the other id and the body's contact
    properties; none found, one is created with both ids, but a userId alone
    must name a contact: 400 "Contact not found." (OAS 1520-1526, 4593-4609;
    https://loops.so/docs/api-reference/send-event). When the ids find two
    different contacts, the userId's takes the event and keeps its email
    (unconfirmed: Loops documents no such case; the email is another
    contact's, and an update would answer 409)."""
    body = parse_json_object(call.body)
    event_name = check_event_name(body.get('eventName'))
    email, user_id = identity_of(body)
    if email is None and user_id is None:
        raise ApiError(400, 'Provide an email or a userId.')
    check_contact_body(body, account.list_ids, account.property_types(), skip=EVENT_ONLY_KEYS)
    event_properties = check_event_properties(body.get('eventProperties', {}),
                                              account.refuse_null_event_properties)
    properties = {k: v for k, v in body.items() if k not in EVENT_ONLY_KEYS}
    by_user_id = account.by_user_id(user_id) if user_id is not None else None
    by_email = account.by_email(email) if email is not None else None
    if by_user_id is not None and by_email is not None and by_user_id is not by_email:
        del properties['email']
    contact = by_user_id or by_email
    if contact is not None:
        account.change_contact(contact, properties)
    elif email is None:
        raise ApiError(400, 'Contact not found.')
    else:
        contact = account.add_contact(properties)
    account.events.append({
        'eventName': event_name, 'email': email, 'userId': user_id,
        'eventProperties': copy.deepcopy(event_properties),
        'idempotency_key': call.idempotency_key,
        'contact_id': contact['id'], 'received_at': now,
    })
    account.workflows.learn_event(event_name, event_properties)
    account.workflows.event_received(contact, event_name)
    return {'success': True}


# ---- workflows and event patterns (workflows.py holds them)

def page_of(items: list, call: ApiCall, path: str) -> dict:
    """One page of `items` (each with an `id`) as the list endpoints answer:
    `perPage` "Must be between 10 and 50. Default is 20.", `cursor` from
    `pagination.nextCursor`, 400 for an invalid one (OAS 1596-1617; the
    `Pagination` schema 8848-8892; JS7 `PaginationData`). A cursor is the id
    of the next page's first item."""
    per_page_text = single_query_value(call.query, 'perPage') or str(DEFAULT_PER_PAGE)
    per_page = int(per_page_text) if per_page_text.isdigit() else 0
    if not MIN_PER_PAGE <= per_page <= MAX_PER_PAGE:
        raise ApiError(400, f'perPage must be between {MIN_PER_PAGE} and {MAX_PER_PAGE}.')
    cursor = single_query_value(call.query, 'cursor')
    ids = [item['id'] for item in items]
    if cursor is not None and cursor not in ids:
        raise ApiError(400, 'Invalid cursor.')
    start = ids.index(cursor) if cursor is not None else 0
    page, rest = items[start:start + per_page], items[start + per_page:]
    next_cursor = rest[0]['id'] if rest else None
    next_page = (f'{call.base_url}{path}?{urlencode({"cursor": next_cursor, "perPage": per_page})}'
                 if next_cursor else None)
    return {'pagination': {'totalResults': len(items), 'returnedResults': len(page),
                           'perPage': per_page, 'totalPages': math.ceil(len(items) / per_page),
                           'nextCursor': next_cursor, 'nextPage': next_page},
            'data': copy.deepcopy(page)}


def list_workflows(account: LoopsAccount, call: ApiCall) -> dict:
    """GET /v1/workflows: {pagination, data: [{id, url, name, createdAt,
    updatedAt}]}, "most recently updated first"
    (https://loops.so/docs/api-reference/examples/workflows; JS7
    `WorkflowSummary`, whose `url` OAS 6357-6391 lacks)."""
    newest_first = sorted(account.workflows.workflows, key=lambda w: w['updatedAt'],
                          reverse=True)
    summaries = [{'id': w['id'], 'url': APP_WORKFLOW_URL + w['id'], 'name': w['name'],
                  'createdAt': w['createdAt'], 'updatedAt': w['updatedAt']}
                 for w in newest_first]
    return page_of(summaries, call, '/v1/workflows')


def get_workflow(account: LoopsAccount, call: ApiCall) -> dict:
    """GET /v1/workflows/{id}: the SimplifiedWorkflow (JS7 dist/index.d.ts
    329-350; OAS 6457-6523); 404 "Workflow not found." (OAS 8250-8258)."""
    workflow = account.workflows.workflow(call.path_param)
    if workflow is None:
        raise ApiError(404, 'Workflow not found.')
    shown = {k: v for k, v in workflow.items() if k not in ('createdAt', 'updatedAt')}
    return copy.deepcopy({**shown, 'url': APP_WORKFLOW_URL + workflow['id']})


def list_event_patterns(account: LoopsAccount, call: ApiCall) -> dict:
    """GET /v1/event-patterns: {pagination, data: [{id, eventName,
    incomingWebhookPlatform}]} (OAS 1590-1627, 7443-7468)."""
    summaries = [{k: p[k] for k in ('id', 'eventName', 'incomingWebhookPlatform')}
                 for p in account.workflows.event_patterns]
    return page_of(summaries, call, '/v1/event-patterns')


def get_event_pattern(account: LoopsAccount, call: ApiCall) -> dict:
    """GET /v1/event-patterns/{id}: {id, eventName, eventProperties: [{name,
    type}], incomingWebhookPlatform}; 404 "Event pattern not found." (OAS
    1673-1714, 7498-7528)."""
    return _found_pattern(account.workflows.event_pattern(call.path_param))


def get_event_pattern_by_name(account: LoopsAccount, call: ApiCall) -> dict:
    """GET /v1/event-patterns/by-name/{eventName}: the name URL-decoded and
    case-sensitive (OAS 1629-1671)."""
    return _found_pattern(account.workflows.event_pattern_named(call.path_param))


def _found_pattern(pattern: Optional[dict]) -> dict:
    if pattern is None:
        raise ApiError(404, 'Event pattern not found.')
    return copy.deepcopy(pattern)


Endpoint = Callable[[LoopsAccount, ApiCall], Any]
# An unknown path is 404, a wrong method 405 "Wrong HTTP request method." (OAS
# gives the 405 no body; the sandbox answers both in its error shape).

# (path under /api) -> {method: endpoint}
ROUTES: dict[str, dict[str, Endpoint]] = {
    '/v1/workflows': {'GET': list_workflows},
    '/v1/event-patterns': {'GET': list_event_patterns},
    '/v1/api-key': {'GET': check_api_key},
    '/v1/contacts/create': {'POST': create_contact},
    CONTACT_UPSERT.path: {CONTACT_UPSERT.method: update_contact},
    '/v1/contacts/find': {'GET': find_contacts},
    '/v1/contacts/delete': {'POST': delete_contact},
    '/v1/contacts/properties': {'GET': get_properties, 'POST': create_property},
    '/v1/lists': {'GET': get_lists},
    EVENT_SEND.path: {EVENT_SEND.method: send_event},
}
# Paths with one parameter (the segment the pattern captures, URL-decoded),
# tried in order.
PARAMETER_ROUTES: tuple[tuple[re.Pattern, dict[str, Endpoint]], ...] = (
    (re.compile(r'/v1/event-patterns/by-name/([^/]+)'), {'GET': get_event_pattern_by_name}),
    (re.compile(r'/v1/event-patterns/([^/]+)'), {'GET': get_event_pattern}),
    (re.compile(r'/v1/workflows/([^/]+)'), {'GET': get_workflow}),
)


def route(account: LoopsAccount, method: str, path: str, call: ApiCall) -> Any:
    """One API request -> its 200 JSON payload, changing `account`; ApiError
    for a refusal, an unknown path (404) or a wrong method (405)."""
    endpoints = ROUTES.get(path)
    if endpoints is None:
        for pattern, candidates in PARAMETER_ROUTES:
            matched = pattern.fullmatch(path)
            if matched:
                endpoints = candidates
                call = dataclasses.replace(call, path_param=unquote(matched.group(1)))
                break
    if endpoints is None:
        raise ApiError(404, 'Not found')
    endpoint = endpoints.get(method)
    if endpoint is None:
        raise ApiError(405, 'Method not allowed')
    return endpoint(account, call)
