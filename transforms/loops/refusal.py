"""A refused part costs only itself: which part of a request Loops refused.

A merged contact upsert carries every update of a contact at once. When
Loops refuses it (400) because of one property or one mailing list, the
message names it (`Invalid value for "bio": ...`, `"id" is a reserved name
...`, `Invalid property name "".`, `Unknown mailing list id: list_x.`).
`refused_part` finds that part in the body, `split_off` cuts the request in
two: the rest, which the writer sends once more, and the part alone (with
the contact's userId and email), which becomes its own failure record.
The contact's identity (userId, email) is never split off: a message that
names it refuses the whole request.
"""
import dataclasses
import re
from typing import NamedTuple, Optional, Tuple

from transforms.core.kinds import MAILING_LISTS
from transforms.core.records import LoopsRequest

# The Loops API's field names.
IDENTITY_KEYS = ('userId', 'email')

_QUOTED = re.compile(r'"([^"]*)"')
_MAILING_LIST_ID = re.compile(r'mailing list id:?\s*(\S+)', re.IGNORECASE)


class RefusedPart(NamedTuple):
    """A top-level body key, or (`list_id` set) one entry of `mailingLists`."""
    key: str
    list_id: Optional[str] = None


def refused_part(message: Optional[str], body: dict) -> Optional[RefusedPart]:
    """The part of `body` Loops' `message` names, or None when it names
    nothing in the body (or only the contact's identity)."""
    if not message:
        return None
    lists = body.get(MAILING_LISTS)
    listed = _MAILING_LIST_ID.search(message)
    if listed and isinstance(lists, dict):
        list_id = listed.group(1).strip('"\'').rstrip('.,;:')
        if list_id in lists:
            return RefusedPart(MAILING_LISTS, list_id)
    for name in _QUOTED.findall(message):
        if name in body and name not in IDENTITY_KEYS:
            return RefusedPart(name)
    return None


def split_off(request: LoopsRequest, part: RefusedPart) -> Tuple[LoopsRequest, LoopsRequest]:
    """`request` -> (the request without `part`, a request of `part` alone
    plus the contact's userId and email). Neither changes `request`."""
    rest = dict(request.body)
    alone = {key: rest[key] for key in IDENTITY_KEYS if key in rest}
    if part.list_id is None:
        alone[part.key] = rest.pop(part.key)
    else:
        lists = dict(rest.pop(MAILING_LISTS))
        alone[MAILING_LISTS] = {part.list_id: lists.pop(part.list_id)}
        if lists:
            rest[MAILING_LISTS] = lists
    return (dataclasses.replace(request, body=rest),
            dataclasses.replace(request, body=alone))
