"""The sync state's facts and files: digests only, folded by the contact
model's merge, written whole, recorded while delivering, partitioned."""
import collections
import hashlib
import itertools
import time

import fastavro
import pytest

from transforms.contacts.merge import upsert_from_state
from transforms.contacts.model import stamps_of, state_of
from transforms.core.digests import contact_digest, key_digest, value_digest
from transforms.contacts.ordering import after_refusals, resend_after_refusal
from transforms.core.records import Stamp, derived_key, event_send
from transforms.loops.retry import Outcome
from transforms.state.facts import (Facts, changed_properties, digests_of, facts_of_request, fold,
                                    from_record, refusal_of_request, to_record)
from transforms.state.files import SCHEMA, event_day, list_state, read_facts_file, write_facts_file
from transforms.state.recorder import FactsBuffer, StateRecorder

DELIVERED = Outcome('delivered', 200, '{}', 1, 0, None, None)
ALREADY = Outcome('already_delivered', 409, '{}', 1, 0, None, None)
FAILED = Outcome('failed', 400, '{}', 1, 0, 'http_400', 'no')


def stamp(t, message_id='m'):
    return Stamp(t, t, f'{message_id}{t}')


def test_digests_tell_types_and_values_apart():
    values = [1, 1.0, '1', True, None, '', 'a', 'A']
    assert len({value_digest(v) for v in values}) == len(values)
    assert value_digest('x') == value_digest('x') and len(value_digest('x')) == 8
    assert contact_digest('user:u1') != contact_digest('email:u1') and len(
        contact_digest('user:u1')) == 16


def test_a_property_is_sent_when_its_value_changed_and_its_stamp_is_not_older():
    delivered = digests_of(state_of({'plan': 'pro', 'seats': 3, 'name': 'Ann'}, stamp(5)))
    run = {'plan': (tuple(stamp(5)), 'pro'),        # the same: not sent
           'seats': (tuple(stamp(4)), 4),           # older than what Loops has: not sent
           'name': (tuple(stamp(5)), 'Anne'),       # same stamp, other value (a new mapping)
           'city': (tuple(stamp(1)), 'Oslo')}       # never delivered
    assert set(changed_properties(run, delivered)) == {'name', 'city'}


def test_facts_fold_like_contact_states_whatever_the_order():
    a = Facts(digests_of(state_of({'plan': 'pro', 'mailingLists': {'l1': True}}, stamp(2))),
              frozenset({b'k1'}))
    b = Facts(digests_of(state_of({'plan': 'free', 'mailingLists': {'l1': False}}, stamp(1))),
              frozenset({b'k2'}))
    c = Facts(digests_of(state_of({'seats': 2}, stamp(3))))
    folds = {repr(sorted(fold(order).properties.items(), key=repr)) + repr(sorted(
        fold(order).events)) for order in itertools.permutations((a, b, c, a))}
    assert len(folds) == 1
    folded = fold((a, b, c))
    assert folded.properties['plan'][1] == value_digest('pro')
    assert folded.properties[('mailingLists', 'l1')][1] == value_digest(True)
    assert folded.events == {b'k1', b'k2'}


def test_records_round_trip_and_store_each_stamp_once():
    facts = Facts(digests_of(state_of(
        {'userId': 'u1', 'plan': 'pro', 'mailingLists': {'l1': True}}, stamp(2))),
        frozenset({key_digest('segment-abc')}))
    facts.properties['seats'] = (tuple(stamp(1)), value_digest(2))
    record = to_record(contact_digest('user:u1'), facts)
    assert len(record['stamps']) == 2
    assert from_record(record) == (contact_digest('user:u1'), facts)
    fastavro.validation.validate(record, SCHEMA, raise_errors=True)


