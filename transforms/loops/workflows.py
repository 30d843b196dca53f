"""Reading what a Loops account does with what it receives: its workflows and
their triggers, its event patterns, and creating a contact property.

Workflows (what Loops used to call loops) send email when something happens
to a contact: a contact is added (SignupTrigger), a property changes
(ContactPropertyTrigger, a query on the value before and after), a contact
joins a mailing list (AddToListTrigger), an event arrives (EventTrigger).
Only a workflow whose status is `Sending` is live. The shapes are those of
Loops' JS SDK (npm `loops` 7.3.0, dist/index.d.ts 289-350 and 440-475) and
OpenAPI spec 1.21.6 (loops-openapi.yaml 6357-6523, 7443-7635, 8166-8237):

- `GET /v1/workflows?perPage=&cursor=` -> {pagination: {nextCursor, ...},
  data: [{id, url, name, createdAt, updatedAt}]} (`url` in the SDK only);
- `GET /v1/workflows/{id}` -> {id, url, status, name?, mailingListId,
  rootNodeId, nodes: {id: {typeName, nextNodeIds, ...}}};
- `GET /v1/event-patterns` (paged as above) -> {id, eventName,
  incomingWebhookPlatform}; `/v1/event-patterns/{id}` and
  `/v1/event-patterns/by-name/{eventName}` add eventProperties [{name, type}];
- `POST /v1/contacts/properties` {name, type} -> {success: true}.

The parsing functions are pure (plain dicts in, frozen dataclasses out,
ValueError for an answer of another shape); the `read_*` functions make the
calls with a `LoopsClient`. The workflow endpoints "are currently in alpha"
(https://loops.so/docs/api-reference/examples/workflows): a key without
access (403) or an API without them (404) raises `WorkflowsUnavailable`, a
LoopsError a caller can tell apart and name to the user.
"""
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import quote

from transforms.loops.client import LoopsClient
from transforms.loops.retry import LoopsError

WORKFLOWS_PATH = '/v1/workflows'
EVENT_PATTERNS_PATH = '/v1/event-patterns'
PROPERTIES_PATH = '/v1/contacts/properties'
LIVE_STATUS = 'Sending'
# The most a page may hold (perPage "Must be between 10 and 50").
PAGE_SIZE = 50
# The app's page of a workflow when the API gives no `url` (the pattern of the
# JS SDK README's listWorkflows example).
APP_WORKFLOW_URL = 'https://app.loops.so/workflows/'
PROPERTY_TYPES = ('string', 'number', 'boolean', 'date')
FORBIDDEN_STATUS, NOT_FOUND_STATUS = 403, 404


class WorkflowsUnavailable(LoopsError):
    """The account's workflows cannot be read: the key has no access (403)
    or the API has no such endpoints (404)."""


class PropertyExists(LoopsError):
    """Loops refused to create a contact property because it exists."""


@dataclass(frozen=True)
class Comparison:
    """One side of a ContactPropertyTrigger's query: `operator` (any,
    equal, contains, greater_than, after, ...) and the `value` compared with."""
    operator: str
    value: Any


@dataclass(frozen=True)
class PropertyQuery:
    """A property change that sets a workflow off: property `key`, its value
    after the change matching `is_` and before it matching `was`."""
    key: str
    is_: Comparison
    was: Comparison


@dataclass(frozen=True)
class Trigger:
    """A workflow's trigger node. `kind` is its typeName (SignupTrigger,
    EventTrigger, ContactPropertyTrigger, AddToListTrigger, BlankTrigger for
    none chosen yet, or a kind Loops may add); the other fields are those of
    its kind, None otherwise. `re_eligible`: a contact may enter every time
    the trigger matches, not only once."""
    kind: str
    event_name: Optional[str] = None
    event_pattern_id: Optional[str] = None
    property_query: Optional[PropertyQuery] = None
    list_id: Optional[str] = None
    re_eligible: bool = False


@dataclass(frozen=True)
class Workflow:
    """A workflow: its Loops id, name, link in the Loops app, status (Draft,
    Sending, Paused or PausedAndQueueing), the mailing list it is limited to
    (None: every contact) and its triggers, the root's first."""
    id: str
    name: str
    url: str
    status: str
    mailing_list_id: Optional[str]
    triggers: tuple

    @property
    def live(self) -> bool:
        """Whether it sends now (status `Sending`)."""
        return self.status == LIVE_STATUS


