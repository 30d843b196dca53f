"""The per-event path, written once: a raw event in; a Loops request, or failure
records with their stage and reason, out.

    parse -> filter -> map -> hold back what the owner would not send
          -> fit to the account (a refused part costs only itself)

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
from typing import NamedTuple, Optional

from transforms.core.kinds import CONTACT_UPSERT
from transforms.core.records import LoopsRequest, RawEvent, failure_record
from transforms.core.text import compact_json
from transforms.mapping.conform import AccountSchema, check_policy, conform_body
from transforms.mapping.language import Mapping
from transforms.mapping.mapper import map_event
from transforms.segment.deletions import DELETE_TYPE, deletion_of_event
from transforms.segment.integrations import gives_to_loops
from transforms.segment.parse import ParsedEvent, Rejected, event_text, parse_event

Counts = collections.Counter
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
    map. `deletions`: a Segment delete message (a user-deletion request)
    deletes its contact, whatever `types` says; without it, it is filtered
    out like any type not selected (`filter/filtered_out_delete`).
    `ignore_integrations` sends the calls whose `integrations` turned Loops
    off (Segment would not have given them to Loops)."""
    types: tuple
    event_names: Optional[tuple]
    mapping: Mapping
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
    """What became of one event: the request to send (None when there is
    none), failure records (of the whole event, or of refused parts of a
    request that is still sent), and the parsed event, when it parsed."""
    request: Optional[LoopsRequest]
    failures: tuple
    event: Optional[ParsedEvent] = None


class EventProcessor:
    """One raw event -> Processed, counting into `counts`.

    In: the Selection, the Policy and, when sending to an account, its
    AccountSchema and the `unknown_properties` policy ('send', 'drop',
    'fail'). `process` is the whole path; `to_request` and `fit` are its two
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

    def process(self, raw: RawEvent, counts: Counts) -> Processed:
        processed = self.to_request(raw, counts)
        if (processed.request is None or self.account is None
                or processed.request.spec.removes_contact):
            return processed
        return self.fit(processed, counts)

    def to_request(self, raw: RawEvent, counts: Counts) -> Processed:
        """Parse, filter, map and hold back: the request as mapped."""
        try:
            event = parse_event(raw.data, raw.where)
        except Rejected as rejected:
            counts['parse/failed'] += 1
            counts['parse/' + rejected.reason] += 1
            return Processed(None, (failure_record(
                'parse', rejected.reason, rejected.message, event=event_text(raw.data),
                source=raw.where),))
        if event.type == DELETE_TYPE and self.selection.deletions:
            return self._deletion(event, counts)
        if not self.selection.keeps(event):
            counts['filter/filtered_out'] += 1
            counts['filter/filtered_out_' + event.type] += 1
            return Processed(None, (), event)
        if self.selection.turned_off(event):
            counts['filter/filtered_out'] += 1
            counts['filter/integrations_off'] += 1
            return Processed(None, (), event)
        counts['filter/kept'] += 1
        try:
            mapped = map_event(event, self.selection.mapping, self.policy.require_user_id)
        except Rejected as rejected:
            counts['map/failed'] += 1
            counts['map/' + rejected.reason] += 1
            return Processed(None, (failure_record(
                'map', rejected.reason, rejected.message, event=compact_json(event.data),
                source=event.source),), event)
        request = mapped.request
        counts['map/contact_updates' if request.kind == CONTACT_UPSERT.name
               else 'map/event_sends'] += 1
        for name, n in mapped.adjustments.items():
            counts['map/' + name] += n
        if self.policy.too_old(request):
            counts['held_back/old_events'] += 1
            return Processed(None, (), event)
        if not self.policy.resubscribe and not request.spec.mergeable:
            body = without_resubscribe(request.body, counts)
            if body is not request.body:
                request = dataclasses.replace(request, body=body)
        failures = _refused_records(mapped.refused, event, counts) if mapped.refused else ()
        return Processed(request, failures, event)

    def _deletion(self, event: ParsedEvent, counts: Counts) -> Processed:
        """A delete message -> its contact's deletion (never held back: a
        deletion is not an email to trigger), dated by the message, else by
        when it is read."""
        try:
            request = deletion_of_event(event, int(time.time() * 1000))
        except Rejected as rejected:
            counts['map/failed'] += 1
            counts['map/' + rejected.reason] += 1
            return Processed(None, (failure_record(
                'map', rejected.reason, rejected.message, event=compact_json(event.data),
                source=event.source),), event)
        counts['map/contact_deletions'] += 1
        return Processed(request, (), event)

    def fit(self, processed: Processed, counts: Counts) -> Processed:
        """A mapped request fitted to the account: coerced, and without the
        parts the account refuses (each a failure record of stage conform)."""
        request = processed.request
        body, adjustments, refused = conform_body(request.body, self.account,
                                                  self.unknown_properties, kind=request.spec)
        for name, n in adjustments.items():
            counts['conform/' + name] += n
        failures = processed.failures
        if refused:
            failures += _refused_records(refused, processed.event, counts)
        return Processed(_with_body(request, body), failures, processed.event)


def _refused_records(parts: list | tuple, event: ParsedEvent, counts: Counts) -> tuple:
    """The failure records (stage conform) of the refused parts of an
    event's request, counted `refused/<reason>`."""
    text = compact_json(event.data)
    records = []
    for part in parts:
        counts['refused/' + part.reason] += 1
        records.append(failure_record('conform', part.reason, part.message, event=text,
                                      source=event.source))
    return tuple(records)


def _with_body(request: LoopsRequest, body: dict) -> LoopsRequest:
    """`request` with the conformed `body`; `request` itself when conforming
    changed nothing (the same keys in the same order, equal values of the same
    types, as 1 == 1.0 == True), as for most requests: a copy of a request
    costs more than conforming it."""
    if (body == request.body and list(body) == list(request.body)
            and list(map(type, body.values())) == list(map(type, request.body.values()))):
        return request
    return dataclasses.replace(request, body=body)
