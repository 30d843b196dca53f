"""The per-event path, written once: a raw event in; Loops requests, or failure
records with their stage and reason, out.

    parse -> filter -> map by every route that takes the call
          -> hold back what the owner would not send
          -> fit to the account (a refused part costs only itself)

A mapping is a list of routes (transforms/mapping/routes.py): our mapping
language's sections and rules, or a Segment destination's subscriptions. A
call gets a request from each route that takes it, in order, as Segment
sends one per subscription; a route that cannot map it is a failure record
(stage map) that costs only that route's request. Two upserts of one
contact from one call are one upsert, the later route's values winning.
A call no route takes is filtered out (`filter/no_route`).

A Segment delete message, when the Selection takes deletions (the
stream), skips the filter, the holding back and the fitting: it becomes
its contact's deletion (transforms/segment/deletions.py).

A part of a call the mapping refuses (an invalid email of a call with a
userId) and the parts the account refuses are failure records of stage
`conform`; the rest of the request is sent.

Every place that turns Segment events into requests calls `EventProcessor`:
the backfill's and the stream's DoFns, `check`, the plain-loop benchmark and
the property tests, so "check mirrors the backfill" holds by construction.
What happens is counted in a `collections.Counter` the caller passes (the
DoFns turn it into Beam metrics), under the names the summary and docs/metrics.md
use: `parse/<reason>`, `filter/...`, `map/<reason or change>`,
`held_back/<reason>`, `conform/<change>`, `refused/<reason>`.

The filter drops what is not selected (`filter/filtered_out_<type>`) and,
unless told otherwise, the calls whose `integrations` kept them from
Loops (`filter/integrations_off`, transforms/segment/integrations.py); both
count in `filter/filtered_out`.
"""
import collections
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from transforms.core.kinds import MAILING_LISTS
from transforms.core.records import LoopsRequest, RawEvent, failure_record
from transforms.core.text import compact_json
from transforms.mapping.conform import AccountSchema, check_policy, conform_body
from transforms.mapping.routes import Route, routes_by_type
from transforms.segment.deletions import DELETE_TYPE, deletion_of_event
from transforms.segment.integrations import gives_to_loops
from transforms.segment.parse import ParsedEvent, Rejected, event_text, parse_event

Counts = collections.Counter
_NO_ROUTES = ((), False)
RESUBSCRIBES = 'held_back/resubscribes'


def without_resubscribe(body: dict, counts: Counts) -> dict:
    """The consent rule: `body` without its `subscribed: true` (counted
    `held_back/resubscribes`), or `body` itself when it has none. Loops
    subscribes new contacts anyway, and `true` would re-subscribe someone who
    unsubscribed since; an opt-out (`false`) is always sent. Contact upserts
    apply it once merged (transforms/contacts/merge.py), event sends here."""
    if body.get('subscribed') is not True:
        return body
    counts[RESUBSCRIBES] += 1
    return {key: value for key, value in body.items() if key != 'subscribed'}


@dataclass(frozen=True)
class Selection:
    """Which events become requests (call types, track names) and how they
    map: `mapping` is our language's Mapping or a Segment destination's
    subscriptions (anything with `routes`, transforms/mapping/routes.py).
    `deletions`: a Segment delete message (a user-deletion request) deletes
    its contact, whatever `types` says; without it, it is filtered out like
    any type not selected (`filter/filtered_out_delete`).
    `ignore_integrations` sends the calls whose `integrations` turned Loops
    off (Segment would not have given them to Loops)."""
    types: tuple
    event_names: Optional[tuple]
    mapping: Any
    deletions: bool = False
    ignore_integrations: bool = False

    def keeps(self, event: ParsedEvent) -> bool:
        """Whether the filter keeps an event: its type is selected and, for
        track calls, its name is one of `event_names` (None keeps every name)."""
        if event.type not in self.types:
            return False
        if self.event_names is not None and event.type == 'track':
            return event.data.get('event') in self.event_names
        return True

    def turned_off(self, event: ParsedEvent) -> bool:
        """Whether the call's `integrations` kept it from Loops, and that counts."""
        return not self.ignore_integrations and not gives_to_loops(event.data.get('integrations'))


