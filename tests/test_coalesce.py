import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.coalesce import GroupByContact, arrange_contact_requests
from transforms.records import contact_upsert, event_send


def upsert(message_id, t, body, contact='u1', received=0):
    return contact_upsert(dict(body, userId=contact), contact, (t, received, message_id), message_id)


def send(message_id, t, name, contact='u1'):
    return event_send({'eventName': name, 'userId': contact}, contact, (t, 0, message_id),
                      message_id, f'key-{message_id}')


@pytest.mark.parametrize('requests, coalesce, bodies, duplicates, merged', [
    # Later values win, whatever order the group arrives in.
    ([upsert('b', 2, {'plan': 'pro'}), upsert('a', 1, {'plan': 'free', 'n': 1})], True,
     [{'userId': 'u1', 'plan': 'pro', 'n': 1}], 0, 1),
    # Same event time: receivedAt decides, then messageId.
    ([upsert('z', 5, {'plan': 'late'}, received=2), upsert('y', 5, {'plan': 'early'}, received=1)],
     True, [{'userId': 'u1', 'plan': 'late'}], 0, 1),
    ([upsert('m2', 5, {'plan': 'second'}), upsert('m1', 5, {'plan': 'first'})],
     True, [{'userId': 'u1', 'plan': 'second'}], 0, 1),
    # A repeated messageId is dropped and counted, not merged.
    ([upsert('a', 1, {'plan': 'free'}), upsert('a', 1, {'plan': 'free'})], True,
     [{'userId': 'u1', 'plan': 'free'}], 1, 0),
    # Without coalescing: every upsert, in order.
    ([upsert('b', 2, {'plan': 'pro'}), upsert('a', 1, {'plan': 'free'})], False,
     [{'userId': 'u1', 'plan': 'free'}, {'userId': 'u1', 'plan': 'pro'}], 0, 0),
    # Events are never merged; they are ordered and deduplicated.
    ([send('e2', 2, 'Second'), send('e1', 1, 'First'), send('e1', 1, 'First')], True,
     [{'eventName': 'First', 'userId': 'u1'}, {'eventName': 'Second', 'userId': 'u1'}], 1, 0),
    # Requests without a messageId cannot be told apart: all are kept.
    ([upsert('', 1, {'a': 1}), upsert('', 2, {'a': 2})], False,
     [{'userId': 'u1', 'a': 1}, {'userId': 'u1', 'a': 2}], 0, 0),
])
def test_arrange_contact_requests(requests, coalesce, bodies, duplicates, merged):
    arranged = arrange_contact_requests(requests, coalesce)
    assert [r.body for r in arranged.requests] == bodies
    assert (arranged.duplicates, arranged.merged) == (duplicates, merged)


def test_coalesced_request_keeps_the_latest_order_and_all_sources():
    arranged = arrange_contact_requests(
        [upsert('b', 2, {'x': 2}), upsert('a', 1, {'x': 1})], coalesce=True)
    (request,) = arranged.requests
    assert request.order == (2, 0, 'b')
    assert request.source == 'a,b'


def test_group_by_contact_splits_kinds_and_groups_per_contact():
    requests = [upsert('a', 1, {'p': 1}, 'u1'), upsert('b', 2, {'p': 2}, 'u1'),
                upsert('c', 1, {'p': 3}, 'u2'), send('e', 3, 'Signed Up', 'u1')]

    with TestPipeline(runner='FnApiRunner') as p:
        contacts, events = p | beam.Create(requests) | GroupByContact()
        assert_that(contacts | 'ContactBodies' >> beam.Map(
            lambda s: (s.contact, [r.body for r in s.requests])),
            equal_to([('u1', [{'userId': 'u1', 'p': 2}]), ('u2', [{'userId': 'u2', 'p': 3}])]),
            label='Contacts')
        assert_that(events | 'EventNames' >> beam.Map(
            lambda s: (s.contact, [r.body['eventName'] for r in s.requests])),
            equal_to([('u1', ['Signed Up'])]), label='Events')