def test_an_upsert_records_each_property_at_its_own_stamp():
    state = state_of({'userId': 'u1', 'plan': 'pro'}, stamp(1))
    state.update(state_of({'seats': 3, 'mailingLists': {'l1': True}}, stamp(7)))
    upsert = upsert_from_state('user:u1', state, False, collections.Counter(), keep_stamps=True)
    assert upsert.stamps == stamps_of(state)
    contact, facts, day = facts_of_request(upsert)
    assert contact == contact_digest('user:u1') and day is None and not facts.events
    assert facts.properties == digests_of(state)


def test_an_event_records_its_key_and_the_contact_properties_it_carries():
    event = event_send({'eventName': 'paid', 'userId': 'u1', 'email': 'a@x.io', 'plan': 'pro',
                        'eventProperties': {'amount': 3}}, 'user:u1', stamp(86_400_000 * 3),
                       'm', 'segment-key1')
    contact, facts, event_ms = facts_of_request(event)
    assert facts.events == {key_digest('segment-key1')}
    assert set(facts.properties) == {'plan'}
    assert event_day(event_ms) == '1970-01-04'


def test_the_buffer_keeps_contact_facts_apart_from_event_facts_by_day():
    buffer = FactsBuffer()
    for day in (1, 1, 2):
        buffer.add_request(event_send({'eventName': 'e', 'userId': 'u1'}, 'user:u1',
                                      stamp(86_400_000 * day + day), 'm', f'key{day}'))
    buffer.add_request(upsert_from_state('user:u1', state_of({'userId': 'u1'}, stamp(1)),
                                         False, collections.Counter()))
    partitions = dict(buffer.drain())
    assert set(partitions) == {'contacts', '1970-01-02', '1970-01-03'}
    assert [len(records) for records in partitions.values()] == [1, 1, 1]
    assert buffer.size == 0 and buffer.drain() == []


def test_written_files_appear_whole_and_read_back(tmp_path):
    path = str(tmp_path / 'contacts' / 'log-r-w-000000.avro')
    records = [to_record(contact_digest(f'user:{i}'), Facts(digests_of(
        state_of({'n': i}, stamp(i))))) for i in range(5)]
    written = write_facts_file(path, iter(records))
    data = open(path, 'rb').read()
    assert written == (path, 5, len(data), hashlib.sha256(data).hexdigest())
    assert not list(tmp_path.rglob('*.tmp'))
    assert [contact for contact, _ in read_facts_file(path)] == [r['contact'] for r in records]
    assert [f.path for f in list_state(str(tmp_path)).contacts] == [path]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_recorder_flushes_once_its_oldest_fact_waited_long_enough(tmp_path):
    clock = FakeClock()
    recorder = StateRecorder(str(tmp_path), 'run1', flush_seconds=30, clock=clock)
    recorder.open()
    upsert = upsert_from_state('user:u1', state_of({'userId': 'u1', 'a': 1}, stamp(1)), False,
                               collections.Counter())
    recorder.record(upsert, FAILED)
    clock.now = 100
    recorder.maybe_flush()
    assert not list(tmp_path.rglob('*.avro'))      # a failure is no fact
    recorder.record(upsert, DELIVERED)
    clock.now = 129
    recorder.maybe_flush()
    assert not list(tmp_path.rglob('*.avro'))
    clock.now = 130
    recorder.maybe_flush()
    assert len(list(tmp_path.rglob('log-run1-*.avro'))) == 1
    recorder.record(event_send({'eventName': 'e', 'userId': 'u1'}, 'user:u1', stamp(1), 'm',
                               'k'), ALREADY)
    recorder.flush()
    recorder.close()
    assert len(list(tmp_path.rglob('log-run1-*.avro'))) == 2
    listing = list_state(str(tmp_path))
    assert len(listing.contacts) == 1 and list(listing.events) == ['1970-01-01']


