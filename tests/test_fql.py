"""Segment's FQL (transforms/mapping/fql/parser.py) against Segment's own test cases and against
results Segment's code gives for inputs of ours (both kept as data in tests/data/segment/),
and our error messages."""
import json
import re
from pathlib import Path

import pytest

from transforms.mapping.fql import FqlError, generate_fql, matches, parse_fql

DATA = Path(__file__).parent / 'data' / 'segment'
FQL_CASES = json.loads((DATA / 'fql_cases.json').read_text())
VALIDATE_CASES = json.loads((DATA / 'fql_validate_cases.json').read_text())['cases']
BEHAVIOUR_CASES = json.loads((DATA / 'fql_behaviour_cases.json').read_text())


def case_ids(cases):
    return [f"{index}-{case['source'].rsplit(':', 1)[1]}" for index, case in enumerate(cases)]


@pytest.mark.parametrize('case', FQL_CASES['parse'] + BEHAVIOUR_CASES['parse'],
                         ids=case_ids(FQL_CASES['parse'] + BEHAVIOUR_CASES['parse']))
def test_parse_case(case):
    if 'error' in case:
        with pytest.raises(FqlError) as raised:
            parse_fql(case['fql'])
        # Segment's TypeErrors carry no message of ours to compare; its Errors do
        assert case['error'].get('message', '') in str(raised.value)
        return
    assert parse_fql(case['fql']) == case['ast']
    if case['generates_back']:
        assert generate_fql(case['ast']) == case['fql']


@pytest.mark.parametrize('case', FQL_CASES['generate'], ids=case_ids(FQL_CASES['generate']))
def test_generate_case(case):
    if 'error' in case:
        with pytest.raises(FqlError, match=re.escape(case['error']['message'])):
            generate_fql(case['ast'])
        return
    assert generate_fql(case['ast']) == case['fql']


@pytest.mark.parametrize('case', VALIDATE_CASES, ids=case_ids(VALIDATE_CASES))
def test_validate_case(case):
    assert matches(case['condition'], case['event']) is case['expected']


@pytest.mark.parametrize('case', BEHAVIOUR_CASES['validate'],
                         ids=case_ids(BEHAVIOUR_CASES['validate']))
def test_behaviour_validate_case(case):
    assert matches(parse_fql(case['fql']), case['event']) is case['expected']


def test_every_segment_test_is_ported():
    """One parse case per test of fql.test.ts, one generate case per test of
    generate-fql.test.ts, one validate case per expectation of validate.test.ts."""
    assert len(FQL_CASES['parse']) == 48
    assert sum(case.get('generates_back', False) for case in FQL_CASES['parse']) == 43
    assert len(FQL_CASES['generate']) == 12
    assert len(VALIDATE_CASES) == 135


@pytest.mark.parametrize('fql, message', [
    ('type', "Value token is missing: 'type' at position 0"),
    ('event = "a" and properties.plan',
     "Value token is missing: 'properties.plan' at position 16"),
    ('type * "32456"', "invalid character '*' at position 5"),
    ('properties.price>=100', "unexpected '>' after 'price' at position 16"),
    ('event = "Signed Up', 'the string opened at position 8 is not closed'),
    ('properties.n = 1.2.3', "number '1.2.' at position 15 has two decimal points"),
    ('properties.n = 1. and type = "track"',
     "number '1.' at position 15 ends with a decimal point"),
    ('type!="track"', "'!' at position 4 is neither '!=' and a space"),
    ('properties.x\\', "'\\' at position 12 escapes nothing"),
    ('', "no condition in ''"),
    ('typo', "no condition in 'typo'"),
    ('(type = "track"', "'(' at position 0 is not closed"),
    ('((type = "track"))', "'(' at position 1 is not closed"),
    ('type = "track" and ()', 'the parentheses at position 19 hold no condition'),
    ('contains(', 'contains() at position 0 is missing a 2nd argument'),
])
def test_error_messages_name_the_place(fql, message):
    with pytest.raises(FqlError) as raised:
        parse_fql(fql)
    assert message in str(raised.value)


def test_a_field_path_of_only_dots_is_refused_when_reached():
    condition = parse_fql('properties.\\. = "x" or type = "track"')
    assert condition['children'][0] == {
        'type': 'event-property', 'name': '.', 'operator': '=', 'value': 'x'}
    with pytest.raises(FqlError, match="the field path '.' names no field"):
        matches(condition, {'type': 'track', 'properties': {}})


def test_unknown_condition_type_cannot_be_written():
    with pytest.raises(FqlError, match="Unknown condition type 'event-group'"):
        generate_fql({'type': 'group', 'operator': 'and',
                      'children': [{'type': 'event-group', 'operator': '=', 'value': 'x'}]})
