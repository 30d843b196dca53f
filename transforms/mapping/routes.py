"""A mapping as the per-event path runs it: routes, in order.

Both ways of writing a mapping compile to the same thing, a tuple of `Route`s:
our mapping language (language.py: its sections and `rules:`) and a Segment
destination's subscriptions (segment_routes.py). A route is

- a trigger: the call types it can take, and an FQL condition on the call
  (Segment's filter language, as Segment evaluates it), or none;
- an action: the RequestKind it makes, a contact upsert or an event send;
- how the action's fields are resolved from the call: `resolve(event, spec,
  require_user_id, key_id)`, which hands them to the step every route shares
  (build.py) and returns its MappedRequest, or raises Rejected.

A call matching several routes gets a request of each, in the routes' order,
as Segment sends one per subscription. A mapping, to the per-event path
(processor.py), is any object with `routes` (that tuple) and `skipped` (a
line for each part of it that never applies, shown when a run starts).
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional

from transforms.core.kinds import RequestKind
from transforms.mapping.fql import Condition, matches, parse_fql
from transforms.segment.parse import ParsedEvent

# The call types a route can take; other calls (alias, delete) are never mapped.
CALL_TYPES = ('identify', 'track', 'page', 'screen', 'group')
_ANY_TYPE = frozenset(CALL_TYPES)


@dataclass(frozen=True)
class Route:
    """One route of a mapping (picklable: Beam ships it to workers).

    `name` says which it is in messages and in `segment-loops map`;
    `trigger` is its condition as FQL text (a section's is implied by its
    call type); `types` the call types it can take, `condition` the parsed
    FQL (None: every call of `types`). `spec` is what `resolve` reads the
    fields by. `key_id` sets its event sends apart from another route's of
    the same call (build.idempotency_key). `named`: its failure messages
    start with its name (a section's need not: there is one per call type).
    """
    name: str
    kind: RequestKind
    trigger: str
    types: frozenset
    condition: Optional[Condition]
    resolve: Callable
    spec: Any
    key_id: str = ''
    named: bool = False

    def takes(self, event: ParsedEvent) -> bool:
        """Whether the route applies to the call (its FQL evaluated on the call as it arrived)."""
        return event.type in self.types and (
            self.condition is None or matches(self.condition, event.data))


def parse_trigger(text: str) -> Condition:
    """An FQL trigger -> its condition. Raises FqlError for text FQL cannot
    read, and for a condition on a path naming no field (`properties.\\[`),
    on which Segment throws for every call that reaches it: trying each
    condition once on an empty call makes that an error here, up front."""
    condition = parse_fql(text)
    pending = [condition]
    while pending:
        node = pending.pop()
        if node.get('type') == 'group':
            pending.extend(node['children'])
        else:
            matches({'type': 'group', 'operator': 'and', 'children': [node]}, {})
    return condition


def section_route(name: str, call_type: str, kind: RequestKind, resolve: Callable,
                  spec: Any) -> Route:
    """A route taking every call of one type (our language's sections)."""
    return Route(name, kind, f'type = "{call_type}"', frozenset({call_type}), None, resolve, spec)


def fql_route(name: str, trigger: str, condition: Condition, kind: RequestKind,
              resolve: Callable, spec: Any, key_id: str) -> Route:
    """A route taking the calls its FQL condition matches (rules, subscriptions)."""
    return Route(name, kind, trigger, condition_types(condition), condition, resolve, spec,
                 key_id, named=True)


def condition_types(condition: Condition) -> frozenset:
    """The call types an FQL condition can match, at most: those a `type`
    comparison allows, combined through `and`/`or`; any type where the
    condition does not say."""
    kind = condition.get('type')
    if kind == 'group':
        children = [condition_types(child) for child in condition.get('children', ())]
        if not children:
            return frozenset()
        if condition.get('operator') == 'and':
            return frozenset.intersection(*children)
        if condition.get('operator') == 'or':
            return frozenset.union(*children)
        return frozenset()
    value = condition.get('value')
    if kind != 'event-type' or not isinstance(value, str):
        return _ANY_TYPE
    if condition.get('operator') == '=':
        return _ANY_TYPE & {value}
    if condition.get('operator') == '!=':
        return _ANY_TYPE - {value}
    return _ANY_TYPE


def call_types(routes: tuple) -> frozenset:
    """The call types some route of a mapping can take."""
    return frozenset().union(*(route.types for route in routes))


def routes_by_type(routes: tuple) -> dict:
    """Call type -> the routes that can take it, in order: what a call is tried against."""
    return {call_type: tuple(route for route in routes if call_type in route.types)
            for call_type in CALL_TYPES}
