"""Deletions, piece by piece: what a deletion line or Segment delete message
becomes, what a 404 means for it, the sync state's tombstone, and how a
backfill, a stream batch and a stream's memory treat a deleted contact.
The command against the sandbox is in test_delete.py."""
import collections
import itertools
import json

import fastavro
import pytest

from transforms.contacts.model import state_of
from transforms.contacts.ordering import after_deletion
from transforms.contacts.stream_state import NO_MEMORY, admit
from transforms.core.digests import contact_digest, value_digest
from transforms.core.kinds import CONTACT_DELETE, CONTACT_UPSERT, EVENT_SEND, PHASES
from transforms.core.records import (ContactSequence, RawEvent, Stamp, contact_delete,
                                     contact_upsert, event_send)
from transforms.delivery.batching import arrange_batch
from transforms.loops.retry import Verdict, classify, final_outcome
from transforms.mapping.language import default_mapping
from transforms.mapping.processor import EventProcessor, Policy, Selection
from transforms.segment.deletions import deletion_of_line
from transforms.segment.parse import Rejected
from transforms.state.facts import Facts, digests_of, facts_of_request, fold, from_record, to_record
from transforms.state.files import SCHEMA
from transforms.state.recorder import FactsBuffer
from transforms.state.sync_state import contact_to_send

NOW = 1_800_000_000_000
AT_NOW = Stamp(NOW, NOW, '')
DELETE_MESSAGE = {  # segment-docs src/partners/subscriptions/build-functions.md, "Handling deletions"
    'type': 'delete', 'channel': 'server',
    'messageId': 'delete-022bb90c-bbac-11e4-8dfc-aa07a5b093db', 'projectId': 'abcd123',
    'userId': '5678', 'context': [], 'integrations': [],
    'receivedAt': '2019-02-19T23:58:54.387Z', 'sentAt': '2019-02-19T21:58:54.387Z',
    'originalTimestamp': '2019-02-19T23:58:54.387Z', 'timestamp': '2019-02-19T23:58:54.387Z'}
DELETED_AT = Stamp(1550620734387, 1550620734387, 'delete-022bb90c-bbac-11e4-8dfc-aa07a5b093db')


@pytest.mark.parametrize('line, body, stamp', [
    (b'u1\n', {'userId': 'u1'}, AT_NOW),
    (b'  u1\r\n', {'userId': 'u1'}, AT_NOW),
    (b'Ann@Example.com', {'email': 'Ann@Example.com'}, AT_NOW),
    (json.dumps(DELETE_MESSAGE).encode(), {'userId': '5678'}, DELETED_AT),
    # The Webhooks destination's form (src/connections/destinations/catalog/webhooks/index.md).
    (b'{"type": "delete", "userId": "019mr8mf4r", "timestamp": "2012-12-02T00:30:08.276Z"}',
     {'userId': '019mr8mf4r'}, Stamp(1354408208276, 0, '')),
    (b'{"type": "delete", "userId": 42, "messageId": "d1"}', {'userId': '42'},
     Stamp(NOW, NOW, 'd1')),
    (b'{"type": "delete", "userId": "ann@example.com"}', {'userId': 'ann@example.com'},
     AT_NOW),
])
def test_a_line_names_one_contact_to_delete_as_loops_documents_it(line, body, stamp):
    deletion = deletion_of_line(line, 'del.txt:3', NOW)
    assert deletion.to_dict() == {'method': 'POST', 'path': '/v1/contacts/delete',
                                  'headers': {'Content-Type': 'application/json'}, 'body': body}
    assert (deletion.kind, deletion.stamp) == (CONTACT_DELETE.name, stamp)
    assert deletion.source == 'del.txt:3'


def test_an_avro_event_that_is_a_delete_message_is_a_deletion_too():
    deletion = deletion_of_line(dict(DELETE_MESSAGE), 'del.avro:1', NOW)
    assert (deletion.body, deletion.stamp) == ({'userId': '5678'}, DELETED_AT)


@pytest.mark.parametrize('line', [b'', b'   \n', b'\r\n'])
def test_a_blank_line_names_nobody(line):
    assert deletion_of_line(line, 'del.txt:1', NOW) is None


