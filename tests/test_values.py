import collections
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.mapping.values import (DROPPED, ValueRules, is_loops_scalar, loops_length,
                                       to_loops_properties, to_loops_value, truncate)
from transforms.segment.parse import Rejected

LONG = 'x' * 501


def convert(obj, event_properties=False, **rules):
    adjustments = collections.Counter()
    return (to_loops_properties(obj, ValueRules(**rules), adjustments,
                                event_properties=event_properties), dict(adjustments))


@pytest.mark.parametrize('obj, rules, expected, adjustments', [
    # Scalars pass through untouched; null is kept (it resets a property).
    ({'a': 'x', 'b': 1, 'c': 1.5, 'd': True, 'e': None},
     {}, {'a': 'x', 'b': 1, 'c': 1.5, 'd': True, 'e': None}, {}),
    # Nested objects, flattened to camelCase names by default, or with a separator.
    ({'address': {'city': 'X', 'geo': {'lat': 1}}}, {},
     {'addressCity': 'X', 'addressGeoLat': 1}, {'flattened': 2}),
    ({'address': {'city': 'X', 'geo': {'lat': 1}}}, {'separator': '_'},
     {'address_city': 'X', 'address_geo_lat': 1}, {'flattened': 2}),
    ({'address': {'city': 'X'}}, {'separator': '.'}, {'address.city': 'X'}, {'flattened': 1}),
    ({'address': {'city': 'X', 'n': [1]}}, {'nested_objects': 'json'},
     {'address': '{"city":"X","n":[1]}'}, {'json_encoded': 1}),
    ({'address': {'city': 'X'}, 'k': 1}, {'nested_objects': 'drop'}, {'k': 1},
     {'dropped_nested': 1}),
    ({'empty': {}}, {}, {}, {'dropped_nested': 1}),
    # Arrays.
    ({'tags': ['a', 'b']}, {}, {'tags': 'a, b'}, {'joined': 1}),
    ({'mixed': ['a', 1, True, None, {'k': 'v'}, [2]]}, {},
     {'mixed': 'a, 1, true, null, {"k":"v"}, [2]'}, {'joined': 1}),
    ({'tags': ['a', 'b']}, {'arrays': 'json'}, {'tags': '["a","b"]'}, {'json_encoded': 1}),
    ({'tags': ['a'], 'k': 1}, {'arrays': 'drop'}, {'k': 1}, {'dropped_array': 1}),
    ({'empty': []}, {}, {}, {'dropped_array': 1}),
    ({'nums': [1.5, math.nan, 2]}, {}, {'nums': '1.5, 2'},
     {'joined': 1, 'dropped_non_finite': 1}),
    ({'nums': [math.inf]}, {}, {}, {'dropped_non_finite': 1}),
    ({'nums': [1, math.nan]}, {'arrays': 'json'}, {}, {'dropped_non_finite': 1}),
    # Arrays inside flattened objects.
    ({'user': {'roles': ['admin', 'dev']}}, {}, {'userRoles': 'admin, dev'},
     {'flattened': 1, 'joined': 1}),
    # Non-finite numbers.
    ({'a': math.nan, 'b': -math.inf, 'c': 0.0}, {}, {'c': 0.0}, {'dropped_non_finite': 2}),
    # Long strings, including those made by join and json.
    ({'s': LONG}, {}, {'s': 'x' * 500}, {'truncated': 1}),
    ({'s': LONG}, {'long_strings': 'drop'}, {}, {'dropped_long': 1}),
    ({'s': 'x' * 500}, {'long_strings': 'drop'}, {'s': 'x' * 500}, {}),
    ({'t': ['x' * 300, 'y' * 300]}, {}, {'t': 'x' * 300 + ', ' + 'y' * 198},
     {'joined': 1, 'truncated': 1}),
    ({'o': {'k': 'x' * 600}}, {'nested_objects': 'json'}, {'o': '{"k":"' + 'x' * 494},
     {'json_encoded': 1, 'truncated': 1}),
    # Keys are kept as they are, however odd.
    ({'Invited User?': 'yes', 'a.b': 1, '$x': 2}, {},
     {'Invited User?': 'yes', 'a.b': 1, '$x': 2}, {}),
])
def test_to_loops_properties(obj, rules, expected, adjustments):
    assert convert(obj, **rules) == (expected, adjustments)


def test_long_string_fail_rejects_and_names_the_key():
    with pytest.raises(Rejected) as raised:
        convert({'bio': {'text': LONG}}, long_strings='fail')
    assert raised.value.reason == 'value_too_long'
    assert 'bioText' in raised.value.message and '501' in raised.value.message


def test_prefix_is_joined_to_every_key():
    assert convert({'city': 'X'}) == ({'city': 'X'}, {})
    adjustments = collections.Counter()
    assert to_loops_properties({'city': 'X', 'geo': {'lat': 1}}, ValueRules(), adjustments,
                               prefix='address') == {'addressCity': 'X', 'addressGeoLat': 1}


def test_flattened_key_order_follows_the_document_and_later_keys_win():
    flat, _ = convert({'aB': 1, 'a': {'b': 2}, 'z': 3})
    assert list(flat.items()) == [('aB', 2), ('z', 3)]


