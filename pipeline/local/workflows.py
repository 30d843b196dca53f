"""The workflows and event patterns of a sandbox account, and what their
triggers set off.

Workflows are what Loops used to call loops: the automations that send
email when something happens to a contact. The sandbox serves them as the
API shows them (`GET /v1/workflows`, `GET /v1/workflows/{id}`, endpoints.py)
and imitates what their triggers do, by its own simple reading of Loops'
docs, so that a test can compare what a run expected to set off with what
the account did. Sources: the JS SDK npm `loops` 7.3.0 (dist/index.d.ts
289-350, 440-449; README "getWorkflow", "listEventPatterns"), Loops' OpenAPI
spec 1.21.6 (loops-openapi.yaml, mirrored by api-evangelist/loops; line
numbers below), and the docs pages named where they are used.

A workflow fixture is the workflow as `GET /v1/workflows/{id}` returns it,
with what the sandbox can fill left out::

    {"name": "Welcome", "status": "Sending",            # required
     "trigger": {"typeName": "SignupTrigger"},           # or rootNodeId + nodes
     "id": "...", "description": "...", "mailingListId": null,
     "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "..."}

`trigger` is the root node without `nextNodeIds` (EventTrigger: `eventName`;
ContactPropertyTrigger: `contactPropertyQuery` {key, is, was}; AddToListTrigger:
`mailingListId`; each may set `reEligible`, default false); the sandbox adds
a SendEmailAction after it. An event pattern fixture is `{"eventName",
"eventProperties": [{"name", "type"}]}`, `id` and `incomingWebhookPlatform`
optional.

What sets a trigger off (the record `sandbox.state()['triggers']` keeps, one
entry per contact entering a workflow: {workflow_id, workflow_name,
trigger, contact_id, email, userId, detail}):
- only a live workflow, status `Sending` ("Draft", "Paused" and
  "PausedAndQueueing" never; the status enum of `SimplifiedWorkflow`,
  OAS 6465-6471; which status is live is not stated, `Sending` by its name);
- SignupTrigger: a contact created through the API ("This trigger works
  for contacts added via an integration, a form, or an API call. Contacts
  uploaded via CSV ... will not be included",
  https://loops.so/docs/loop-builder/loop-triggers "Contact added");
  detail None;
- ContactPropertyTrigger: a change of the property `key` whose value
  before matches `was` and after matches `is` (OAS 8166-8237; "start the
  workflow when a specific field is updated from a specific value to another
  specific value", same page, "Contact updated"); a contact's creation counts
  as a change from no value (unconfirmed: assumed stricter, it sets off
  more); detail {key, was, is} with the two values;
- AddToListTrigger: a contact subscribed to the list it was not on ("if
  the contact is removed from a list and then re-added, it will trigger
  again", same page, "Contact added to list"; reEligible below still
  holds); detail {mailingListId};
- EventTrigger: an event of that exact name received (names are
  case-sensitive, OAS 1629-1650); detail {eventName};
- a workflow with a mailing list takes only that list's contacts ("only
  contacts from those lists are added to the workflow",
  https://loops.so/docs/workflows "Mailing lists");
- `reEligible` false: a contact enters at most once ("contacts will only
  ever enter this workflow once", OAS 6429-6433); a SignupTrigger once.
Whether a contact is subscribed does not matter here (its emails would not
go out, but it enters; unconfirmed).
"""
import copy
import math
from datetime import datetime
from itertools import count
from typing import Any, Iterable, Optional

WORKFLOW_STATUSES = ('Draft', 'Sending', 'Paused', 'PausedAndQueueing')
LIVE_STATUS = 'Sending'
TRIGGER_TYPES = ('SignupTrigger', 'EventTrigger', 'ContactPropertyTrigger',
                 'AddToListTrigger', 'BlankTrigger')
# OAS 8193-8237; JS SDK WorkflowContactPropertyComparisonOperator.
OPERATORS = ('any', 'contains', 'not_contains', 'empty', 'not_empty', 'equal', 'not_equal',
             'greater_than', 'less_than', 'true', 'false', 'numeric_equal',
             'numeric_not_equal', 'after', 'before', 'between')
