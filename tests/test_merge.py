import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.merge import coalesce_upserts, merge_contact_bodies
from transforms.records import CONTACT_UPDATE_PATH, contact_upsert, event_send


@pytest.mark.parametrize('bodies, expected', [
    ([], {}),
    ([{'userId': 'u', 'plan': 'free'}], {'userId': 'u', 'plan': 'free'}),
    # Later values win.
    ([{'plan': 'free'}, {'plan': 'pro'}], {'plan': 'pro'}),
    # An absent key keeps its earlier value.
    ([{'plan': 'free', 'seats': 1}, {'plan': 'pro'}], {'plan': 'pro', 'seats': 1}),
    # An explicit null resets, and stays (Loops must receive it).
    ([{'plan': 'free'}, {'plan': None}], {'plan': None}),
    ([{'plan': None}, {'plan': 'pro'}], {'plan': 'pro'}),
    # mailingLists merge per list id, later wins per list.
    ([{'mailingLists': {'a': True, 'b': True}}, {'mailingLists': {'b': False, 'c': True}}],
     {'mailingLists': {'a': True, 'b': False, 'c': True}}),
    ([{'mailingLists': {'a': True}}, {'plan': 'pro'}],
     {'mailingLists': {'a': True}, 'plan': 'pro'}),
    ([{'subscribed': False}, {'subscribed': True, 'email': 'new@b.co'}],
     {'subscribed': True, 'email': 'new@b.co'}),
])
def test_merge_contact_bodies(bodies, expected):
    assert merge_contact_bodies(bodies) == expected


def test_merging_does_not_change_the_inputs():
    bodies = [{'mailingLists': {'a': True}}, {'mailingLists': {'a': False, 'b': True}}]
    before = copy.deepcopy(bodies)
    merged = merge_contact_bodies(bodies)
    merged['mailingLists']['c'] = True
    assert bodies == before


def upsert(body, order, source):
    return contact_upsert(body, 'u1', order, source)


def test_coalesce_sorts_by_order_and_keeps_the_last_order_and_contact():
    requests = [upsert({'userId': 'u1', 'plan': 'pro'}, (3000, 0, 'm3'), 'm3'),
                upsert({'userId': 'u1', 'plan': 'free', 'seats': 2}, (1000, 0, 'm1'), 'm1'),
                upsert({'userId': 'u1', 'seats': None}, (2000, 0, 'm2'), 'm2')]
    merged = coalesce_upserts(requests)
    assert merged.path == CONTACT_UPDATE_PATH and merged.method == 'PUT'
    assert merged.body == {'userId': 'u1', 'plan': 'pro', 'seats': None}
    assert (merged.contact, merged.order, merged.source) == ('u1', (3000, 0, 'm3'), 'm1,m2,m3')


def test_coalesce_orders_equal_event_times_by_received_time_then_message_id():
    requests = [upsert({'plan': 'c'}, (1000, 5, 'a'), 'a'),
                upsert({'plan': 'b'}, (1000, 2, 'z'), 'z'),
                upsert({'plan': 'a'}, (1000, 2, 'y'), 'y')]
    merged = coalesce_upserts(requests)
    assert merged.body == {'plan': 'c'} and merged.source == 'y,z,a'


def test_coalesce_skips_empty_sources():
    merged = coalesce_upserts([upsert({'a': 1}, (1, 0, ''), ''), upsert({'b': 2}, (2, 0, 'm'), 'm')])
    assert merged.source == 'm'


@pytest.mark.parametrize('requests', [
    [],
    [event_send({'eventName': 'x', 'userId': 'u1'}, 'u1', (1, 0, 'm'), 'm', 'key')],
])
def test_coalesce_refuses_what_it_cannot_merge(requests):
    with pytest.raises(ValueError):
        coalesce_upserts(requests)


def apply_update(contact: dict, body: dict) -> None:
    """The reference model: what Loops does with one PUT /v1/contacts/update."""
    for key, value in body.items():
        if key == 'mailingLists':
            contact.setdefault('mailingLists', {}).update(value)
        else:
            contact[key] = value


scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(['a', 'b', ''])
bodies = st.lists(
    st.dictionaries(
        st.sampled_from(['userId', 'email', 'plan', 'seats', 'subscribed']),
        scalars, max_size=4)
    | st.fixed_dictionaries(
        {'userId': st.just('u1')},
        optional={'mailingLists': st.dictionaries(st.sampled_from(['l1', 'l2', 'l3']),
                                                  st.booleans(), max_size=3),
                  'plan': scalars}),
    max_size=8)


@settings(max_examples=200, deadline=None)
@given(bodies=bodies)
def test_merged_body_equals_applying_each_update_in_order(bodies):
    one_by_one = {}
    for body in bodies:
        apply_update(one_by_one, body)
    merged = merge_contact_bodies(bodies)
    assert merged == one_by_one
    # Also onto a contact that already holds data, as a real contact would.
    existing = {'plan': 'old', 'mailingLists': {'l1': False, 'l9': True}}
    for body in bodies:
        apply_update(existing, body)
    merged_onto_existing = {'plan': 'old', 'mailingLists': {'l1': False, 'l9': True}}
    apply_update(merged_onto_existing, merged)
    assert merged_onto_existing == existing


@settings(max_examples=100, deadline=None)
@given(bodies=bodies, permutation=st.randoms(use_true_random=False))
def test_coalescing_ignores_arrival_order(bodies, permutation):
    requests = [upsert(body, (i, 0, f'm{i}'), f'm{i}') for i, body in enumerate(bodies)]
    shuffled = list(requests)
    permutation.shuffle(shuffled)
    if requests:
        assert coalesce_upserts(shuffled) == coalesce_upserts(requests)
        assert coalesce_upserts(shuffled).body == merge_contact_bodies(bodies)