@pytest.mark.parametrize('obj, name', [
    ({'address': {'city': 1}}, 'addressCity'),
    ({'address': {'City': 1}}, 'addressCity'),
    ({'shipping_address': {'zip_code': 1}}, 'shippingAddressZipCode'),
    ({'user': {'first name': 1}}, 'userFirstName'),
    ({'utm': {'$source': 1}}, 'utmSource'),
    ({'a-b': {'c.d': 1}}, 'aBCD'),
    ({'a': {'$': 1}}, 'a$'),
    ({'geo': {'2d': 1}}, 'geo2d'),
    ({'iPhone': {'model': 1}}, 'iPhoneModel'),
    ({'住所': {'市': 1}}, '住所市'),
    ({'address': {'': 1}}, 'address'),
])
def test_flattened_names_are_camel_case_words_of_the_keys(obj, name):
    assert convert(obj) == ({name: 1}, {'flattened': 1})


def test_event_properties_are_never_null_nor_unsafe_integers():
    big = 2 ** 53
    flat, adjustments = convert(
        {'n': None, 'big': big, 'safe': big - 1, 'low': -big, 'lowest': -big + 1,
         'flag': True, 'nested': {'z': None, 'huge': 10 ** 30}}, event_properties=True)
    assert flat == {'big': '9007199254740992', 'safe': big - 1, 'low': '-9007199254740992',
                    'lowest': -big + 1, 'flag': True,
                    'nestedHuge': '1000000000000000000000000000000'}
    assert adjustments == {'dropped_null_event_properties': 2, 'unsafe_integer_as_text': 3,
                           'flattened': 1}


def test_contact_properties_keep_null_and_leave_integers_to_the_account():
    # null resets a contact property; an integer's fate depends on the
    # property's type in the account (transforms/mapping/conform.py).
    assert convert({'n': None, 'big': 2 ** 60}) == ({'n': None, 'big': 2 ** 60}, {})


def test_deep_nesting_does_not_hit_the_recursion_limit():
    obj = leaf = {}
    for _ in range(3000):
        leaf[''] = {}   # empty keys: 3000 levels deep, the flattened key stays short
        leaf = leaf['']
    leaf['v'] = 'deep'
    flat, adjustments = convert(obj, separator='')
    assert flat == {'v': 'deep'}
    assert adjustments == {'flattened': 3000}


@pytest.mark.parametrize('obj, flat, dropped', [
    ({'k' * 501: 1, 'ok': 2}, {'ok': 2}, 1),
    ({'k' * 500: 1}, {'k' * 500: 1}, 0),
    ({'😀' * 251: 1}, {}, 1),                          # 502 UTF-16 units
    ({'a' * 300: {'b' * 300: 1}, 'ok': 2}, {'ok': 2}, 1),   # long once flattened
])
def test_keys_over_500_characters_are_dropped(obj, flat, dropped):
    result, adjustments = convert(obj)
    assert result == flat
    assert adjustments.get('dropped_long_key', 0) == dropped


@pytest.mark.parametrize('text, length', [
    ('abc', 3), ('é', 1), ('😀', 2), ('a😀b', 4), ('\ud800', 1),
])
def test_loops_length_counts_utf16_units(text, length):
    assert loops_length(text) == length


@pytest.mark.parametrize('text, limit, expected', [
    ('abcdef', 3, 'abc'),
    ('ab😀', 3, 'ab'),          # the emoji would be split: left out whole
    ('ab😀', 4, 'ab😀'),
    ('a\ud800b', 2, 'a'),        # a high surrogate at the cut goes, paired or not
    ('a\udc00b', 2, 'a\udc00'),  # a lone low surrogate (valid in JSON text) stays
])
def test_truncate_never_splits_a_surrogate_pair(text, limit, expected):
    assert truncate(text, limit) == expected


def test_emoji_text_is_truncated_to_500_utf16_units():
    flat, adjustments = convert({'s': '😀' * 300})
    assert flat == {'s': '😀' * 250} and adjustments == {'truncated': 1}


@pytest.mark.parametrize('value, rules, expected, adjustments', [
    ('x', {}, 'x', {}),
    ({'k': 1}, {}, DROPPED, {'dropped_nested': 1}),  # one value cannot be flattened
    ({'k': 1}, {'nested_objects': 'json'}, '{"k":1}', {'json_encoded': 1}),
    (['a', 'b'], {}, 'a, b', {'joined': 1}),
    (math.nan, {}, DROPPED, {'dropped_non_finite': 1}),
])
def test_to_loops_value(value, rules, expected, adjustments):
    counter = collections.Counter()
    assert to_loops_value('k', value, ValueRules(**rules), counter) == expected
    assert dict(counter) == adjustments


@pytest.mark.parametrize('rules', [
    {'nested_objects': 'nest'}, {'arrays': 'split'}, {'long_strings': 'ignore'},
    {'separator': 1},
])
def test_value_rules_reject_unknown_rules(rules):
    with pytest.raises(ValueError):
        ValueRules(**rules)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=700),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(obj=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
       nested=st.sampled_from(['flatten', 'json', 'drop']),
       arrays=st.sampled_from(['join', 'json', 'drop']),
       long_strings=st.sampled_from(['truncate', 'drop']))
def test_every_result_is_a_loops_scalar(obj, nested, arrays, long_strings):
    rules = ValueRules(nested_objects=nested, arrays=arrays, long_strings=long_strings)
    adjustments = collections.Counter()
    flat = to_loops_properties(obj, rules, adjustments)
    assert all(is_loops_scalar(value) for value in flat.values())
    assert all(isinstance(key, str) for key in flat)
