"""Segment's checks on an action's payload: the formats and the fields.

The date cases (data/segment/date_like_cases.json) are Node.js's and dayjs's
answers, as that file's "about" says; the email answers are those of
ajv-formats' pattern run by Node.js. The payload checks as a whole are
exercised against Segment's answers in test_segment_subscriptions.py.
"""
import json
from pathlib import Path

import pytest

from transforms.mapping.actions_core import ActionField, PayloadSchema, PayloadValidationError
from transforms.mapping.actions_core.formats import is_date_like, is_email
from transforms.mapping.actions_core.js_date import is_valid_date

DATE_CASES = json.loads((Path(__file__).parent / 'data' / 'segment' / 'date_like_cases.json')
                        .read_text(encoding='utf-8'))['cases']


@pytest.mark.parametrize('case', [pytest.param(case, id=repr(case['text'])) for case in DATE_CASES])
def test_date_like_and_new_date_answer_as_node_does(case):
    assert (is_date_like(case['text']), is_valid_date(case['text'])) == (case['date_like'],
                                                                         case['new_date_valid'])


@pytest.mark.parametrize('text, valid', [
    ('ada@example.com', True), ('ADA@EXAMPLE.COM', True), ('first.last+tag@sub.example.co.uk', True),
    ('a@b.c', True), ('a@1.2', True), ('x!#$%&*+/=?^_`{|}~-@example.com', True),
    ('a@b', False), ('a@-b.com', False), ('a@b-.com', False), ('a@b..com', False), ('.a@b.com', False),
    ('a.@b.com', False), ('a..b@c.com', False), ('a b@c.com', False), ('a@b.com\n', False),
    ('\u017f@example.com', False), ('a@\u212aelvin.com', False), ('jos\u00e9@example.com', False),
    ('"quoted"@example.com', False), ('a@[127.0.0.1]', False), ('user@localhost', False), ('', False)])
def test_email_is_ajv_formats_full_pattern(text, valid):
    assert is_email(text) is valid


def test_a_field_type_this_port_does_not_check_is_refused_when_declared():
    with pytest.raises(ValueError, match="field type 'number'"):
        ActionField('seats', 'Seats', 'number', 'How many seats.')


def test_prepare_leaves_the_resolved_mapping_as_it_was():
    schema = PayloadSchema([ActionField('userId', 'User ID', 'string', 'The user.', required=True),
                            ActionField('subscribed', 'Subscribed', 'boolean', 'Subscribed or not.')])
    resolved = {'userId': 7, 'subscribed': 'false', 'other': 'dropped', 'traits': {'a': ''}}
    assert schema.prepare(resolved) == {'userId': '7', 'subscribed': False}
    assert resolved == {'userId': 7, 'subscribed': 'false', 'other': 'dropped', 'traits': {'a': ''}}


def test_prepare_reports_every_failure_in_one_message():
    schema = PayloadSchema([ActionField('when', 'When', 'datetime', 'A time.'),
                            ActionField('userId', 'User ID', 'string', 'The user.', required=True)])
    with pytest.raises(PayloadValidationError) as raised:
        schema.prepare({'when': 'soon'})
    assert str(raised.value) == ("The root value is missing the required field 'userId'. "
                                 "When must be a valid date-like string but it was not.")
