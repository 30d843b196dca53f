"""The records that flow between steps: raw events, Loops requests, failure records.

A `LoopsRequest` is everything needed to make one call to Loops, plus what the
pipeline needs to order and shard it (the contact it belongs to and its
event-time `Stamp`). Its `kind` (transforms/core/kinds.py) says how it is sent,
merged and ordered. `to_dict()` is the exact request as the dry run writes it
and as failure records carry it (with the fallback email of an event send,
which is sent only if Loops does not know the event's userId); `from_dict()`
reads one back (replay), and accepts only the requests this tool itself makes.
"""
import dataclasses
import hashlib
import pickle
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from schemas import load_schema
from transforms.core.kinds import (CONTACT_DELETE, CONTACT_UPSERT, EVENT_SEND, IDEMPOTENCY_HEADER,
                                   RequestKind, kind_for, kind_named)
from transforms.core.text import compact_json

# The failure stages, from schemas/failure.avsc alone.
STAGES = tuple(next(field['type']['symbols'] for field in load_schema('failure')['fields']
                    if field['name'] == 'stage'))
MAX_RESPONSE_BODY = 2000
MAX_SOURCE = 1000
# The key of an event send's fallback email beside its request, in the dry
# run's lines and in failure records.
FALLBACK_EMAIL = 'fallback_email'


class Stamp(NamedTuple):
    """When a change happened, as a total order: the event time, then
    Segment's receive time, then the messageId (unknown times are 0, so they
    sort first). Of two values of one property, the later stamp wins."""
    event_ms: int
    received_ms: int
    message_id: str


NO_STAMP = Stamp(0, 0, '')


class RawEvent(NamedTuple):
    """One event as a reader found it: a line (str or bytes), an Avro event
    dict, or an UndecodableEvent; `source` is the file or Pub/Sub message id,
    `line` its 1-based line or record number (0 when it has none)."""
    source: str
    line: int
    data: Any

    @property
    def where(self) -> str:
        """'path:line' (or the source alone), for failure records."""
        return f'{self.source}:{self.line}' if self.line else self.source


