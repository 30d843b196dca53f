"""A Segment "Loops (Actions)" destination's subscriptions, applied to Segment calls.

The subscriptions are what Segment's Public API returns for the destination
(GET /destinations/{id}/subscriptions): `{"data": {"subscriptions": [{id, name,
actionSlug, enabled, trigger, settings, ...}], "pagination": {...}}}`, where
`trigger` is FQL and `settings` the action's field mapping in Mapping Kit.
For each call, as Segment does it (destination-kit/index.ts onSubscriptions,
action.ts execute):

    subscriptions = load_subscriptions(json_text)        # checked once, up front
    for subscription in subscriptions_for(subscriptions, event):
        outcome = action_request(subscription, event)    # ActionRequest or ActionRefusal

`action_request` gives Segment's own request, as Segment sends it; this
tool's pipeline sends the request of `action_payload`'s payload by its own
rules instead (transforms/mapping/segment_routes.py).

Every enabled subscription whose trigger matches applies, in the order of the
list, each on its own: one that is refused does not stop the others.
Subscriptions that are disabled, or feed a Reverse ETL model, never apply;
skipped_subscriptions() names them.
"""
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from transforms.core.kinds import RequestKind
from transforms.mapping.actions_core import PayloadValidationError
from transforms.mapping.fql import Condition, FqlError, matches
from transforms.mapping.loops_actions import LOOPS_ACTIONS, LOOPS_API, LoopsAction
from transforms.mapping.mapping_kit import MappingKitError, prepare_mapping, transform_validated
from transforms.mapping.routes import parse_trigger

Document = Union[str, dict, list]


class SubscriptionError(ValueError):
    """Subscriptions that cannot be applied; `problems` names each one and where it fails."""

    def __init__(self, problems: list[str]):
        self.problems = tuple(problems)
        super().__init__('\n'.join(self.problems))


@dataclass(frozen=True)
class Subscription:
    """An enabled subscription of one of Loops' actions, its trigger and mapping checked."""

    id: str
    name: str
    action: LoopsAction
    trigger: str
    mapping: dict
    condition: Condition = field(repr=False, compare=False)
    prepared_mapping: dict = field(repr=False, compare=False)

    def __str__(self) -> str:
        return f"subscription '{self.name}' (id {self.id}, {self.action.slug})"


@dataclass(frozen=True)
class SkippedSubscription:
    """A subscription of the document that never applies, and why."""

    id: str
    name: str
    action_slug: str
    reason: str

    def __str__(self) -> str:
        return f"subscription '{self.name}' (id {self.id}, {self.action_slug}): {self.reason}"


@dataclass(frozen=True)
class ActionRequest:
    """The request Segment's destination sends to Loops for one subscription and one call."""

    subscription: Subscription
    kind: RequestKind
    body: dict

    @property
    def method(self) -> str:
        return self.kind.method

    @property
    def path(self) -> str:
        return self.kind.path

    @property
    def url(self) -> str:
        return LOOPS_API + self.path


@dataclass(frozen=True)
class ActionRefusal:
    """A call Segment's destination refuses for a subscription, with Segment's message."""

    subscription: Subscription
    message: str


def load_subscriptions(document: Document) -> list[Subscription]:
    """The subscriptions that apply to calls, from the Public API's response
    (the whole of it, or its list; parsed, or as JSON text).

    Raises SubscriptionError listing every problem: a document of another
    shape, and for each enabled subscription an action Loops' destination does
    not have, a trigger FQL cannot read and a mapping Mapping Kit refuses.
    """
    subscriptions, problems = [], []
    for position, entry in enumerate(_entries(document), 1):
        who = _who(entry, position)
        if not isinstance(entry, dict):
            problems.append(f'{who}: should be an object')
            continue
        if not isinstance(entry.get('enabled'), bool):
            problems.append(f'{who}: enabled: should be true or false')
        elif entry['enabled'] and not _reverse_etl(entry):
            found, issues = _subscription(entry)
            problems.extend(f'{who}: {issue}' for issue in issues)
            if found is not None:
                subscriptions.append(found)
    if problems:
        raise SubscriptionError(problems)
    return subscriptions