@pytest.mark.parametrize('line, reason', [
    (b'u 1', 'not_one_id'),
    (b'u1\tu2', 'not_one_id'),
    (b'ann@', 'invalid_email'),
    (b'ann@example', 'invalid_email'),
    (b'a@b@example.com', 'invalid_email'),
    (b'{not json', 'invalid_json'),
    (b'{"type": "identify", "userId": "u1"}', 'not_a_deletion'),
    (b'{"type": "delete", "anonymousId": "a1"}', 'missing_user_id'),
    (b'{"type": "delete", "userId": ""}', 'missing_user_id'),
    (b'{"userId": "u1"}', 'missing_type'),
    (b'\xff\xfeu1', 'invalid_utf8'),
])
def test_a_line_that_names_no_contact_is_rejected_with_its_reason(line, reason):
    with pytest.raises(Rejected) as rejected:
        deletion_of_line(line, 'del.txt:1', NOW)
    assert rejected.value.reason == reason


def test_a_deletion_is_no_phase_of_a_backfill_and_carries_no_idempotency_key():
    assert PHASES == (CONTACT_UPSERT.phase, EVENT_SEND.phase)
    assert CONTACT_DELETE.removes_contact and not CONTACT_DELETE.keyed
    with pytest.raises(ValueError):
        contact_delete('u1', 'a@example.com', AT_NOW, '')


@pytest.mark.parametrize('status, removes_contact, verdict', [
    (404, True, Verdict.ALREADY_GONE),
    (404, False, Verdict.PERMANENT),
    (200, True, Verdict.DELIVERED),
    (400, True, Verdict.PERMANENT),
    (429, True, Verdict.TRANSIENT),
    (401, True, Verdict.KEY_REJECTED),
])
def test_a_404_means_already_gone_only_for_a_deletion(status, removes_contact, verdict):
    assert classify(status, False, removes_contact) is verdict


def test_already_gone_is_an_outcome_of_its_own_not_a_failure():
    outcome = final_outcome(Verdict.ALREADY_GONE, 404, '{"message": "Contact not found."}',
                            None, 1, 0, 'POST /v1/contacts/delete')
    assert (outcome.status, outcome.reason) == ('already_gone', None)


def stamp(t):
    return (t, t, f'm{t}')


def test_a_tombstone_forgets_what_was_delivered_before_it_whatever_the_order():
    before = Facts(digests_of(state_of({'userId': 'u1', 'plan': 'pro'}, Stamp(*stamp(1)))),
                   frozenset({b'k1'}))
    after = Facts(digests_of(state_of({'city': 'Oslo'}, Stamp(*stamp(9)))))
    tombstones = (Facts({}, deleted=stamp(5)), Facts({}, deleted=stamp(3)))
    folds = {repr(fold(order)) for order in itertools.permutations((before, after, *tombstones))}
    assert len(folds) == 1
    folded = fold((before, *tombstones, after))
    assert folded.deleted == stamp(5)
    assert folded.properties == {'city': (stamp(9), value_digest('Oslo'))}
    assert folded.events == {b'k1'}
    # Folded again with anything older, nothing comes back.
    assert fold((folded, before)) == folded


def test_a_tombstone_round_trips_and_files_from_before_tombstones_read_as_never_deleted():
    facts = Facts({'city': (stamp(9), value_digest('Oslo'))}, frozenset(), stamp(5))
    record = to_record(contact_digest('user:u1'), facts)
    fastavro.validation.validate(record, SCHEMA, raise_errors=True)
    assert from_record(record) == (contact_digest('user:u1'), facts)
    del record['deleted']
    assert from_record(record)[1].deleted is None


def test_a_confirmed_deletion_is_recorded_as_a_tombstone_in_the_contact_partition():
    deletion = contact_delete('u1', None, Stamp(*stamp(5)), 'del.txt:1')
    assert facts_of_request(deletion) == (contact_digest('user:u1'),
                                          Facts({}, frozenset(), stamp(5)), None)
    buffer = FactsBuffer()
    buffer.add_request(deletion)
    ((partition, (record,)),) = buffer.drain()
    assert partition == 'contacts' and record['deleted']['event_ms'] == 5


def test_a_backfill_sends_only_what_a_deleted_contact_did_after_its_deletion():
    counts = collections.Counter()
    delivered = fold((Facts(digests_of(state_of(
        {'userId': 'u1', 'firstName': 'Ann', 'plan': 'pro'}, Stamp(*stamp(1))))),
        Facts({}, deleted=stamp(5)))).properties
    assert delivered == {}
    only_before = state_of({'userId': 'u1', 'firstName': 'Ann'}, Stamp(*stamp(2)))
    assert contact_to_send('user:u1', only_before, delivered, True, counts, stamp(5)) is None
    assert counts['state/contacts_before_deletion'] == 1
    # The same name after the deletion is sent again: Loops lost it with the contact.
    state = state_of({'userId': 'u1', 'firstName': 'Ann'}, Stamp(*stamp(2)))
    state.update(state_of({'firstName': 'Ann', 'plan': 'free'}, Stamp(*stamp(7))))
    assert contact_to_send('user:u1', state, delivered, True, counts, stamp(5)) == {
        'firstName': (stamp(7), 'Ann'), 'plan': (stamp(7), 'free'),
        'userId': (stamp(7), 'u1')}