@dataclass(frozen=True)
class LoopsRequest:
    """One call to Loops. `kind` names a RequestKind; `headers` are exactly
    the ones sent (Content-Type, and the Idempotency-Key of keyed kinds).
    `stamps`: when the body's properties were set one by one (a merged
    upsert), property -> stamp tuple, for the sync state to record each
    property's own; None (the default) when `stamp` dates the whole body.
    Never sent. `fallback_email`: of an event send that names its contact
    by userId, the email its call carried, left out of the body (see
    `event_send`) and sent only when Loops answers that it has no contact
    of that userId (transforms/delivery/in_flight.py). `own_key`: of an
    event send under a key derived from its own (an event Loops refused in
    an earlier run, sent again), its own key, which the sync state knows it
    by; None otherwise. Never sent."""
    kind: str
    body: dict
    headers: dict
    contact: str = ''
    stamp: Stamp = NO_STAMP
    source: str = ''
    stamps: Optional[dict] = None
    fallback_email: Optional[str] = None
    own_key: Optional[str] = None

    @property
    def spec(self) -> RequestKind:
        return kind_named(self.kind)

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def path(self) -> str:
        return self.spec.path

    @property
    def idempotency_key(self) -> Optional[str]:
        return self.headers.get(IDEMPOTENCY_HEADER)

    @property
    def state_key(self) -> Optional[str]:
        """The key the sync state records this request by: its own key, even
        when it is sent under a derived one."""
        return self.own_key or self.idempotency_key

    def to_dict(self) -> dict:
        """The request exactly as sent (without the Authorization header),
        and its `fallback_email` when it has one."""
        sent = {'method': self.method, 'path': self.path,
                'headers': self.headers, 'body': self.body}
        if self.fallback_email is not None:
            sent[FALLBACK_EMAIL] = self.fallback_email
        return sent

    def with_fallback_email(self) -> 'LoopsRequest':
        """The event send as it goes out when Loops does not know its userId:
        its fallback email in the body (and none kept aside)."""
        if self.fallback_email is None:
            raise ValueError('the request has no fallback email')
        return dataclasses.replace(self, body={**self.body, 'email': self.fallback_email},
                                   fallback_email=None)

    def to_json(self) -> str:
        """The request as one line of JSON, keys sorted (the dry run's lines)."""
        return compact_json(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = '') -> 'LoopsRequest':
        """A request as to_dict() wrote it -> LoopsRequest, if it is one this
        tool makes: a known method and path, a JSON object body, and only the
        headers this tool sets. Raises ValueError otherwise (a failure record
        is data anyone with access to its bucket can edit)."""
        if not isinstance(d, dict):
            raise ValueError('a request is a JSON object')
        kind = kind_for(d.get('method'), d.get('path'))
        if kind is None:
            raise ValueError(f'{d.get("method")!r} {d.get("path")!r} is not a request '
                             'this tool makes')
        body = d.get('body')
        if not isinstance(body, dict):
            raise ValueError('the request body is not a JSON object')
        headers = d.get('headers') or {}
        key = headers.get(IDEMPOTENCY_HEADER) if isinstance(headers, dict) else None
        if not isinstance(key, (str, type(None))):
            raise ValueError('the Idempotency-Key is not text')
        # Rebuilt from the kind: any other header in the record is not sent.
        headers = kind.headers(key)
        user_id, email = body.get('userId'), body.get('email')
        if not isinstance(user_id, str) and not isinstance(email, str):
            raise ValueError('the request names no contact (no userId or email)')
        contact = contact_key(user_id if isinstance(user_id, str) else None,
                              email if isinstance(email, str) else None)
        return cls(kind.name, body, headers, contact, NO_STAMP, source,
                   fallback_email=_fallback_email_of(d, kind, body))


def _fallback_email_of(d: dict, kind: RequestKind, body: dict) -> Optional[str]:
    """The fallback email of a request as to_dict() wrote it: text, and only
    on an event send that names its contact by userId and not by email."""
    fallback = d.get(FALLBACK_EMAIL)
    if fallback is None:
        return None
    if not isinstance(fallback, str) or not fallback:
        raise ValueError('the fallback email is not text')
    if kind is not EVENT_SEND or 'email' in body or not isinstance(body.get('userId'), str):
        raise ValueError('only an event send by userId alone has a fallback email')
    return fallback


# LoopsRequest's fields in declaration order, so encoding and decoding can't
# drift apart when a field is added.
_REQUEST_FIELDS = tuple(field.name for field in dataclasses.fields(LoopsRequest))


def encode_request(request: LoopsRequest) -> bytes:
    """A request as the bytes a shuffle carries: its fields, pickled (the
    stamp as a plain tuple, which pickles smaller). Beam's local runner
    keeps every shuffled value in memory and re-encodes it; bytes cost least
    on both counts."""
    fields = {name: getattr(request, name) for name in _REQUEST_FIELDS}
    fields['stamp'] = tuple(request.stamp)
    return pickle.dumps(tuple(fields.values()), pickle.HIGHEST_PROTOCOL)


def decode_request(encoded: bytes) -> LoopsRequest:
    """The request that encode_request encoded."""
    fields = dict(zip(_REQUEST_FIELDS, pickle.loads(encoded)))
    fields['stamp'] = Stamp(*fields['stamp'])
    return LoopsRequest(**fields)


def contact_upsert(body: dict, contact: str, stamp: Stamp, source: str) -> LoopsRequest:
    return LoopsRequest(CONTACT_UPSERT.name, body, CONTACT_UPSERT.headers(), contact,
                        stamp, source)