@dataclass(frozen=True)
class Policy:
    """What the account's owner would not do by hand, for one run.

    require_user_id: only events with a userId (`--identity user_id`).
    max_event_age_ms: event sends older than this, by event time against
    `now_ms` (the run's start), are held back (counted, never sent); None
    sends events of any age. Events with no known time count as old.
    resubscribe: send `subscribed: true` as the data says (`--resubscribe`);
    when False, an event send carrying it goes without it (see
    without_resubscribe).
    """
    require_user_id: bool = False
    max_event_age_ms: Optional[int] = None
    now_ms: int = 0
    resubscribe: bool = True

    def too_old(self, request: LoopsRequest) -> bool:
        if self.max_event_age_ms is None or request.spec.mergeable:
            return False
        return request.stamp.event_ms < self.now_ms - self.max_event_age_ms


class Processed(NamedTuple):
    """What became of one event: the requests to send (none, one, or one per
    route that took it, in the routes' order), failure records (of the whole
    event, of a route that could not map it, and of refused parts of requests
    that are still sent), the parsed event, when it parsed, and the routes
    that took it."""
    requests: tuple
    failures: tuple
    event: Optional[ParsedEvent] = None
    routes: tuple = ()


class EventProcessor:
    """One raw event -> Processed, counting into `counts`.

    In: the Selection, the Policy and, when sending to an account, its
    AccountSchema and the `unknown_properties` policy ('send', 'drop',
    'fail'). `process` is the whole path; `to_requests` and `fit` are its two
    halves, for `check`, which looks at each request between them.
    Picklable (Beam ships it to workers); it keeps no state between events.
    """

    def __init__(self, selection: Selection, policy: Policy = Policy(),
                 account: Optional[AccountSchema] = None, unknown_properties: str = 'send'):
        check_policy(unknown_properties)
        self.selection = selection
        self.policy = policy
        self.account = account
        self.unknown_properties = unknown_properties
        # call type -> (the routes that can take it, whether any has a condition to test)
        self._routes = {call_type: (routes, any(route.condition is not None for route in routes))
                        for call_type, routes in routes_by_type(selection.mapping.routes).items()}

    def process(self, raw: RawEvent, counts: Counts) -> Processed:
        processed = self.to_requests(raw, counts)
        if (not processed.requests or self.account is None
                or processed.requests[0].spec.removes_contact):
            return processed
        return self.fit(processed, counts)

    def to_requests(self, raw: RawEvent, counts: Counts) -> Processed:
        """Parse, filter, map and hold back: the requests as mapped."""
        try:
            event = parse_event(raw.data, raw.where)
        except Rejected as rejected:
            counts['parse/failed'] += 1
            counts['parse/' + rejected.reason] += 1
            return Processed((), (failure_record(
                'parse', rejected.reason, rejected.message, event=event_text(raw.data),
                source=raw.where),))
        if event.type == DELETE_TYPE and self.selection.deletions:
            return self._deletion(event, counts)
        if not self.selection.keeps(event):
            counts['filter/filtered_out'] += 1
            counts['filter/filtered_out_' + event.type] += 1
            return Processed((), (), event)
        if self.selection.turned_off(event):
            counts['filter/filtered_out'] += 1
            counts['filter/integrations_off'] += 1
            return Processed((), (), event)
        candidates, conditional = self._routes.get(event.type, _NO_ROUTES)
        routes = (tuple(route for route in candidates if route.takes(event)) if conditional
                  else candidates)
        if not routes:
            counts['filter/filtered_out'] += 1
            counts['filter/no_route'] += 1
            return Processed((), (), event)
        counts['filter/kept'] += 1
        if len(routes) == 1:   # the usual case, and every call of a mapping without rules
            request, failures = self._mapped(routes[0], event, False, counts)
            return Processed(() if request is None else (request,), failures, event, routes)
        counts['map/more_routes'] += len(routes) - 1   # each a request or failure of its own
        requests, failures = [], ()
        keyed_before = False   # whether an earlier route of this call sends events
        for route in routes:
            request, route_failures = self._mapped(route, event, keyed_before, counts)
            keyed_before = keyed_before or route.kind.keyed
            failures += route_failures
            if request is not None:
                requests.append(request)
        if len(requests) > 1:
            requests = _one_upsert_per_contact(requests, counts)
        return Processed(tuple(requests), failures, event, routes)

    def _mapped(self, route: Route, event: ParsedEvent, after_event_send: bool,
                counts: Counts) -> tuple:
        """(the route's request for the call as the owner would send it, or
        None; its failure records), counted. Held back: an event send too old
        to send (None), an event send's `subscribed: true` unless the policy
        resubscribes."""
        try:
            mapped = route.resolve(event, route.spec, self.policy.require_user_id,
                                   route.key_id if after_event_send else '')
        except Rejected as rejected:
            counts['map/failed'] += 1
            counts['map/' + rejected.reason] += 1
            return None, (failure_record('map', rejected.reason, _named(route, rejected.message),
                                         event=compact_json(event.data), source=event.source),)
        request = mapped.request
        for name, n in mapped.adjustments.items():
            counts['map/' + name] += n
        if route.kind.mergeable:
            counts['map/contact_updates'] += 1
        else:
            counts['map/event_sends'] += 1
            if self.policy.too_old(request):
                counts['held_back/old_events'] += 1
                return None, ()
            if not self.policy.resubscribe:
                body = without_resubscribe(request.body, counts)
                if body is not request.body:
                    request = dataclasses.replace(request, body=body)
        if not mapped.refused:
            return request, ()
        return request, _refused_records(mapped.refused, event, counts, route)

    def _deletion(self, event: ParsedEvent, counts: Counts) -> Processed:
        """A delete message -> its contact's deletion (never held back: a
        deletion is not an email to trigger), dated by the message, else by
        when it is read."""
        try:
            request = deletion_of_event(event, int(time.time() * 1000))
        except Rejected as rejected:
            counts['map/failed'] += 1
            counts['map/' + rejected.reason] += 1
            return Processed((), (failure_record(
                'map', rejected.reason, rejected.message, event=compact_json(event.data),
                source=event.source),), event)
        counts['map/contact_deletions'] += 1
        return Processed((request,), (), event)

    def fit(self, processed: Processed, counts: Counts) -> Processed:
        """Mapped requests fitted to the account: coerced, and without the
        parts the account refuses (each a failure record of stage conform)."""
        fitted, failures = [], processed.failures
        for request in processed.requests:
            body, adjustments, refused = conform_body(request.body, self.account,
                                                      self.unknown_properties, kind=request.spec)
            for name, n in adjustments.items():
                counts['conform/' + name] += n
            if refused:
                failures += _refused_records(refused, processed.event, counts)
            fitted.append(_with_body(request, body))
        return processed._replace(requests=tuple(fitted), failures=failures)