EVENT_PROPERTY_TYPES = ('string', 'number', 'boolean', 'date')
WEBHOOK_PLATFORMS = ('clerk', 'polar', 'stripe', 'supabase', None)
# The Loops app's page of a workflow (JS SDK README "listWorkflows", `url`).
APP_WORKFLOW_URL = 'https://app.loops.so/workflows/'
DEFAULT_TIME = '2026-01-01T00:00:00.000Z'
# Keys of a contact that are not contact properties.
NOT_PROPERTIES = frozenset({'id', 'mailingLists'})


class AccountWorkflows:
    """An account's workflows (as `GET /v1/workflows/{id}` shows them, plus
    createdAt and updatedAt), its event patterns, and the triggers set off."""

    def __init__(self, workflows: Iterable[dict] = (), event_patterns: Iterable[dict] = ()):
        self.workflows = [workflow_from_fixture(item, number)
                          for number, item in enumerate(workflows, start=1)]
        ids = [workflow['id'] for workflow in self.workflows]
        if len(set(ids)) != len(ids):
            raise ValueError('workflows: two workflows have the same id')
        self._pattern_numbers = count(1)
        self.event_patterns: list[dict] = []
        for number, item in enumerate(event_patterns):
            pattern = event_pattern_from_fixture(item, f'event_patterns[{number}]')
            if self.event_pattern_named(pattern['eventName']) is not None:
                raise ValueError(f'event_patterns: "{pattern["eventName"]}" is there twice')
            self.event_patterns.append(
                {'id': pattern.get('id') or self._new_pattern_id(), **pattern})
        self.triggers: list[dict] = []
        self._entered: set[tuple[str, str]] = set()

    def forget_activity(self) -> None:
        """No triggers set off yet; workflows and event patterns stay."""
        self.triggers.clear()
        self._entered.clear()

    def workflow(self, workflow_id: str) -> Optional[dict]:
        """The workflow of this id, or None."""
        return next((w for w in self.workflows if w['id'] == workflow_id), None)

    def event_pattern(self, pattern_id: str) -> Optional[dict]:
        """The event pattern of this id, or None."""
        return next((p for p in self.event_patterns if p['id'] == pattern_id), None)

    def event_pattern_named(self, event_name: str) -> Optional[dict]:
        """The event pattern of this exact (case-sensitive) name, or None."""
        return next((p for p in self.event_patterns if p['eventName'] == event_name), None)

    def learn_event(self, event_name: str, event_properties: dict) -> None:
        """A new event name becomes an event pattern with the event's
        properties ("You can create an event by sending an event with a new
        event name", https://loops.so/docs/events "Creating events"). An
        existing pattern is left as it is (what Loops does with a property it
        has not seen is undocumented)."""
        if self.event_pattern_named(event_name) is None:
            self.event_patterns.append({
                'id': self._new_pattern_id(), 'eventName': event_name,
                'eventProperties': [{'name': name, 'type': value_type(value)}
                                    for name, value in event_properties.items()],
                'incomingWebhookPlatform': None})

    def _new_pattern_id(self) -> str:
        return f'event-pattern-{next(self._pattern_numbers)}'

    # ---- what triggers set off

    def contact_changed(self, before: Optional[dict], after: dict) -> None:
        """Records the triggers set off by a contact's creation through the
        API (`before` None) or change."""
        if before is None:
            self._set_off(after, 'SignupTrigger', lambda node: True, None)
        old = before or {}
        for key in sorted((set(old) | set(after)) - NOT_PROPERTIES):
            was, now = old.get(key), after.get(key)
            if was != now:
                self._set_off(after, 'ContactPropertyTrigger',
                              lambda node: _query_holds(node['contactPropertyQuery'], key,
                                                        was, now),
                              {'key': key, 'was': was, 'is': now})
        for list_id in sorted(set(after['mailingLists']) - set(old.get('mailingLists', {}))):
            self._set_off(after, 'AddToListTrigger',
                          lambda node: node['mailingListId'] == list_id,
                          {'mailingListId': list_id})

    def imported(self, before: Optional[dict], after: dict) -> None:
        """Records what an audience import by CSV sets off: property changes
        only, never a SignupTrigger (the docs quoted above)."""
        self.contact_changed(before or {'mailingLists': {}}, after)

    def event_received(self, contact: dict, event_name: str) -> None:
        """Records the EventTriggers an event sets off."""
        self._set_off(contact, 'EventTrigger', lambda node: node['eventName'] == event_name,
                      {'eventName': event_name})

    def _set_off(self, contact: dict, trigger: str, matches, detail: Optional[dict]) -> None:
        for workflow in self.workflows:
            node = workflow['nodes'][workflow['rootNodeId']]
            if workflow['status'] != LIVE_STATUS or node['typeName'] != trigger:
                continue
            if not matches(node):
                continue
            list_id = workflow['mailingListId']
            if trigger != 'AddToListTrigger' and list_id is not None \
                    and list_id not in contact['mailingLists']:
                continue
            entry = (workflow['id'], contact['id'])
            if entry in self._entered and not node.get('reEligible', False):
                continue
            self._entered.add(entry)
            self.triggers.append({
                'workflow_id': workflow['id'], 'workflow_name': workflow.get('name'),
                'trigger': trigger, 'contact_id': contact['id'], 'email': contact['email'],
                'userId': contact['userId'], 'detail': copy.deepcopy(detail)})