def skipped_subscriptions(document: Document) -> list[SkippedSubscription]:
    """The document's subscriptions that never apply: disabled, or feeding a Reverse ETL model."""
    skipped = []
    for entry in _entries(document):
        if not isinstance(entry, dict):
            continue
        reason = None
        if entry.get('enabled') is False:
            reason = 'disabled'
        elif _reverse_etl(entry):
            reason = f"maps the Reverse ETL model {entry['modelId']}, not Segment calls"
        if reason:
            skipped.append(SkippedSubscription(str(entry.get('id')), str(entry.get('name')),
                                               str(entry.get('actionSlug')), reason))
    return skipped


def subscriptions_for(subscriptions: list[Subscription], event: dict) -> list[Subscription]:
    """The subscriptions whose trigger matches the call, in Segment's order (the list's)."""
    return [subscription for subscription in subscriptions if matches(subscription.condition, event)]


def action_request(subscription: Subscription, event: dict) -> Union[ActionRequest, ActionRefusal]:
    """What Segment's destination does with the call for this subscription: the
    request it sends, or its refusal (a mapping that fails on this call, or a
    payload that fails the action's field checks)."""
    try:
        payload = action_payload(subscription, event)
    except (MappingKitError, PayloadValidationError) as error:
        return ActionRefusal(subscription, str(error))
    return ActionRequest(subscription, subscription.action.kind, subscription.action.body(payload))


def action_payload(subscription: Subscription, event: dict) -> dict:
    """The payload Segment's destination gives the action's `perform` for the
    call: the subscription's mapping resolved by Mapping Kit, then Segment's
    checks of the action's fields. Raises MappingKitError (the mapping fails
    on this call) or PayloadValidationError (the fields fail the checks),
    each with Segment's message."""
    resolved = transform_validated(subscription.prepared_mapping, event)
    return subscription.action.schema.prepare(resolved)


def _entries(document: Document) -> list:
    """The list of subscriptions in the document; SubscriptionError if there is none."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as error:
            raise SubscriptionError([f'the subscriptions are not JSON: {error}']) from error
    if isinstance(document, dict):
        data = document.get('data', document)
        pagination = data.get('pagination') if isinstance(data, dict) else None
        if isinstance(pagination, dict) and pagination.get('next'):
            raise SubscriptionError(['the subscriptions are one page of several (pagination.next is set): '
                                     'give every page, or their subscriptions as one list'])
        document = data.get('subscriptions') if isinstance(data, dict) else None
    if not isinstance(document, list):
        raise SubscriptionError(['the subscriptions should be the Public API\'s answer, '
                                 '{"data": {"subscriptions": [...]}}, or its list of subscriptions'])
    return document


def _who(entry: Any, position: int) -> str:
    if isinstance(entry, dict) and 'name' in entry and 'id' in entry:
        return f"subscription '{entry['name']}' (id {entry['id']})"
    return f'subscription #{position}'


def _reverse_etl(entry: dict) -> bool:
    return bool(entry.get('modelId'))


def _subscription(entry: dict) -> tuple[Optional[Subscription], list[str]]:
    """(the Subscription or None, the problems of an enabled subscription)."""
    problems = [f'{key}: is missing' for key in ('id', 'name', 'actionSlug', 'trigger', 'settings')
                if key not in entry]
    if problems:
        return None, problems
    action = LOOPS_ACTIONS.get(entry['actionSlug'])
    if action is None:
        problems.append(f"action: {entry['actionSlug']!r} is not an action of Loops (Actions): "
                        f"{', '.join(LOOPS_ACTIONS)}")
    condition, trigger_problem = _condition(entry['trigger'])
    if trigger_problem:
        problems.append(f'trigger: {trigger_problem}')
    prepared, mapping_problems = _prepared(entry['settings'])
    problems.extend(mapping_problems)
    if problems:
        return None, problems
    return Subscription(str(entry['id']), str(entry['name']), action, entry['trigger'], entry['settings'],
                        condition, prepared), []


def _condition(trigger: Any) -> tuple[Optional[Condition], Optional[str]]:
    """(the parsed trigger, None) or (None, why it cannot be used)."""
    if not isinstance(trigger, str) or not trigger.strip():
        return None, 'should be an FQL condition, such as type = "identify"'
    try:
        return parse_trigger(trigger), None
    except FqlError as error:
        return None, str(error)


def _prepared(settings: Any) -> tuple[Optional[dict], list[str]]:
    """(the mapping prepared for Mapping Kit, []) or (None, its problems)."""
    if not isinstance(settings, dict):
        return None, ['settings: should be an object mapping the action\'s fields']
    try:
        return prepare_mapping(settings), []
    except MappingKitError as error:
        return None, [f'settings {issue.location}: {issue.message}' for issue in error.errors]