@dataclass(frozen=True)
class EventPattern:
    """An event name the account knows, with its properties as (name, type)
    pairs and the platform of an incoming webhook (None for custom events)."""
    id: str
    event_name: str
    properties: tuple
    webhook_platform: Optional[str] = None


# ------------------------------------------------------------------ parsing

def parse_page(payload: Any) -> tuple[list, Optional[str]]:
    """A list endpoint's answer -> (its items, the next cursor or None on the
    last page; an empty cursor counts as none, as the Go SDK reads it)."""
    _require(isinstance(payload, dict) and isinstance(payload.get('data'), list)
             and isinstance(payload.get('pagination'), dict),
             'a page: expected {pagination, data}', payload)
    items = payload['data']
    _require(all(isinstance(item, dict) and isinstance(item.get('id'), str) for item in items),
             'a page: every item needs an id', payload)
    cursor = payload['pagination'].get('nextCursor')
    return items, cursor if isinstance(cursor, str) and cursor else None


def parse_workflow(detail: Any, summary: Optional[dict] = None) -> Workflow:
    """`GET /v1/workflows/{id}`'s answer (and the list's item for it, whose
    name and url fill what the detail lacks) -> Workflow."""
    _require(isinstance(detail, dict) and isinstance(detail.get('id'), str)
             and isinstance(detail.get('status'), str) and isinstance(detail.get('nodes'), dict),
             'a workflow: expected {id, status, nodes}', detail)
    summary = summary or {}
    nodes = detail['nodes']
    _require(all(isinstance(node, dict) and isinstance(node.get('typeName'), str)
                 for node in nodes.values()), 'a workflow: every node needs a typeName', detail)
    root = detail.get('rootNodeId')
    order = ([root] if root in nodes else []) + [node_id for node_id in nodes if node_id != root]
    triggers = tuple(parse_trigger(nodes[node_id]) for node_id in order
                     if nodes[node_id]['typeName'].endswith('Trigger'))
    workflow_id = detail['id']
    return Workflow(
        id=workflow_id, name=_text(detail.get('name')) or _text(summary.get('name')) or '',
        url=(_text(detail.get('url')) or _text(summary.get('url'))
             or APP_WORKFLOW_URL + workflow_id),
        status=detail['status'], mailing_list_id=_text(detail.get('mailingListId')),
        triggers=triggers)


def parse_trigger(node: dict) -> Trigger:
    """A trigger node -> Trigger. `eventPatternId` is read where a node has
    it (the SDK's update payload names it; the simplified node has only
    `eventName`); a missing `reEligible` is false."""
    query = node.get('contactPropertyQuery')
    return Trigger(kind=node['typeName'], event_name=_text(node.get('eventName')),
                   event_pattern_id=_text(node.get('eventPatternId')),
                   property_query=parse_property_query(query) if query is not None else None,
                   list_id=_text(node.get('mailingListId')),
                   re_eligible=node.get('reEligible') is True)


def parse_property_query(query: Any) -> PropertyQuery:
    """{key, is: {operator, value}, was: {operator, value}} -> PropertyQuery."""
    _require(isinstance(query, dict) and isinstance(query.get('key'), str),
             'a contactPropertyQuery: expected {key, is, was}', query)
    sides = []
    for side in ('is', 'was'):
        comparison = query.get(side)
        _require(isinstance(comparison, dict) and isinstance(comparison.get('operator'), str),
                 f'a contactPropertyQuery: "{side}" needs an operator', query)
        sides.append(Comparison(comparison['operator'], comparison.get('value')))
    return PropertyQuery(query['key'], sides[0], sides[1])


def parse_event_pattern(payload: Any) -> EventPattern:
    """An event pattern answer (with or without eventProperties) -> EventPattern."""
    _require(isinstance(payload, dict) and isinstance(payload.get('id'), str)
             and isinstance(payload.get('eventName'), str),
             'an event pattern: expected {id, eventName}', payload)
    properties = payload.get('eventProperties') or []
    _require(isinstance(properties, list) and all(
        isinstance(item, dict) and isinstance(item.get('name'), str)
        and isinstance(item.get('type'), str) for item in properties),
        'an event pattern: eventProperties must be [{name, type}]', payload)
    return EventPattern(payload['id'], payload['eventName'],
                        tuple((item['name'], item['type']) for item in properties),
                        _text(payload.get('incomingWebhookPlatform')))


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _require(condition: bool, what: str, payload: Any) -> None:
    if not condition:
        raise ValueError(f'unexpected answer from Loops, {what}; got {str(payload)[:200]}')