def test_a_refused_event_is_recorded_under_its_own_key_with_when_it_was_refused(tmp_path):
    event = event_send({'eventName': 'e', 'userId': 'u1'}, 'user:u1', stamp(86_400_000), 'm',
                       'segment-k')
    recorder = StateRecorder(str(tmp_path), 'run1')
    recorder.open()
    recorder.record(event, FAILED)
    recorder.record(event, Outcome('failed', None, None, 6, 0, 'retries_exhausted', 'no'))
    recorder.close()
    (contact, facts), = read_facts_file(next(str(p) for p in tmp_path.rglob('*.avro')))
    ((digest, refused_ms),) = facts.refused
    assert (contact, digest, facts.events) == (
        contact_digest('user:u1'), key_digest('segment-k'), frozenset())
    assert abs(refused_ms - time.time() * 1000) < 60_000
    assert list(list_state(str(tmp_path)).events) == ['1970-01-02']


def test_refusals_fold_to_each_keys_latest_and_are_forgotten_once_delivered():
    a, b = key_digest('segment-a'), key_digest('segment-b')
    first = Facts({}, refused=frozenset({(a, 100), (b, 100)}))
    later = Facts({}, refused=frozenset({(a, 200)}))
    delivered = Facts({}, frozenset({b}))
    for order in itertools.permutations((first, later, delivered)):
        assert fold(order) == Facts({}, frozenset({b}), refused=frozenset({(a, 200)}))


def test_refusals_round_trip_and_files_from_before_them_read_as_none():
    facts = Facts({}, frozenset({key_digest('segment-b')}),
                  refused=frozenset({(key_digest('segment-a'), 1_700_000_000_123)}))
    record = to_record(contact_digest('user:u1'), facts)
    fastavro.validation.validate(record, SCHEMA, raise_errors=True)
    assert from_record(record) == (contact_digest('user:u1'), facts)
    del record['refused_events']
    assert from_record(record)[1].refused == frozenset()


def test_a_file_written_before_refusals_existed_still_reads(tmp_path):
    old_schema = {**SCHEMA, 'fields': [field for field in SCHEMA['fields']
                                       if field['name'] != 'refused_events']}
    record = to_record(contact_digest('user:u1'), Facts({}, frozenset({key_digest('k')})))
    del record['refused_events']
    path = tmp_path / 'log-old.avro'
    with open(path, 'wb') as out:
        fastavro.writer(out, fastavro.parse_schema(old_schema), [record])
    assert list(read_facts_file(str(path))) == [
        (contact_digest('user:u1'), Facts({}, frozenset({key_digest('k')})))]


def test_a_refused_event_goes_again_under_a_new_key_and_is_recorded_under_its_own():
    event = event_send({'eventName': 'e', 'userId': 'u1'}, 'user:u1', stamp(1), 'm',
                       'segment-k')
    counts = collections.Counter()
    pairs = [(('s', 'segment-k'), event), (('s', 'segment-other'), event)]
    ((_, again), (_, untouched)) = after_refusals(pairs, {key_digest('segment-k'): 1234},
                                                  counts)
    assert again.idempotency_key == derived_key('segment-k', 'refused-1234')
    assert (again.own_key, again.state_key, again.body) == ('segment-k', 'segment-k', event.body)
    assert again == resend_after_refusal(event, 1234)
    assert untouched is event and counts == {'state/refused_events_resent': 1}
    assert facts_of_request(again)[1].events == {key_digest('segment-k')}
    assert refusal_of_request(again, 5)[1].refused == {(key_digest('segment-k'), 5)}


def test_a_listing_reads_only_the_event_days_asked_for(tmp_path):
    for day in ('2026-10-30', '2026-11-01', '2026-11-02'):
        write_facts_file(str(tmp_path / 'events' / day / 'log-r-w-000000.avro'), [])
    assert sorted(list_state(str(tmp_path), '2026-11-01').events) == ['2026-11-01', '2026-11-02']
    assert list_state(str(tmp_path), None).events == {}
    assert len(list_state(str(tmp_path)).events) == 3
    assert list_state(str(tmp_path / 'nothing-yet')).files == ()


@pytest.mark.parametrize('flush_seconds', [0, -1])
def test_the_flush_interval_must_be_positive(flush_seconds):
    with pytest.raises(ValueError):
        StateRecorder('state/', 'run', flush_seconds)
