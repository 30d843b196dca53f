"""A contact's event sends in event-time order, each once, in bounded memory."""
import collections
import json
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.contacts.ordering import (OrderRequests, in_order, in_parts, remove_runs, sort_key,
                                          without_repeats, write_run)
from transforms.contacts.process_archive import RUN_MIN_REQUESTS, ProcessArchive
from transforms.core.kinds import EVENT_SEND
from transforms.core.records import Stamp, encode_request, event_send, idempotency_key_for
from transforms.mapping.language import default_mapping
from transforms.mapping.processor import EventProcessor, Selection
from transforms.segment.read import ArchiveChunk


def send(contact, event_ms, message_id, received_ms=0):
    return event_send({'eventName': 'E', 'userId': contact}, f'user:{contact}',
                      Stamp(event_ms, received_ms, message_id), message_id,
                      idempotency_key_for(message_id))


def pair(request):
    return sort_key(request), encode_request(request)


def ordered_ids(values, spill_size):
    counts = collections.Counter()
    kept = without_repeats(*in_order(values, spill_size), counts)
    return [r.stamp.message_id for _, r in kept], counts['order/duplicates']


@pytest.mark.parametrize('spill_size', [1, 3, 1000])
def test_events_come_out_in_stamp_order_once_each_whatever_spills(spill_size):
    requests = [send('u', 30, 'c'), send('u', 10, 'a'), send('u', 20, 'b'), send('u', 10, 'a'),
                send('u', 20, 'b2', received_ms=1), send('u', 30, 'c'), send('u', 30, 'c')]
    assert ordered_ids(map(pair, requests), spill_size) == (['a', 'b', 'b2', 'c'], 3)


def test_a_large_shuffled_contact_spilled_in_runs_is_ordered_and_deduplicated():
    rng = random.Random(3)
    requests = [send('bot', rng.randrange(10_000), f'm{i}') for i in range(2_000)]
    repeats = rng.sample(requests, 300)
    shuffled = requests + repeats
    rng.shuffle(shuffled)
    ids, duplicates = ordered_ids(map(pair, shuffled), spill_size=128)
    expected = [r.stamp.message_id for r in sorted(requests, key=lambda r: (r.stamp, r.idempotency_key))]
    assert ids == expected and duplicates == 300


def test_sorted_runs_from_files_merge_with_the_pairs_in_memory(tmp_path):
    rng = random.Random(5)
    requests = [send('bot', rng.randrange(1_000), f'm{i}') for i in range(600)]
    directory = str(tmp_path / 'runs')
    runs = [write_run(directory, [pair(r) for r in requests[start:start + 200]])
            for start in (0, 200)]
    assert [run.count for run in runs] == [200, 200]
    inline = [pair(r) for r in requests[400:]] + [pair(requests[7])]   # a repeat
    ids, duplicates = ordered_ids(runs + inline, spill_size=64)
    expected = [r.stamp.message_id for r in sorted(requests, key=sort_key)]
    assert ids == expected and duplicates == 1

    remove_runs(directory)
    assert not (tmp_path / 'runs').exists()


def copy(request, event_ms, received_ms):
    """A later copy of `request`'s message: a retry Segment received again."""
    return send(request.contact[len('user:'):], event_ms, request.stamp.message_id, received_ms)


def test_a_messages_later_copies_are_dropped_and_its_first_received_is_kept_where_it_stands():
    a = send('u', 100, 'a', received_ms=150)
    b = send('u', 200, 'b', received_ms=250)
    c = send('u', 300, 'c', received_ms=350)
    # a's retry got a later timestamp; b's, received later, an earlier one.
    values = [a, b, c, copy(a, 400, 900), copy(b, 50, 800), copy(c, 300, 360), copy(a, 400, 900)]
    for spill_size in (1, 2, 1000):
        counts = collections.Counter()
        kept = without_repeats(*in_order(map(pair, values), spill_size), counts)
        assert [(r.stamp.message_id, r.stamp.received_ms) for _, r in kept] == [
            ('a', 150), ('b', 250), ('c', 350)]
        assert counts['order/duplicates'] == 4