def _query_holds(query: dict, key: str, was: Any, now: Any) -> bool:
    return (query['key'] == key and comparison_holds(query['was'], was)
            and comparison_holds(query['is'], now))


def comparison_holds(comparison: dict, value: Any) -> bool:
    """Whether a property's value satisfies one side of a ContactPropertyTrigger.

    Loops documents the operators by name and property type only (OAS
    8193-8237); this reading is the sandbox's own (unconfirmed): text
    compares exactly, numbers numerically, dates as instants; `empty` is no
    value or "".
    """
    operator, target = comparison['operator'], comparison.get('value')
    empty = value is None or value == ''
    if operator == 'any':
        return True
    if operator in ('empty', 'not_empty'):
        return empty == (operator == 'empty')
    if operator in ('equal', 'not_equal'):
        return (not empty and str(value) == str(target)) == (operator == 'equal')
    if operator in ('contains', 'not_contains'):
        return (isinstance(value, str) and str(target) in value) == (operator == 'contains')
    if operator in ('true', 'false'):
        return value is (operator == 'true')
    if operator in ('greater_than', 'less_than', 'numeric_equal', 'numeric_not_equal'):
        if not (_is_number(value) and _is_number(target)):
            return operator == 'numeric_not_equal'
        return {'greater_than': value > target, 'less_than': value < target,
                'numeric_equal': value == target,
                'numeric_not_equal': value != target}[operator]
    if operator in ('after', 'before'):
        moment, bound = _instant(value), _instant(target)
        if moment is None or bound is None:
            return False
        return moment > bound if operator == 'after' else moment < bound
    raise ValueError(f'the sandbox does not evaluate the operator {operator!r}')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _instant(value: Any) -> Optional[float]:
    """A date property's value (Unix milliseconds or an ISO-8601 text,
    https://loops.so/docs/contacts/properties) -> milliseconds."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp() * 1000
        except ValueError:
            return None
    return None


def value_type(value: Any) -> str:
    """The event property type of a value: boolean, number or string."""
    if isinstance(value, bool):
        return 'boolean'
    return 'number' if _is_number(value) else 'string'


# ---------------------------------------------------------------- fixtures

def workflow_from_fixture(fixture: dict, number: int) -> dict:
    """A workflow fixture (module docstring) -> the stored workflow; ValueError
    naming what is wrong."""
    where = f'workflows[{number - 1}]'
    if not isinstance(fixture, dict):
        raise ValueError(f'{where}: expected an object')
    unknown = set(fixture) - {'id', 'name', 'status', 'description', 'mailingListId',
                              'createdAt', 'updatedAt', 'trigger', 'rootNodeId', 'nodes'}
    if unknown:
        raise ValueError(f'{where}: unknown keys {sorted(unknown)}')
    workflow_id = fixture.get('id', f'workflow-{number}')
    if fixture.get('status') not in WORKFLOW_STATUSES:
        raise ValueError(f'{where}: status must be one of {", ".join(WORKFLOW_STATUSES)}')
    if not isinstance(fixture.get('name'), str):
        raise ValueError(f'{where}: name must be text')
    if 'trigger' in fixture:
        root, nodes = _nodes_after(workflow_id, fixture['trigger'], fixture['name'], where)
    elif 'rootNodeId' in fixture and isinstance(fixture.get('nodes'), dict):
        root, nodes = fixture['rootNodeId'], copy.deepcopy(fixture['nodes'])
        if root not in nodes:
            raise ValueError(f'{where}: rootNodeId is not one of the nodes')
        nodes[root] = trigger_node(nodes[root], where)
    else:
        raise ValueError(f'{where}: give a trigger, or rootNodeId and nodes')
    workflow = {'id': workflow_id, 'status': fixture['status'], 'name': fixture['name'],
                'mailingListId': fixture.get('mailingListId'), 'rootNodeId': root,
                'workflowRevisionId': f'{workflow_id}-revision-1', 'nodes': nodes,
                'createdAt': fixture.get('createdAt', DEFAULT_TIME),
                'updatedAt': fixture.get('updatedAt', fixture.get('createdAt', DEFAULT_TIME))}
    if 'description' in fixture:
        workflow['description'] = fixture['description']
    return workflow


def _nodes_after(workflow_id: str, trigger: Any, name: str, where: str) -> tuple[str, dict]:
    """A trigger node and the email it leads to."""
    root, email = f'{workflow_id}-trigger', f'{workflow_id}-email'
    node = trigger_node({**trigger, 'nextNodeIds': [email]}
                        if isinstance(trigger, dict) else trigger, where)
    return root, {root: node, email: {'typeName': 'SendEmailAction', 'nextNodeIds': [],
                                      'emailMessageId': None, 'subject': name}}


def trigger_node(node: Any, where: str) -> dict:
    """A root node with the fields its type requires (OAS 7536-7635: eventName,
    contactPropertyQuery or mailingListId, and reEligible); ValueError."""
    if not isinstance(node, dict) or node.get('typeName') not in TRIGGER_TYPES:
        raise ValueError(f'{where}: the root node must be a trigger, typeName one of '
                         f'{", ".join(TRIGGER_TYPES)}')
    kind = node['typeName']
    fields = {'EventTrigger': 'eventName', 'ContactPropertyTrigger': 'contactPropertyQuery',
              'AddToListTrigger': 'mailingListId'}.get(kind)
    result = {'typeName': kind, 'nextNodeIds': list(node.get('nextNodeIds', []))}
    if fields is not None:
        if fields not in node:
            raise ValueError(f'{where}: a {kind} needs {fields}')
        result[fields] = copy.deepcopy(node[fields])
        result['reEligible'] = bool(node.get('reEligible', False))
    if kind == 'ContactPropertyTrigger':
        _check_query(result['contactPropertyQuery'], where)
    return result


def _check_query(query: Any, where: str) -> None:
    if not (isinstance(query, dict) and isinstance(query.get('key'), str)):
        raise ValueError(f'{where}: contactPropertyQuery needs a key and is/was comparisons')
    for side in ('is', 'was'):
        comparison = query.get(side)
        if not isinstance(comparison, dict) or comparison.get('operator') not in OPERATORS:
            raise ValueError(f'{where}: contactPropertyQuery.{side} needs an operator, one '
                             f'of {", ".join(OPERATORS)}')
        if comparison['operator'] == 'between':
            # No source says how a `between` value holds its two bounds.
            raise ValueError(f'{where}: the sandbox does not evaluate "between"')


def event_pattern_from_fixture(fixture: Any, where: str) -> dict:
    """An event pattern fixture -> {eventName, eventProperties,
    incomingWebhookPlatform} (+ id when given); ValueError."""
    if not isinstance(fixture, dict) or not isinstance(fixture.get('eventName'), str):
        raise ValueError(f'{where}: an event pattern needs an eventName')
    properties = fixture.get('eventProperties', [])
    if not isinstance(properties, list) or not all(
            isinstance(item, dict) and isinstance(item.get('name'), str)
            and item.get('type') in EVENT_PROPERTY_TYPES for item in properties):
        raise ValueError(f'{where}: eventProperties must be [{{name, type}}], type one of '
                         f'{", ".join(EVENT_PROPERTY_TYPES)}')
    platform = fixture.get('incomingWebhookPlatform')
    if platform not in WEBHOOK_PLATFORMS:
        raise ValueError(f'{where}: unknown incomingWebhookPlatform {platform!r}')
    pattern = {'eventName': fixture['eventName'],
               'eventProperties': [{'name': p['name'], 'type': p['type']} for p in properties],
               'incomingWebhookPlatform': platform}
    if 'id' in fixture:
        pattern['id'] = fixture['id']
    return pattern