def test_a_backfill_drops_a_deleted_contacts_events_from_before_its_deletion():
    counts = collections.Counter()
    pairs = [((stamp(t), f'key{t}'), f'event{t}') for t in (1, 5, 6)]
    assert [request for _, request in after_deletion(pairs, stamp(5), counts)] == ['event6']
    assert counts['state/events_before_deletion'] == 2


def upsert(at, **body):
    return contact_upsert({'userId': 'a', **body}, 'user:a', Stamp(at, 0, f'u{at}'), f'u{at}')


def event(at):
    return event_send({'eventName': 'e', 'userId': 'a'}, 'user:a', Stamp(at, 0, f'e{at}'),
                      f'e{at}', f'segment-e{at}')


def deletion(at):
    return contact_delete('a', None, Stamp(at, 0, f'd{at}'), f'd{at}')


def test_a_stream_batch_sends_a_contacts_requests_before_or_after_its_deletion_by_stamp():
    batch = [upsert(6, plan='pro'), event(2), deletion(3), upsert(1, plan='free'), event(4),
             deletion(3), upsert(2, city='Oslo')]
    (sequence,) = arrange_batch([ContactSequence('user:a', (r,)) for r in batch])
    sent = [(r.kind, r.stamp.event_ms, r.body) for r in sequence.requests]
    assert sent == [
        ('contact_upsert', 2, {'userId': 'a', 'plan': 'free', 'city': 'Oslo'}),
        ('event_send', 2, {'eventName': 'e', 'userId': 'a'}),
        ('contact_delete', 3, {'userId': 'a'}),
        ('contact_upsert', 6, {'userId': 'a', 'plan': 'pro'}),
        ('event_send', 4, {'eventName': 'e', 'userId': 'a'})]


def admitted(*requests):
    memory, counts, sent = NO_MEMORY, collections.Counter(), []
    for request in requests:
        request, memory = admit(request, memory, True, counts)
        sent.append(request)
    return sent, counts, memory


def test_a_stream_forgets_a_deleted_contact_and_drops_its_calls_from_before_the_deletion():
    sent, counts, memory = admitted(upsert(1, plan='pro', city='Oslo'), upsert(9, nickname='x'),
                                    deletion(5), upsert(3, plan='free'), event(4),
                                    upsert(7, plan='pro', nickname='y'), event(8))
    assert [r is not None for r in sent] == [True, True, True, False, False, True, True]
    # Everything the newer upsert carries goes, even what is older than a value
    # let through before the deletion: Loops lost that with the contact.
    assert sent[5].body == {'userId': 'a', 'plan': 'pro', 'nickname': 'y'}
    assert counts['stream/before_deletion'] == 2
    assert memory.deleted == (5, 0, 'd5')


def processor(deletions: bool) -> EventProcessor:
    selection = Selection(('identify', 'track'), None, default_mapping(), deletions=deletions)
    return EventProcessor(selection, Policy(max_event_age_ms=1000, now_ms=NOW))


def test_the_stream_turns_a_delete_message_into_a_deletion_and_a_backfill_counts_it_out():
    raw = RawEvent('message-1', 0, json.dumps(DELETE_MESSAGE))
    counts = collections.Counter()
    processed = processor(True).process(raw, counts)
    # Never held back for its age: a deletion triggers no email.
    (request,) = processed.requests
    assert request.to_dict()['body'] == {'userId': '5678'}
    assert request.stamp == DELETED_AT and request.source == 'message-1'
    assert counts['map/contact_deletions'] == 1 and not counts['held_back/old_events']
    counts = collections.Counter()
    assert processor(False).process(raw, counts).requests == ()
    assert counts['filter/filtered_out_delete'] == 1


def test_a_delete_message_without_a_user_id_is_a_map_failure():
    raw = RawEvent('message-2', 0, '{"type": "delete", "anonymousId": "a1"}')
    processed = processor(True).process(raw, collections.Counter())
    (failure,) = processed.failures
    assert (processed.requests, failure['stage'], failure['reason']) == (
        (), 'map', 'missing_user_id')
