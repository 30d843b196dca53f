"""Coalescing one contact's upserts into a single `PUT /v1/contacts/update`.

Loops has no batch endpoint, so the only way to move a backfill faster than
the rate limit is to send fewer requests. A contact update merges into what
Loops holds (absent keys are left alone), so a contact's updates, applied in
order, can be folded into one body that leaves Loops in the same state.
"""
from typing import Iterable

from transforms.records import CONTACT_UPDATE_PATH, LoopsRequest, contact_upsert

MAILING_LISTS = 'mailingLists'


def merge_contact_bodies(bodies: Iterable[dict]) -> dict:
    """Folds contact update bodies, in the order given, into one body.

    Later values win; an explicit null is kept (it resets the property); a key
    absent from a later body keeps its earlier value; `mailingLists` merge per
    list id (later wins per list). The inputs are not changed.
    """
    merged = {}
    for body in bodies:
        for key, value in body.items():
            if key == MAILING_LISTS and isinstance(value, dict):
                earlier = merged.get(key)
                # Always a new dict, so that merging later lists never
                # changes an input body.
                merged[key] = {**earlier, **value} if isinstance(earlier, dict) else dict(value)
            else:
                merged[key] = value
    return merged


def coalesce_upserts(requests: Iterable[LoopsRequest]) -> LoopsRequest:
    """One contact's upserts -> one upsert with the same final effect.

    Sorts the requests by `.order` (event time), merges their bodies, and keeps
    the last request's order and contact; the source is the comma-joined
    sources (message ids) of all of them. Raises ValueError for no requests
    or for a request that is not a contact update.
    """
    ordered = sorted(requests, key=lambda request: request.order)
    if not ordered:
        raise ValueError('coalesce_upserts needs at least one request')
    for request in ordered:
        if request.path != CONTACT_UPDATE_PATH:
            raise ValueError(f'only contact updates can be coalesced, not {request.path}')
    last = ordered[-1]
    return contact_upsert(merge_contact_bodies(request.body for request in ordered),
                          last.contact, last.order,
                          ','.join(request.source for request in ordered if request.source))
