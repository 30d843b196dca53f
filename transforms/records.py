"""The records that flow between steps: Loops requests and failure records.

A `LoopsRequest` is everything needed to make one call to Loops, plus what the
pipeline needs to order and shard it (the contact it belongs to and its
event-time order). `to_dict()` is the exact request as the dry run writes it and
as failure records carry it; `from_dict()` reads it back (replay).
"""
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

CONTACT_UPDATE_PATH = '/v1/contacts/update'
EVENT_SEND_PATH = '/v1/events/send'
JSON_HEADERS = {'Content-Type': 'application/json'}
IDEMPOTENCY_HEADER = 'Idempotency-Key'

STAGES = ('read', 'parse', 'map', 'deliver')
MAX_RESPONSE_BODY = 2000
MAX_SOURCE = 1000

# (event time ms, received time ms, messageId): the order in which a
# contact's updates apply. Unknown times are 0, so they sort first.
OrderKey = tuple


@dataclass(frozen=True)
class LoopsRequest:
    method: str
    path: str
    body: dict
    headers: dict = field(default_factory=lambda: dict(JSON_HEADERS))
    contact: str = ''
    order: OrderKey = (0, 0, '')
    source: str = ''

    @property
    def is_event(self) -> bool:
        return self.path == EVENT_SEND_PATH

    @property
    def idempotency_key(self) -> Optional[str]:
        return self.headers.get(IDEMPOTENCY_HEADER)

    def to_dict(self) -> dict:
        """The request exactly as sent (without the Authorization header)."""
        return {'method': self.method, 'path': self.path,
                'headers': self.headers, 'body': self.body}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = '') -> 'LoopsRequest':
        body = d['body']
        contact = body.get('userId') or body.get('email') or ''
        return cls(method=d['method'], path=d['path'], body=body,
                   headers=dict(d.get('headers') or JSON_HEADERS),
                   contact=str(contact), source=source)


def contact_upsert(body: dict, contact: str, order: OrderKey,
                   source: str) -> LoopsRequest:
    return LoopsRequest('PUT', CONTACT_UPDATE_PATH, body, dict(JSON_HEADERS),
                        contact, order, source)


def event_send(body: dict, contact: str, order: OrderKey, source: str,
               idempotency_key: str) -> LoopsRequest:
    headers = dict(JSON_HEADERS)
    headers[IDEMPOTENCY_HEADER] = idempotency_key
    return LoopsRequest('POST', EVENT_SEND_PATH, body, headers, contact,
                        order, source)


def idempotency_key_for(message_id: str) -> str:
    """A deterministic Idempotency-Key for one Segment message (<= 100 chars).

    A hash rather than the messageId itself: messageIds are arbitrary text,
    and the key must be the same whichever run or retry sends the event.
    """
    digest = hashlib.sha256(message_id.encode('utf-8')).hexdigest()
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


def json_text(value: Any) -> str:
    """Compact JSON of an already parsed event, for failure records."""
    return json.dumps(value, ensure_ascii=False, separators=(',', ':'), default=str)
