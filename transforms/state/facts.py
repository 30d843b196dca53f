"""The sync state's facts: what this tool delivered to Loops, as digests.

A contact's facts are a contact state (transforms/contacts/model.py) whose
values are digests: property -> (stamp, digest of the value delivered),
plus the set of its delivered events' key digests. Facts fold with the
contact model's own `merge` (per property the later stamp wins) and a set
union, so facts written twice, in any order or grouping, fold to the same.

What is stored holds no personal data but the contact's identity, and that
only as a digest: a contact key ('user:<userId>', 'email:<address>') is
kept as BLAKE2b-128 of its text (the join only needs equality), values as
BLAKE2b-64 of their type and text (only "changed or not" is asked of them),
and events as BLAKE2b-128 of their Idempotency-Key. Property names, stamps
(event and receive times, the Segment messageId) and list ids are kept as
they are: they order changes and name what changed.

A property is sent again when its value differs from the one delivered and
its stamp is not older (`changed_properties`): a later delivery (e.g. by the
stream) is never overwritten by an older value; an equal stamp with another
value (the mapping changed) is sent.

An event Loops refused (a 4xx: it may have spent the event's key) leaves a
refusal: the digest of its key and when it was refused. A later run sends
the event again under a key derived from both (`resend_after_refusal`,
transforms/contacts/ordering.py), never under the spent one, which the
stricter Loops would answer 409 as if it had been delivered. Folding keeps
each key's latest refusal, and forgets those of events delivered since.

A deletion (`segment-loops delete`, or a stream's delete message) leaves a
tombstone: `deleted`, the stamp of the deletion. Folding forgets every
property fact stamped at or before it (Loops no longer holds those values),
and keeps the tombstone, so that data from before the deletion is never
sent again (`changes_after_deletion`) while data from after it is sent as
for a contact never seen.
"""
from typing import Iterable, NamedTuple, Optional

from transforms.contacts.model import ContactState, merge_into, state_of
from transforms.core.digests import contact_digest, key_digest, value_digest
from transforms.core.kinds import kind_named
from transforms.core.records import LoopsRequest

IDENTITY_KEYS = ('userId', 'email')


class Facts(NamedTuple):
    """One contact's delivered facts: property -> (stamp tuple, value digest),
    the digests of its delivered events' keys, the stamp of its latest
    deletion (None when it was never deleted), and its refused events:
    (key digest, when Loops refused it in epoch ms) pairs."""
    properties: dict
    events: frozenset = frozenset()
    deleted: Optional[tuple] = None
    refused: frozenset = frozenset()


NO_FACTS = Facts({}, frozenset())


def fold(facts: Iterable[Facts]) -> Facts:
    """Facts of one contact, from any number of records, in any order -> one:
    the latest tombstone, and the property facts stamped after it; each
    event key's latest refusal, unless the event was delivered since."""
    properties, events, deleted, refused = {}, set(), None, {}
    for fact in facts:
        merge_into(properties, fact.properties)
        events.update(fact.events)
        if fact.deleted is not None and (deleted is None or fact.deleted > deleted):
            deleted = fact.deleted
        for key, refused_ms in fact.refused:
            if refused_ms > refused.get(key, -1):
                refused[key] = refused_ms
    if deleted is not None:
        properties = {key: entry for key, entry in properties.items() if entry[0] > deleted}
    return Facts(properties, frozenset(events), deleted,
                 frozenset((key, ms) for key, ms in refused.items() if key not in events))


def changes_after_deletion(contact: str, state: ContactState, deleted: tuple) -> ContactState:
    """The part of a contact's state set after its deletion at `deleted`
    (stamps later than it). When anything is left, the property that
    identifies the contact goes with it, stamped as the latest change left:
    a contact is sent with its id, and a tombstone never forgets that fact."""
    kept = {key: entry for key, entry in state.items() if entry[0] > deleted}
    identity = identity_key(contact)
    if kept and identity not in kept and identity in state:
        kept[identity] = (max(stamp for stamp, _ in kept.values()), state[identity][1])
    return kept


def digests_of(state: ContactState) -> dict:
    """A contact state -> its facts' properties: each value as its digest."""
    return {key: (tuple(stamp), value_digest(value)) for key, (stamp, value) in state.items()}