def test_later_copies_are_found_across_sorted_runs_and_spills(tmp_path):
    rng = random.Random(11)
    requests = [send('bot', rng.randrange(10_000), f'm{i}', received_ms=20_000 + i)
                for i in range(900)]
    retried = rng.sample(requests, 120)
    copies = [copy(r, r.stamp.event_ms + rng.randrange(-50, 50), r.stamp.received_ms + 86_400_000)
              for r in retried]
    everything = requests + copies
    rng.shuffle(everything)
    directory = str(tmp_path / 'runs')
    runs = [write_run(directory, [pair(r) for r in everything[:400]])]
    inline = [pair(r) for r in everything[400:]]
    ids, duplicates = ordered_ids(runs + inline, spill_size=128)
    expected = [r.stamp.message_id for r in sorted(requests, key=sort_key)]
    assert ids == expected and duplicates == 120


def test_in_parts_numbers_the_parts_in_order():
    parts = list(in_parts('user:u', iter(range(7)), part_size=3))
    assert [(p.part, p.requests) for p in parts] == [(0, (0, 1, 2)), (1, (3, 4, 5)), (2, (6,))]
    assert list(in_parts('user:u', iter(()), part_size=3)) == []


def test_order_requests_groups_per_contact_and_phase_in_parts():
    a = [send('a', t, f'a{t}') for t in (5, 1, 3, 1)]
    b = [send('b', 2, 'b2')]
    batches = [((EVENT_SEND.phase, 'user:a'), [pair(r) for r in a[:2]]),
               ((EVENT_SEND.phase, 'user:a'), [pair(r) for r in a[2:]]),
               ((EVENT_SEND.phase, 'user:b'), [pair(r) for r in b])]
    with TestPipeline(runner='FnApiRunner') as p:
        phases = (p | beam.Create(batches)) | OrderRequests(part_size=2, spill_size=2)
        summary = phases[EVENT_SEND.phase] | beam.Map(
            lambda s: (s.contact, s.part, [r.stamp.message_id for r in s.requests]))
        assert_that(summary, equal_to([('user:a', 0, ['a1', 'a3']), ('user:a', 1, ['a5']),
                                       ('user:b', 0, ['b2'])]))


def test_a_hot_contacts_requests_cross_the_shuffle_as_runs_and_come_out_in_order(tmp_path):
    count = RUN_MIN_REQUESTS * 2 + 17
    rng = random.Random(8)
    lines = [json.dumps({'type': 'track', 'messageId': f'm{n}', 'userId': 'bot',
                         'event': 'Heartbeat', 'timestamp': rng.randrange(10 ** 12, 2 * 10 ** 12)})
             for n in range(count)]
    lines.append(lines[0])   # a repeat
    chunks = [ArchiveChunk('hot.jsonl', 1, lines)]
    processor = EventProcessor(Selection(('track',), None, default_mapping()))
    runs = str(tmp_path / 'runs')
    with TestPipeline(runner='FnApiRunner') as p:
        processed = p | beam.Create(chunks) | ProcessArchive(processor, run_directory=runs)
        shuffled = processed.requests | 'Kinds' >> beam.FlatMap(
            lambda keyed: [type(value).__name__ for value in keyed[1]])
        assert_that(shuffled, equal_to(['SortedRun']), label='OneRun')
        sends = (processed.requests | OrderRequests())[EVENT_SEND.phase] | beam.FlatMap(
            lambda sequence: [r.stamp.event_ms for r in sequence.requests])
        assert_that(sends | beam.combiners.ToList() | beam.Map(
            lambda times: (len(times), times == sorted(times))),
            equal_to([(count, True)]), label='AllInOrderOnce')