def event_send(body: dict, contact: str, stamp: Stamp, source: str,
               idempotency_key: str) -> LoopsRequest:
    """An event send. A body with both a userId and an email goes without
    its email, kept as the request's `fallback_email`: Loops sets the email
    of the contact a userId finds to the email sent with it (OAS 1520-1526),
    and an event's email is the one its call had then (older than the
    contact's latest, or, in Segment's default mapping, `properties.email`,
    which can be someone else's). It is sent only when Loops does not know
    the userId, so that the contact is still created."""
    fallback_email = None
    if 'userId' in body and 'email' in body:
        body = dict(body)
        fallback_email = body.pop('email')
    return LoopsRequest(EVENT_SEND.name, body, EVENT_SEND.headers(idempotency_key), contact,
                        stamp, source, fallback_email=fallback_email)


def contact_delete(user_id: Optional[str], email: Optional[str], stamp: Stamp,
                   source: str) -> LoopsRequest:
    """The deletion of a contact by exactly one of its ids, as Loops documents
    it (`{"userId": ...}` or `{"email": ...}`); `stamp` dates the deletion
    (the sync state's tombstone)."""
    if (user_id is None) == (email is None):
        raise ValueError('a deletion names its contact by exactly one of userId or email')
    body = {'userId': user_id} if user_id is not None else {'email': email}
    return LoopsRequest(CONTACT_DELETE.name, body, CONTACT_DELETE.headers(),
                        contact_key(user_id, email), stamp, source)


class ContactSequence(NamedTuple):
    """Requests of one contact, in the order they must be sent. A contact's
    events can come in several parts (a contact with more events than one
    part holds): part k is sent only after part k-1 is done."""
    contact: str
    requests: tuple
    part: int = 0


def contact_key(user_id: Optional[str], email: Optional[str]) -> str:
    """The key a contact's requests are grouped, ordered and sharded by:
    'user:<userId>', or 'email:<address in lower case>' for a contact known
    only by its email (Loops matches addresses case-insensitively)."""
    if user_id:
        return f'user:{user_id}'
    if email:
        return f'email:{email.lower()}'
    raise ValueError('a contact needs a userId or an email')


def idempotency_key_for(message_id: str) -> str:
    """A deterministic Idempotency-Key for one Segment message (<= 100 chars).

    A hash rather than the messageId itself: messageIds are arbitrary text,
    and the key must be the same whichever run or retry sends the event.
    """
    digest = hashlib.sha256(message_id.encode('utf-8', 'surrogatepass')).hexdigest()
    return f'segment-{digest}'


def derived_key(key: str, salt: str) -> str:
    """A new Idempotency-Key (72 characters) for a deliberate re-send of the
    event that carried `key`: the same for the same (key, salt), different
    from `key` and from any other salt's. Loops may spend a key on a request
    it refuses (assume the stricter server), so a refused event sent again
    needs a key of its own; a deterministic one, so that sending the same
    re-send twice (a retried bundle, a record replayed twice) is still safe."""
    digest = hashlib.sha256(f'{key}\x00{salt}'.encode('utf-8', 'surrogatepass')).hexdigest()
    return f'segment-{digest}'


def failure_record(stage: str, reason: str, message: str, *,
                   event: Optional[str] = None,
                   request: Optional[LoopsRequest] = None,
                   http_status: Optional[int] = None,
                   response_body: Optional[str] = None,
                   attempts: int = 0,
                   source: Optional[str] = None,
                   failed_at_ms: Optional[int] = None) -> dict:
    """One record of schemas/failure.avsc."""
    if stage not in STAGES:
        raise ValueError(f'unknown stage {stage!r}')
    if failed_at_ms is None:
        failed_at_ms = int(time.time() * 1000)
    if response_body is not None:
        response_body = response_body[:MAX_RESPONSE_BODY]
    return {
        'stage': stage,
        'reason': reason,
        'message': message,
        'event': event,
        'request': request.to_json() if request is not None else None,
        'http_status': http_status,
        'response_body': response_body,
        'attempts': attempts,
        'source': source[:MAX_SOURCE] if source else source,
        'failed_at': failed_at_ms,
    }