def changed_properties(state: ContactState, delivered: dict) -> ContactState:
    """The part of `state` to send, given the `delivered` facts' properties:
    each property whose value differs from the one delivered and whose stamp
    is not older than the delivered one's."""
    changed = {}
    for key, entry in state.items():
        fact = delivered.get(key)
        if fact is None or (entry[0] >= fact[0] and value_digest(entry[1]) != fact[1]):
            changed[key] = entry
    return changed


def identity_key(contact: str) -> str:
    """The property that identifies a contact in an update: userId, or the
    email of a contact known only by its email."""
    return 'email' if contact.startswith('email:') else 'userId'


def delivered_state(request: LoopsRequest) -> ContactState:
    """The contact properties a delivered request set, each at its own stamp
    (`request.stamps`, else the request's stamp): an upsert's body; an event's
    contact properties (not its own fields, nor the userId and email that
    only find its contact)."""
    kind = kind_named(request.kind)
    body = request.body
    if not kind.mergeable:
        body = {key: value for key, value in body.items()
                if key not in kind.own_fields and key not in IDENTITY_KEYS}
    state = state_of(body, request.stamp)
    stamps = request.stamps
    if stamps:
        for key, entry in state.items():
            stamp = stamps.get(key)
            if stamp is not None:
                state[key] = (tuple(stamp), entry[1])
    return state


def facts_of_request(request: LoopsRequest) -> Optional[tuple]:
    """(contact digest, Facts, event day ms or None) that a delivered request
    adds to the state; None when it adds nothing. A deletion adds its
    tombstone."""
    if kind_named(request.kind).removes_contact:
        return contact_digest(request.contact), Facts({}, deleted=tuple(request.stamp)), None
    properties = digests_of(delivered_state(request))
    key = request.state_key
    if key is None:
        if not properties:
            return None
        return contact_digest(request.contact), Facts(properties), None
    return (contact_digest(request.contact),
            Facts(properties, frozenset((key_digest(key),))), request.stamp.event_ms)


def refusal_of_request(request: LoopsRequest, refused_ms: int) -> Optional[tuple]:
    """(contact digest, Facts, event day ms) of an event send Loops refused
    at `refused_ms`; None for a request without a key (only a keyed request's
    key can be spent)."""
    key = request.state_key
    if key is None:
        return None
    return (contact_digest(request.contact),
            Facts({}, refused=frozenset(((key_digest(key), refused_ms),))),
            request.stamp.event_ms)


def to_record(contact: bytes, facts: Facts) -> dict:
    """Facts -> one record of schemas/sync_state.avsc (stamps stored once each)."""
    stamp_index, stamps, properties = {}, [], []
    for key, (stamp, digest) in facts.properties.items():
        index = stamp_index.get(stamp)
        if index is None:
            index = stamp_index[stamp] = len(stamps)
            stamps.append({'event_ms': stamp[0], 'received_ms': stamp[1],
                           'message_id': stamp[2]})
        if type(key) is tuple:
            properties.append({'name': key[0], 'list_id': key[1], 'stamp': index,
                               'digest': digest})
        else:
            properties.append({'name': key, 'list_id': None, 'stamp': index, 'digest': digest})
    deleted = facts.deleted
    if deleted is not None:
        deleted = {'event_ms': deleted[0], 'received_ms': deleted[1], 'message_id': deleted[2]}
    return {'contact': contact, 'stamps': stamps, 'properties': properties,
            'events': sorted(facts.events), 'deleted': deleted,
            'refused_events': [{'key': key, 'refused_ms': refused_ms}
                               for key, refused_ms in sorted(facts.refused)]}


def from_record(record: dict) -> tuple:
    """A record of schemas/sync_state.avsc -> (contact digest, Facts)."""
    stamps = [(s['event_ms'], s['received_ms'], s['message_id']) for s in record['stamps']]
    properties = {}
    for fact in record['properties']:
        list_id = fact['list_id']
        key = fact['name'] if list_id is None else (fact['name'], list_id)
        properties[key] = (stamps[fact['stamp']], fact['digest'])
    # Files written before tombstones, or refusals, existed have no such field.
    deleted = record.get('deleted')
    if deleted is not None:
        deleted = (deleted['event_ms'], deleted['received_ms'], deleted['message_id'])
    refused = frozenset((item['key'], item['refused_ms'])
                        for item in record.get('refused_events') or ())
    return record['contact'], Facts(properties, frozenset(record['events']), deleted, refused)
