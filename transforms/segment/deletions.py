"""Segment's user-deletion requests -> deletions of Loops contacts.

Segment deletes a user by userId (a regulation of type SUPPRESS_WITH_DELETE
or DELETE_ONLY) and forwards the request to the destinations that support
deletion as a sixth message type (segment-docs,
src/partners/subscriptions/build-functions.md, "Handling deletions"):

    {"type": "delete", "userId": "5678", "messageId": "delete-022bb90c-...",
     "context": [], "integrations": [], "timestamp": "2019-02-19T23:58:54.387Z", ...}

The Webhooks destination documents the short form {"type": "delete",
"userId": ..., "timestamp": ...} (src/connections/destinations/catalog/
webhooks/index.md, "Delete"). Only the userId and the times are read, as
Segment's own Loops destination reads only the userId.

- `deletion_of_event`: such a message, parsed -> its contact's deletion,
  dated by the message's own time (the stamp its tombstone keeps).
- `deletion_of_line`: one line of a deletion file (`segment-loops delete`):
  a userId, an email (a line with an `@`), or a delete message as JSON;
  None for a blank line. Raises Rejected (see its reasons) for the rest.
"""
import re
from typing import Optional

from transforms.core.records import LoopsRequest, Stamp, contact_delete
from transforms.core.text import preview
from transforms.segment.parse import ParsedEvent, Rejected, parse_event

DELETE_TYPE = 'delete'
# The shape the mapper asks of an email: one @, a dot in the domain, no spaces.
_EMAIL = re.compile(r'[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+')
_SPACE = re.compile(r'\s')


def deletion_of_event(event: ParsedEvent, now_ms: int) -> LoopsRequest:
    """A parsed delete message -> the deletion of its userId's contact,
    stamped with the message's stamp, or with `now_ms` when the message has
    no time. Raises Rejected('missing_user_id'): Segment deletes by userId."""
    if event.user_id is None:
        raise Rejected('missing_user_id', 'the delete message has no userId (Segment deletes '
                                          'users by userId)')
    stamp = event.stamp
    if not stamp.event_ms:
        stamp = Stamp(now_ms, now_ms, event.message_id)
    return contact_delete(event.user_id, None, stamp, event.source)


def deletion_of_line(item, where: str, now_ms: int) -> Optional[LoopsRequest]:
    """One line of a deletion file (bytes, or an Avro event dict) -> the
    deletion it asks for, dated `now_ms` unless it is a delete message with
    a time of its own; None for a blank line.

    Raises Rejected: invalid_utf8, not_one_id (a line with spaces inside),
    invalid_email (an @ but not an address), not_a_deletion (JSON that is
    not a delete message), missing_user_id, and parse_event's reasons for a
    JSON line (invalid_json, not_an_object, missing_type, unknown_type, ...).
    """
    if isinstance(item, dict):
        return _deletion_of_message(item, where, now_ms)
    try:
        text = item.decode('utf-8') if isinstance(item, bytes) else item
    except UnicodeDecodeError:
        raise Rejected('invalid_utf8', 'the line is not UTF-8 text') from None
    text = text.strip()
    if not text:
        return None
    if text.startswith('{'):
        return _deletion_of_message(text, where, now_ms)
    if _SPACE.search(text):
        raise Rejected('not_one_id', f'{preview(text)}: a line holds one userId or email, '
                                     'without spaces (write a userId with spaces as a delete '
                                     'message: {"type": "delete", "userId": ...})')
    now = Stamp(now_ms, now_ms, '')
    if '@' in text:
        if not _EMAIL.fullmatch(text):
            raise Rejected('invalid_email', f'{preview(text)} has an @ but is not an email '
                                            'address (write a userId with an @ as a delete '
                                            'message: {"type": "delete", "userId": ...})')
        return contact_delete(None, text, now, where)
    return contact_delete(text, None, now, where)


def _deletion_of_message(raw, where: str, now_ms: int) -> LoopsRequest:
    event = parse_event(raw, where)
    if event.type != DELETE_TYPE:
        raise Rejected('not_a_deletion', f'a JSON line must be a Segment delete message '
                                         f'(type "delete"), not a {event.type} call')
    return deletion_of_event(event, now_ms)
