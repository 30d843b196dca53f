"""The contact model: every property's latest value wins, in any order."""
import copy
import itertools
import json

import pytest

from transforms.contacts.model import (apply_body, body_of, latest_stamp, merge, merge_into,
                                       newer_than, stamps_of, state_of)
from transforms.core.records import Stamp


def updates_in_every_order(updates):
    """The merged body of (body, stamp) updates for every order of arrival."""
    return {json.dumps(body_of(merge(*(state_of(body, stamp) for body, stamp in order))),
                       sort_keys=True)
            for order in itertools.permutations(updates)}


@pytest.mark.parametrize('updates, expected', [
    ([({'userId': 'u', 'plan': 'free'}, Stamp(1, 0, 'a'))], {'userId': 'u', 'plan': 'free'}),
    # The later event time wins, whatever came first.
    ([({'plan': 'pro'}, Stamp(2, 0, 'b')), ({'plan': 'free'}, Stamp(1, 0, 'a'))],
     {'plan': 'pro'}),
    # Per property: a newer update that lacks a key leaves the older value.
    ([({'plan': 'free', 'seats': 1}, Stamp(1, 0, 'a')), ({'plan': 'pro'}, Stamp(2, 0, 'b'))],
     {'plan': 'pro', 'seats': 1}),
    # A later null resets, and is sent (Loops must receive it).
    ([({'plan': 'free'}, Stamp(1, 0, 'a')), ({'plan': None}, Stamp(2, 0, 'b'))],
     {'plan': None}),
    ([({'plan': None}, Stamp(1, 0, 'a')), ({'plan': 'pro'}, Stamp(2, 0, 'b'))],
     {'plan': 'pro'}),
    # Equal event times: receive time, then messageId, decide.
    ([({'plan': 'c'}, Stamp(5, 9, 'a')), ({'plan': 'b'}, Stamp(5, 2, 'z'))], {'plan': 'c'}),
    ([({'plan': 'a'}, Stamp(5, 2, 'y')), ({'plan': 'b'}, Stamp(5, 2, 'z'))], {'plan': 'b'}),
    # Mailing lists are properties of their own, per list id.
    ([({'mailingLists': {'a': True, 'b': True}}, Stamp(1, 0, 'x')),
      ({'mailingLists': {'b': False, 'c': True}}, Stamp(2, 0, 'y'))],
     {'mailingLists': {'a': True, 'b': False, 'c': True}}),
    ([({'mailingLists': {'b': False}}, Stamp(3, 0, 'x')),
      ({'mailingLists': {'a': True, 'b': True}}, Stamp(2, 0, 'y'))],
     {'mailingLists': {'a': True, 'b': False}}),
    # An opt-out after an opt-in stays an opt-out, and the other way round.
    ([({'subscribed': True}, Stamp(1, 0, 'a')), ({'subscribed': False}, Stamp(2, 0, 'b'))],
     {'subscribed': False}),
])
def test_the_latest_value_of_each_property_wins_in_any_order(updates, expected):
    assert updates_in_every_order(updates) == {json.dumps(expected, sort_keys=True)}


def test_equal_stamps_with_different_values_give_one_result_in_any_order():
    updates = [({'plan': 'pro'}, Stamp(1, 1, 'm')), ({'plan': 'free'}, Stamp(1, 1, 'm')),
               ({'plan': 3}, Stamp(1, 1, 'm')), ({'plan': None}, Stamp(1, 1, 'm'))]
    assert len(updates_in_every_order(updates)) == 1


def test_merging_changes_neither_input():
    a = state_of({'mailingLists': {'a': True}, 'plan': 'x'}, Stamp(1, 0, 'a'))
    b = state_of({'mailingLists': {'a': False}, 'seats': 2}, Stamp(2, 0, 'b'))
    before = copy.deepcopy((a, b))
    merged = merge(a, b)
    merge_into(merged, state_of({'plan': 'y'}, Stamp(9, 0, 'c')))
    assert (a, b) == before


def test_apply_body_folds_in_place_like_merge():
    bodies = [({'plan': 'free', 'seats': 1}, Stamp(1, 0, 'a')), ({'plan': 'pro'}, Stamp(2, 0, 'b'))]
    folded = {}
    for body, stamp in bodies:
        apply_body(folded, body, stamp)
    assert folded == merge(*(state_of(body, stamp) for body, stamp in bodies))


def test_latest_stamp_and_stamps():
    state = merge(state_of({'plan': 'free', 'seats': 1}, Stamp(1, 0, 'a')),
                  state_of({'plan': 'pro'}, Stamp(2, 0, 'b')))
    assert latest_stamp(state) == Stamp(2, 0, 'b') and isinstance(latest_stamp(state), Stamp)
    assert stamps_of(state) == {'plan': (2, 0, 'b'), 'seats': (1, 0, 'a')}
    assert latest_stamp({}) == Stamp(0, 0, '')


def test_newer_than_keeps_only_what_was_not_applied():
    state = state_of({'plan': 'pro', 'seats': 3, 'mailingLists': {'a': True}}, Stamp(5, 0, 'm'))
    applied = {'plan': (9, 0, 'z'), 'seats': (5, 0, 'm'), ('mailingLists', 'a'): (1, 0, 'x')}
    assert body_of(newer_than(state, applied)) == {'mailingLists': {'a': True}}
    assert body_of(newer_than(state, {})) == body_of(state)