def _named(route: Route, message: str) -> str:
    """A failure's message, naming the route when the mapping has several of its kind."""
    return f'{route.name}: {message}' if route.named else message


def _refused_records(parts: list | tuple, event: ParsedEvent, counts: Counts,
                     route: Optional[Route] = None) -> tuple:
    """The failure records (stage conform) of the refused parts of an
    event's request, counted `refused/<reason>`."""
    text = compact_json(event.data)
    records = []
    for part in parts:
        counts['refused/' + part.reason] += 1
        message = part.message if route is None else _named(route, part.message)
        records.append(failure_record('conform', part.reason, message, event=text,
                                      source=event.source))
    return tuple(records)


def _one_upsert_per_contact(requests: list, counts: Counts) -> list:
    """The requests of one call, its upserts of one contact folded into the
    first (counted `map/upserts_combined`): property by property, a later
    route's value wins, mailing lists list by list. They share the call's
    stamp, so no merge downstream could order them; the routes' order does,
    the same way in a backfill, a stream and `check`."""
    combined, first = [], {}
    for request in requests:
        if not request.spec.mergeable:
            combined.append(request)
            continue
        position = first.get(request.contact)
        if position is None:
            first[request.contact] = len(combined)
            combined.append(request)
            continue
        counts['map/upserts_combined'] += 1
        earlier = combined[position]
        body = {**earlier.body, **request.body}
        lists = {**earlier.body.get(MAILING_LISTS, {}), **request.body.get(MAILING_LISTS, {})}
        if lists:
            body[MAILING_LISTS] = lists
        combined[position] = dataclasses.replace(earlier, body=body)
    return combined


def _with_body(request: LoopsRequest, body: dict) -> LoopsRequest:
    """`request` with the conformed `body`; `request` itself when conforming
    changed nothing (the same keys in the same order, equal values of the same
    types, as 1 == 1.0 == True), as for most requests: a copy of a request
    costs more than conforming it."""
    if (body == request.body and list(body) == list(request.body)
            and list(map(type, body.values())) == list(map(type, request.body.values()))):
        return request
    return dataclasses.replace(request, body=body)