# ------------------------------------------------------------------ reading

def read_workflows(client: LoopsClient) -> list:
    """Every workflow of the account with its triggers, in the order Loops
    lists them (most recently updated first): every page of the list, then
    each workflow. One deleted in between is left out. Raises
    WorkflowsUnavailable (403, or 404 on the list), AuthError, LoopsError, or
    ValueError for an answer of another shape."""
    workflows = []
    for summary in _every_item(client, WORKFLOWS_PATH, 'workflows'):
        detail = _read_item(client, f'{WORKFLOWS_PATH}/{quote(summary["id"], safe="")}',
                            'workflows')
        if detail is not None:
            workflows.append(parse_workflow(detail, summary))
    return workflows


def read_event_patterns(client: LoopsClient) -> dict:
    """Event name -> EventPattern (with its properties) for every event
    pattern of the account. Raises as read_workflows."""
    patterns = {}
    for summary in _every_item(client, EVENT_PATTERNS_PATH, 'event patterns'):
        detail = _read_item(client, f'{EVENT_PATTERNS_PATH}/{quote(summary["id"], safe="")}',
                            'event patterns')
        if detail is not None:
            pattern = parse_event_pattern(detail)
            patterns[pattern.event_name] = pattern
    return patterns


def read_event_pattern(client: LoopsClient, event_name: str) -> Optional[EventPattern]:
    """The account's pattern of `event_name` (case-sensitive, sent
    URL-encoded), None when it has none. Raises as read_workflows."""
    detail = _read_item(client, f'{EVENT_PATTERNS_PATH}/by-name/{quote(event_name, safe="")}',
                        'event patterns')
    return parse_event_pattern(detail) if detail is not None else None


def create_property(client: LoopsClient, name: str, property_type: str) -> None:
    """Creates the custom contact property `name` of `property_type` (string,
    number, boolean or date). Raises PropertyExists when Loops says it exists
    ("Property already exists.", OAS 4518-4534; the SDKs' tests word it
    "Property with this name already exists"), LoopsError for any other
    refusal (a reserved name, an invalid type: Loops' words in the message),
    ValueError for a type Loops does not have."""
    if property_type not in PROPERTY_TYPES:
        raise ValueError(f'a property type is one of {", ".join(PROPERTY_TYPES)}, '
                         f'not {property_type!r}')
    try:
        client.post(PROPERTIES_PATH, {'name': name, 'type': property_type})
    except LoopsError as error:
        if 'already exists' in (error.loops_says or '').lower():
            raise PropertyExists(str(error), error.http_status, error.loops_says) from None
        raise


def _every_item(client: LoopsClient, path: str, what: str) -> list:
    """Every item of a paged list endpoint, following nextCursor; a 404 means
    the API has no such endpoint."""
    items, cursor, seen = [], None, set()
    while True:
        query = f'?perPage={PAGE_SIZE}' + (f'&cursor={quote(cursor, safe="")}' if cursor else '')
        try:
            answer = _read(client, path + query, what)
        except LoopsError as error:
            if error.http_status == NOT_FOUND_STATUS:
                raise WorkflowsUnavailable(
                    f'this Loops API has no {what} endpoints (HTTP 404 on GET {path}): what '
                    f'a run sets off cannot be checked', error.http_status,
                    error.loops_says) from None
            raise
        page, cursor = parse_page(answer)
        items += page
        if cursor is None:
            return items
        if cursor in seen:
            raise ValueError(f'unexpected answer from Loops: GET {path} repeats the cursor '
                             f'{cursor!r}')
        seen.add(cursor)


def _read_item(client: LoopsClient, path: str, what: str) -> object:
    """GET one item's `path`; None when Loops has no such item (404)."""
    try:
        return _read(client, path, what)
    except WorkflowsUnavailable:
        raise
    except LoopsError as error:
        if error.http_status == NOT_FOUND_STATUS:
            return None
        raise


def _read(client: LoopsClient, path: str, what: str) -> object:
    """GET `path`; a 403 as WorkflowsUnavailable."""
    try:
        return client.get(path)
    except LoopsError as error:
        if error.http_status == FORBIDDEN_STATUS:
            detail = f': {error.loops_says}' if error.loops_says else ''
            raise WorkflowsUnavailable(
                f'Loops refused this API key access to {what} (HTTP 403{detail}): what a run '
                f'sets off cannot be checked with this key', error.http_status,
                error.loops_says) from None
        raise
