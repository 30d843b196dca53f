"""A contact's event sends in event-time order, each once, in bounded memory."""
import collections
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.kinds import EVENT_SEND
from transforms.ordering import OrderRequests, in_order, in_parts, without_repeats
from transforms.records import Stamp, encode_request, event_send, idempotency_key_for


def send(contact, event_ms, message_id, received_ms=0):
    return event_send({'eventName': 'E', 'userId': contact}, f'user:{contact}',
                      Stamp(event_ms, received_ms, message_id), message_id,
                      idempotency_key_for(message_id))


def ordered_ids(requests, spill_size):
    counts = collections.Counter()
    kept = without_repeats(in_order(map(encode_request, requests), spill_size), counts)
    return [r.stamp.message_id for _, r in kept], counts['order/duplicates']


@pytest.mark.parametrize('spill_size', [1, 3, 1000])
def test_events_come_out_in_stamp_order_once_each_whatever_spills(spill_size):
    requests = [send('u', 30, 'c'), send('u', 10, 'a'), send('u', 20, 'b'), send('u', 10, 'a'),
                send('u', 20, 'b2', received_ms=1), send('u', 30, 'c'), send('u', 30, 'c')]
    assert ordered_ids(requests, spill_size) == (['a', 'b', 'b2', 'c'], 3)


def test_a_large_shuffled_contact_spilled_in_runs_is_ordered_and_deduplicated():
    rng = random.Random(3)
    requests = [send('bot', rng.randrange(10_000), f'm{i}') for i in range(2_000)]
    repeats = rng.sample(requests, 300)
    shuffled = requests + repeats
    rng.shuffle(shuffled)
    ids, duplicates = ordered_ids(shuffled, spill_size=128)
    expected = [r.stamp.message_id for r in sorted(requests, key=lambda r: (r.stamp, r.idempotency_key))]
    assert ids == expected and duplicates == 300


def test_in_parts_numbers_the_parts_in_order():
    parts = list(in_parts('user:u', iter(range(7)), part_size=3))
    assert [(p.part, p.requests) for p in parts] == [(0, (0, 1, 2)), (1, (3, 4, 5)), (2, (6,))]
    assert list(in_parts('user:u', iter(()), part_size=3)) == []


def test_order_requests_groups_per_contact_and_phase_in_parts():
    a = [send('a', t, f'a{t}') for t in (5, 1, 3, 1)]
    b = [send('b', 2, 'b2')]
    batches = [((EVENT_SEND.phase, 'user:a'), [encode_request(r) for r in a[:2]]),
               ((EVENT_SEND.phase, 'user:a'), [encode_request(r) for r in a[2:]]),
               ((EVENT_SEND.phase, 'user:b'), [encode_request(r) for r in b])]
    with TestPipeline(runner='FnApiRunner') as p:
        phases = (p | beam.Create(batches)) | OrderRequests(part_size=2, spill_size=2)
        summary = phases[EVENT_SEND.phase] | beam.Map(
            lambda s: (s.contact, s.part, [r.stamp.message_id for r in s.requests]))
        assert_that(summary, equal_to([('user:a', 0, ['a1', 'a3']), ('user:a', 1, ['a5']),
                                       ('user:b', 0, ['b2'])]))
