"""A Segment "Loops (Actions)" destination's subscriptions, as the routes of a mapping.

`--segment_subscriptions FILE` gives the subscriptions Segment's Public API
returns for the destination (subscriptions.py reads and checks them). Each
enabled subscription of `createOrUpdateContact` or `sendEvent` becomes a route
(routes.py): its trigger is the subscription's FQL, its action the
subscription's, and its fields are resolved as Segment resolves them, by the
subscription's Mapping Kit mapping and then Segment's own checks of the
action's fields (`action_payload`). A call Segment's destination refuses for a
subscription (its mapping fails on the call, or the fields fail the checks)
is a failure of that route, `action_refused`, with Segment's message.

From the payload on, the request is made by the step every mapping shares
(build.py), so this tool's rules hold as for its own mapping language: values
made valid for Loops, dates as ISO-8601, `subscribed` and mailing-list flags
read as a yes or a no, an event's contact properties never overwriting its own
fields, idempotency keys, and, in the per-event path, consent and history.
What that changes from Segment's own request is listed in docs/mapping.md.

How Segment's bodies are put together, kept here: a contact upsert spreads the
custom attributes first and the mapped fields over them, so a Loops field the
mapping leaves out is taken from the custom attributes (`subscribed`,
`firstName`, ...), and so are the mailing lists when the field has none; an
event send's contact properties are an object spread into the body.
"""
import json
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.kinds import MAILING_LISTS
from transforms.mapping.actions_core import PayloadValidationError
from transforms.mapping.build import (CONTACT_FIELDS, TEXT_FIELDS, MappedRequest, Spread,
                                      checked_event_name, checked_user_id, contact_request,
                                      event_request)
from transforms.mapping.language import DEFAULT_MAPPING
from transforms.mapping.loops_actions import CREATE_OR_UPDATE_CONTACT
from transforms.mapping.mapping_kit import MappingKitError
from transforms.mapping.routes import Route, fql_route
from transforms.mapping.subscriptions import (Document, Subscription, SubscriptionError,
                                              action_payload, load_subscriptions,
                                              skipped_subscriptions)
from transforms.mapping.values import LOOPS_CONTACT_FIELDS, RESERVED_NAMES, ValueRules
from transforms.segment.parse import ParsedEvent, Rejected

# Loops' own contact fields, in the order a body gets them (the same in every process).
_FIELD_ORDER = (*TEXT_FIELDS, 'subscribed', 'createdAt', MAILING_LISTS)
# The value rules of our language's defaults: Segment's mapping has none of its own.
VALUE_RULES = ValueRules()
# How a contact's custom attributes become properties: Loops' own fields among
# them are fields (the mapped field wins), the rest custom properties, dates
# as in our language's defaults.
CUSTOM_ATTRIBUTES = Spread(
    rename={}, consumed=CONTACT_FIELDS | {'email', 'userId'},
    unsendable=LOOPS_CONTACT_FIELDS | RESERVED_NAMES,
    dates=frozenset(DEFAULT_MAPPING['contact']['dates']))


@dataclass(frozen=True)
class SegmentMapping:
    """A destination's subscriptions as a mapping (picklable): `routes`, one
    per enabled subscription of Loops' actions, in the list's order; `skipped`,
    a line for each subscription that never applies (disabled, or feeding a
    Reverse ETL model)."""
    routes: tuple
    skipped: tuple = ()


def segment_mapping(document: Document) -> SegmentMapping:
    """The subscriptions of the Public API's answer (the whole of it, or its
    list; parsed, or as JSON text) as a mapping. Raises SubscriptionError
    naming every subscription that cannot be applied, and where."""
    routes = tuple(_route(subscription) for subscription in load_subscriptions(document))
    skipped = tuple(str(subscription) for subscription in skipped_subscriptions(document))
    return SegmentMapping(routes, skipped)


def load_segment_mapping(path: str) -> SegmentMapping:
    """segment_mapping of a JSON file, local, gs:// or s3:// (read through
    Beam's file systems, as a mapping file is). Raises SubscriptionError,
    each problem naming the file."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
            text = file.read().decode('utf-8')
        document = json.loads(text)
    except (OSError, UnicodeDecodeError, BeamIOError) as error:
        raise SubscriptionError([f'{path}: cannot read the subscriptions: {error}']) from None
    except ValueError as error:
        raise SubscriptionError([f'{path}: the subscriptions are not JSON: {error}']) from None
    try:
        return segment_mapping(document)
    except SubscriptionError as error:
        raise SubscriptionError([f'{path}: {problem}' for problem in error.problems]) from None


def _route(subscription: Subscription) -> Route:
    resolve = (map_contact_subscription if subscription.action is CREATE_OR_UPDATE_CONTACT
               else map_event_subscription)
    return fql_route(str(subscription), subscription.trigger, subscription.condition,
                     subscription.action.kind, resolve, subscription, subscription.id)


def map_contact_subscription(event: ParsedEvent, subscription: Subscription,
                             require_user_id: bool = False, key_id: str = '') -> MappedRequest:
    """A call -> the contact upsert of a createOrUpdateContact subscription.
    Raises Rejected: action_refused (Segment's refusal, its message),
    missing_user_id, missing_identity, invalid_email, value_too_long."""
    payload = _payload(subscription, event)
    custom = payload.get('customAttributes')
    if not isinstance(custom, dict):
        custom = {}
    fields = {name: payload[name] if name in payload else custom.get(name)
              for name in _FIELD_ORDER}
    if not fields[MAILING_LISTS]:
        fields[MAILING_LISTS] = custom.get(MAILING_LISTS)
    email = payload['email'] if 'email' in payload else _present(custom.get('email'))
    user_id = checked_user_id(event, payload.get('userId'), require_user_id)
    return contact_request(event, user_id, email, fields, custom, CUSTOM_ATTRIBUTES,
                           VALUE_RULES)


def map_event_subscription(event: ParsedEvent, subscription: Subscription,
                           require_user_id: bool = False, key_id: str = '') -> MappedRequest:
    """A call -> the event send of a sendEvent subscription. Raises Rejected:
    action_refused (Segment's refusal, its message), missing_event_name,
    colon_in_event_name, missing_user_id, missing_identity, invalid_email,
    value_too_long."""
    payload = _payload(subscription, event)
    name = checked_event_name(event, payload.get('eventName'), None, 'eventName')
    user_id = checked_user_id(event, payload.get('userId'), require_user_id)
    return event_request(event, name, user_id, payload.get('email'),
                         payload.get('eventProperties'), payload.get('contactProperties'),
                         True, None, VALUE_RULES, key_id)


def _payload(subscription: Subscription, event: ParsedEvent) -> dict:
    try:
        return action_payload(subscription, event.data)
    except (MappingKitError, PayloadValidationError) as error:
        raise Rejected('action_refused', str(error)) from None


def _present(value: Any) -> Any:
    """A custom attribute's email, None when blank (forms send "" for an unknown email)."""
    return None if isinstance(value, str) and not value.strip() else value
