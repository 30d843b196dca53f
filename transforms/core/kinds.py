"""The kinds of request this tool makes to Loops, described as data.

Grouping, merging, ordering, writing, replaying and the dry run all read
these fields instead of testing paths: adding an endpoint is a new row here,
its mapping (transforms/mapping/mapper.py) and its rules in the local sandbox.

- `phase`: the write order. Every request of a phase is delivered before
  the next phase starts (an event that names its contact only by userId
  must not overtake the upsert that creates the contact). None for a kind
  that is never written in phases: a deletion is sent by
  `segment-loops delete` on its own, and in a stream between the contact's
  other requests by stamp (see `removes_contact`).
- `mergeable`: several requests of one contact fold into one, property by
  property, the latest value winning (transforms/contacts/model.py).
- `idempotent`: sending it twice leaves Loops as sending it once. A kind
  that is not carries an `Idempotency-Key` derived from the Segment
  messageId, and a 409 on that key means "delivered before".
- `own_fields`: body keys that belong to the request itself rather than to
  the contact (an event's name and properties); every other key is a
  contact field or property, fitted to the account like any other.
- `removes_contact`: the contact is gone once it is delivered. A 404 (no
  such contact) then means what it asks for is already so: the outcome
  `already_gone`, not a failure. A contact's other requests are never
  merged across it, but sent before or after it by their stamps; the sync
  state records it as a tombstone; `segment-loops replay` never sends one
  (a failure record is data anyone with access to its bucket can edit).
"""
from dataclasses import dataclass, field
from typing import Optional

JSON_HEADERS = {'Content-Type': 'application/json'}
IDEMPOTENCY_HEADER = 'Idempotency-Key'
# The body field of a contact's mailing-list subscriptions, on every kind that takes them.
MAILING_LISTS = 'mailingLists'


@dataclass(frozen=True)
class RequestKind:
    """One Loops endpoint this tool writes to, and how its requests behave."""
    name: str
    method: str
    path: str
    phase: Optional[int]
    mergeable: bool
    idempotent: bool
    own_fields: frozenset = field(default=frozenset())
    removes_contact: bool = False

    @property
    def keyed(self) -> bool:
        """Whether requests of this kind carry an Idempotency-Key."""
        return not self.idempotent

    def headers(self, idempotency_key: Optional[str] = None) -> dict:
        """The headers this tool sets on a request of this kind (never others)."""
        headers = dict(JSON_HEADERS)
        if self.keyed:
            if not idempotency_key:
                raise ValueError(f'a {self.name} request needs an Idempotency-Key')
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        return headers


CONTACT_UPSERT = RequestKind('contact_upsert', 'PUT', '/v1/contacts/update',
                             phase=0, mergeable=True, idempotent=True)
EVENT_SEND = RequestKind('event_send', 'POST', '/v1/events/send',
                         phase=1, mergeable=False, idempotent=False,
                         own_fields=frozenset({'eventName', 'eventProperties'}))

# Sent as Loops documents the endpoint: exactly one of `userId` or `email`,
# a string. (Segment's own destination sends {"userId": [<userId>]}, an array
# Loops does not document.) Deleting twice leaves Loops as deleting once.
CONTACT_DELETE = RequestKind('contact_delete', 'POST', '/v1/contacts/delete',
                             phase=None, mergeable=False, idempotent=True,
                             removes_contact=True)

KINDS = {kind.name: kind for kind in (CONTACT_UPSERT, EVENT_SEND, CONTACT_DELETE)}
PHASES = tuple(sorted({kind.phase for kind in KINDS.values() if kind.phase is not None}))


def kind_named(name: str) -> RequestKind:
    """The kind called `name`; KeyError for an unknown one."""
    return KINDS[name]


def kind_for(method: str, path: str) -> Optional[RequestKind]:
    """The kind of a request given by method and path, or None when this tool
    never makes such a request (replay sends nothing else)."""
    for kind in KINDS.values():
        if kind.method == method and kind.path == path:
            return kind
    return None


def kinds_in_phase(phase: int) -> tuple:
    """The names of the kinds written in `phase`."""
    return tuple(kind.name for kind in KINDS.values() if kind.phase == phase)
