"""Segment's "Loops (Actions)" destination: its two actions as data, and the
request each one's `perform` makes of a payload.

From segmentio/action-destinations at 970a17e,
packages/destination-actions/src/destinations/loops/ (createOrUpdateContact/
and sendEvent/index.ts: fields, defaults, perform; metadata.json agrees):

- createOrUpdateContact (default trigger `type = "identify"`):
  PUT /v1/contacts/update with `{...customAttributes, ...the other fields,
  mailingLists}`: the custom attributes (all traits, by default) come first
  and the mapped fields overwrite them; the mailing lists are the field's if it
  has any, else the custom attributes' `mailingLists`, keeping only true/false
  and "true"/"false"; `mailingLists` is always sent, `{}` when there are none.
- sendEvent (default trigger `type = "track"`):
  POST /v1/events/send with `{email, eventName, userId, eventProperties,
  ...contactProperties}`: contact properties come last and overwrite the rest.

A body's top-level keys are in the order JSON.stringify would write them.
"""
from dataclasses import dataclass, field
from typing import Any, Callable

from transforms.core.javascript import property_order
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND, MAILING_LISTS, RequestKind
from transforms.mapping.actions_core import ActionField, PayloadSchema

# Segment's URLs are https://app.loops.so/api/v1/...; the kinds' paths start at /v1.
LOOPS_API = 'https://app.loops.so/api'

_MISSING = object()


@dataclass(frozen=True)
class LoopsAction:
    """One action of the destination: what a subscription of it maps, and the request it makes."""

    slug: str
    title: str
    default_trigger: str
    fields: tuple[ActionField, ...]
    kind: RequestKind
    # Segment's perform: the body of the request for a prepared payload.
    body: Callable[[dict], dict]
    schema: PayloadSchema = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'schema', PayloadSchema(self.fields))

    def default_mapping(self) -> dict:
        """The mapping Segment's UI fills in for a new subscription of this action."""
        return {item.name: item.default for item in self.fields if item.default is not None}


def _if_exists(path: str, otherwise: Any) -> dict:
    return {'@if': {'exists': {'@path': path}, 'then': {'@path': path}, 'else': otherwise}}


def _contact_body(payload: dict) -> dict:
    custom = payload.get('customAttributes')
    lists = payload.get(MAILING_LISTS)
    if not lists and custom is not None and MAILING_LISTS in custom:
        lists = custom[MAILING_LISTS]
    body = {key: value for key, value in (custom or {}).items() if key != MAILING_LISTS}
    body.update((key, value) for key, value in payload.items()
                if key not in ('customAttributes', MAILING_LISTS))
    body[MAILING_LISTS] = _true_or_false(lists)
    return _in_js_order(body)


def _true_or_false(lists: Any) -> dict:
    """Segment's filterMailingLists: true/false and "true"/"false" kept as booleans, the rest dropped.

    It walks its argument with for...in, so a list gives its indexes as keys;
    a string's characters are never "true" or "false" and a number has no keys.
    """
    if isinstance(lists, dict):
        pairs = [(key, lists[key]) for key in property_order(lists)]
    elif isinstance(lists, list):
        pairs = [(str(index), value) for index, value in enumerate(lists)]
    else:
        return {}
    kept = {}
    for key, value in pairs:
        if isinstance(value, bool):
            kept[key] = value
        elif value in ('true', 'false'):
            kept[key] = value == 'true'
    return kept


def _event_body(payload: dict) -> dict:
    body = {name: payload.get(name, _MISSING) for name in ('email', 'eventName', 'userId', 'eventProperties')}
    body.update(payload.get('contactProperties') or {})
    # JSON.stringify leaves out the keys whose value is undefined.
    return _in_js_order({key: value for key, value in body.items() if value is not _MISSING})


def _in_js_order(body: dict) -> dict:
    return {key: body[key] for key in property_order(body)}


_USER_ID = ActionField('userId', 'User ID', 'string', 'User ID for the contact.', required=True,
                       format='text', default={'@path': '$.userId'})

CREATE_OR_UPDATE_CONTACT = LoopsAction(
    slug='createOrUpdateContact',
    title='Create or update a contact',
    default_trigger='type = "identify"',
    fields=(
        ActionField('createdAt', 'Contact Created Date', 'datetime', 'Date the contact was created.',
                    format='date-time'),
        ActionField('customAttributes', 'Custom Contact Attributes', 'object',
                    'Contact attributes maintained by your team.', default={'@path': '$.traits'}),
        ActionField('email', 'Contact Email', 'string',
                    'Email address for the contact. This is required when creating new contacts.',
                    format='email', default=_if_exists('$.traits.email', {'@path': '$.email'})),
        ActionField('firstName', 'First Name', 'string', "The contact's given name.",
                    default={'@path': '$.traits.firstName'}),
        ActionField('lastName', 'Last Name', 'string', "The contact's surname.",
                    default={'@path': '$.traits.lastName'}),
        ActionField(MAILING_LISTS, 'Mailing Lists', 'object',
                    'Key-value pairs of mailing list IDs and a boolean denoting if the contact should be '
                    'added (true) or removed (false) from the list.'),
        ActionField('source', 'Source', 'string', "The contact's source.",
                    default=_if_exists('$.traits.source', 'Segment')),
        ActionField('subscribed', 'Subscribed', 'boolean', 'Whether the contact is subscribed to email.'),
        ActionField('userGroup', 'User Group', 'string', "The contact's user group.",
                    default={'@path': '$.traits.userGroup'}),
        _USER_ID,
    ),
    kind=CONTACT_UPSERT,
    body=_contact_body,
)

SEND_EVENT = LoopsAction(
    slug='sendEvent',
    title='Send Event',
    default_trigger='type = "track"',
    fields=(
        ActionField('email', 'Contact Email', 'string', 'Email address for the contact.', format='email',
                    default=_if_exists('$.properties.email', {'@path': '$.context.traits.email'})),
        ActionField('eventName', 'Event Name', 'string', 'Name of the event.', required=True,
                    default={'@path': '$.event'}),
        _USER_ID,
        ActionField('contactProperties', 'Contact Properties', 'object',
                    "Optional properties that will be updated on the event's contact."),
        ActionField('eventProperties', 'Event Properties', 'object',
                    'Event-specific properties that can be included in emails triggered by this event.',
                    default={'@path': '$.properties'}),
    ),
    kind=EVENT_SEND,
    body=_event_body,
)

LOOPS_ACTIONS = {action.slug: action for action in (CREATE_OR_UPDATE_CONTACT, SEND_EVENT)}
