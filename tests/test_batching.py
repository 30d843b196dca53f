"""arrange_batch: a stream batch -> one sequence per contact, phase by phase."""
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND
from transforms.core.records import ContactSequence, Stamp, contact_upsert, event_send
from transforms.delivery.batching import arrange_batch


def upsert(user: str, at: int, **body):
    return contact_upsert({'userId': user, **body}, f'user:{user}', Stamp(at, 0, f'{user}-u{at}'),
                          f'{user}-u{at}')


def event(user: str, at: int, message_id: str):
    return event_send({'eventName': f'e{at}', 'userId': user}, f'user:{user}',
                      Stamp(at, 0, message_id), message_id, f'segment-{message_id}')


def test_a_contacts_batch_is_merged_upserts_then_its_events_in_order_once_each():
    batch = [ContactSequence('user:a', (event('a', 5, 'm5'),)),
             ContactSequence('user:a', (upsert('a', 3, plan='pro', city='Oslo'),)),
             ContactSequence('user:b', (upsert('b', 1, plan='free'),)),
             ContactSequence('user:a', (event('a', 2, 'm2'), event('a', 5, 'm5'))),
             ContactSequence('user:a', (upsert('a', 1, plan='free', mailingLists={'l1': True}),))]
    arranged = {sequence.contact: sequence.requests for sequence in arrange_batch(batch)}
    a = arranged['user:a']
    assert [request.kind for request in a] == [CONTACT_UPSERT.name, EVENT_SEND.name,
                                               EVENT_SEND.name]
    assert a[0].body == {'userId': 'a', 'plan': 'pro', 'city': 'Oslo', 'mailingLists': {'l1': True}}
    assert (a[0].stamp, a[0].headers) == (Stamp(3, 0, 'a-u3'), CONTACT_UPSERT.headers())
    assert sorted(a[0].source.split(',')) == ['a-u1', 'a-u3']
    assert [request.stamp.message_id for request in a[1:]] == ['m2', 'm5']
    assert [request.body for request in arranged['user:b']] == [{'userId': 'b', 'plan': 'free'}]


def test_within_a_batch_the_latest_value_of_each_property_wins_in_either_order():
    older = upsert('a', 1, plan='free', city='Oslo', mailingLists={'l1': True, 'l2': True})
    newer = upsert('a', 2, plan='pro', mailingLists={'l1': False})
    for batch in ([older, newer], [newer, older]):
        (sequence,) = arrange_batch([ContactSequence('user:a', (r,)) for r in batch])
        (merged,) = sequence.requests
        assert merged.body == {'userId': 'a', 'plan': 'pro', 'city': 'Oslo',
                               'mailingLists': {'l1': False, 'l2': True}}
        assert merged.stamp == newer.stamp
        assert merged.stamps == {'userId': tuple(newer.stamp), 'plan': tuple(newer.stamp),
                                 'city': tuple(older.stamp),
                                 ('mailingLists', 'l1'): tuple(newer.stamp),
                                 ('mailingLists', 'l2'): tuple(older.stamp)}


def test_a_contacts_only_upsert_in_a_batch_goes_as_it_came():
    alone = upsert('a', 1, plan='free')
    (sequence,) = arrange_batch([ContactSequence('user:a', (alone,))])
    assert sequence.requests == (alone,)
