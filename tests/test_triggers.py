"""What a request sets off (transforms/loops/triggers.py): every operator on a
value known exactly and on a digest, each trigger kind against what is known
of the contact before, and the counting of a run's verdicts."""
import itertools

import pytest

from transforms.core.digests import value_digest
from transforms.core.records import NO_STAMP, event_send
from transforms.loops.triggers import (NEW_CONTACT, UNKNOWN_CONTACT, Change, ContactBefore,
                                       Count, Digest, Known, TriggerTally, after_change,
                                       equal_values, found_contact, from_digests, holds,
                                       holds_for_digest, knowledge_holds, property_keys,
                                       request_change, verdicts, workflow_verdict)
from transforms.loops.workflows import Comparison, PropertyQuery, Trigger, Workflow


def cmp(operator, value=None):
    return Comparison(operator, value)


# ------------------------------------------------------------------ operators

@pytest.mark.parametrize('operator, target, value, expected', [
    ('any', None, None, True),
    ('any', None, 'pro', True),
    ('empty', None, None, True),
    ('empty', None, '', True),
    ('empty', None, 0, False),
    ('empty', None, False, False),
    ('not_empty', None, 'x', True),
    ('not_empty', None, None, False),
    ('equal', 'pro', 'pro', True),
    ('equal', 'pro', 'Pro', False),          # text compares exactly, case included
    ('equal', 'pro', 'pro plus', False),
    ('equal', 'pro', None, False),
    ('equal', '5', 5, True),                 # a number as Loops shows it
    ('equal', 5, 5.0, True),
    ('equal', 5, '5.0', False),
    ('equal', 'true', True, True),
    ('equal', '', '', False),                # an empty value equals nothing
    ('not_equal', 'pro', 'free', True),
    ('not_equal', 'pro', None, True),        # no value is not "pro"
    ('not_equal', 'pro', 'pro', False),
    ('contains', 'pro', 'pro plus', True),
    ('contains', 'pro', 'Pro plus', False),
    ('contains', 'pro', None, False),
    ('contains', 'pro', 5, False),
    ('not_contains', 'pro', 'free', True),
    ('not_contains', 'pro', None, True),
    ('not_contains', 'pro', 'pro', False),
    ('true', None, True, True),
    ('true', None, 'true', False),
    ('true', None, None, False),
    ('false', None, False, True),
    ('false', None, None, False),
    ('false', None, 0, False),
    ('greater_than', 10, 11, True),
    ('greater_than', 10, 10, False),
    ('greater_than', '10', 10.5, True),      # a bound given as text
    ('greater_than', 10, '11', False),       # a text value is no number
    ('greater_than', 10, None, False),
    ('greater_than', 10, True, False),
    ('less_than', 10, 9, True),
    ('less_than', 10, 10, False),
    ('numeric_equal', 3, 3.0, True),
    ('numeric_equal', 3, 4, False),
    ('numeric_equal', 3, None, False),
    ('numeric_not_equal', 3, 4, True),
    ('numeric_not_equal', 3, 3, False),
    ('numeric_not_equal', 3, None, True),
    ('after', '2026-01-01T00:00:00Z', '2026-06-01T00:00:00.000Z', True),
    ('after', '2026-01-01T00:00:00Z', '2025-06-01T00:00:00.000Z', False),
    ('after', '2026-01-01T00:00:00Z', 1780000000000, True),       # Unix ms
    ('after', '2026-01-01T00:00:00Z', None, False),
    ('after', '2026-01-01T00:00:00Z', 'soon', False),
    ('before', 1767225600000, '2025-12-31T23:59:59Z', True),
    ('before', 1767225600000, '2026-01-01T00:00:00Z', False),
])
def test_each_operator_on_a_value_known_exactly(operator, target, value, expected):
    assert holds(cmp(operator, target), value) is expected


@pytest.mark.parametrize('comparison', [
    cmp('between', ['2026-01-01', '2026-02-01']),   # no source says how it holds two bounds
    cmp('after', 'not a date'),                      # a bound that is no date
    cmp('matches', 'x'),                             # an operator Loops may add
])
def test_what_is_not_decided_is_none(comparison):
    assert holds(comparison, '2026-01-15T00:00:00Z') is None


TARGETS = ['pro', 'Pro', '5', 5, 5.0, 2.5, '2.5', '1e3', 'true', True, False, '', None]
VALUES = ['pro', 'Pro', 'pro plus', '5', '5.0', 5, 5.0, 1000, 2.5, True, False, '', None,
          '2026-01-01T00:00:00Z']
OPERATORS = ['any', 'empty', 'not_empty', 'equal', 'not_equal', 'true', 'false',
             'numeric_equal', 'numeric_not_equal']


@pytest.mark.parametrize('operator', OPERATORS)
def test_a_digest_decides_what_equality_decides_as_the_value_would(operator):
    for target, value in itertools.product(TARGETS, VALUES):
        comparison = cmp(operator, target)
        assert holds_for_digest(comparison, value_digest(value)) == holds(comparison, value), (
            operator, target, value)


@pytest.mark.parametrize('operator', ['contains', 'not_contains', 'greater_than', 'less_than',
                                      'after', 'before', 'between'])
def test_a_digest_leaves_the_other_operators_undecided(operator):
    assert holds_for_digest(cmp(operator, 'pro'), value_digest('pro plus')) is None


def test_knowing_nothing_decides_only_any():
    assert knowledge_holds(cmp('any'), None) is True
    assert knowledge_holds(cmp('equal', 'pro'), None) is None
    assert knowledge_holds(cmp('empty'), Known(None)) is True
    assert knowledge_holds(cmp('equal', 'pro'), Digest(value_digest('pro'))) is True


def test_equal_values_are_those_equal_finds_equal():
    assert equal_values('5') == ['5', 5, 5.0]
    assert equal_values('1e3') == ['1e3']
    assert equal_values(True) == ['true', True]
    assert equal_values('') == []


# ------------------------------------------------------------------ triggers

def workflow(*triggers, list_id=None, status='Sending', workflow_id='w1'):
    return Workflow(workflow_id, workflow_id.upper(),
                    f'https://app.loops.so/workflows/{workflow_id}', status, list_id,
                    tuple(triggers))


SIGNUP = Trigger('SignupTrigger')
PRO = Trigger('ContactPropertyTrigger', property_query=PropertyQuery(
    'plan', cmp('equal', 'pro'), cmp('any')))
PRO_FROM_FREE = Trigger('ContactPropertyTrigger', property_query=PropertyQuery(
    'plan', cmp('equal', 'pro'), cmp('equal', 'free')))
PRO_FROM_SMALL_TEAM = Trigger('ContactPropertyTrigger', property_query=PropertyQuery(
    'seats', cmp('greater_than', 10), cmp('less_than', 5)))
NEWS = Trigger('AddToListTrigger', list_id='list_news')
ORDER = Trigger('EventTrigger', event_name='Order Completed', re_eligible=True)

UPSERT_PRO = Change({'userId': 'u1', 'plan': 'pro'}, None, True)


@pytest.mark.parametrize('before, expected', [
    (NEW_CONTACT, True), (UNKNOWN_CONTACT, None), (found_contact({'userId': 'u1'}), False),
    (from_digests({'userId': ((1, 1, 'm'), value_digest('u1'))}), False)])
def test_signup_is_a_contact_created(before, expected):
    assert workflow_verdict(workflow(SIGNUP), before, UPSERT_PRO) is expected


def test_an_event_creates_only_with_an_email():
    by_user_id = Change({'userId': 'u1'}, 'Order Completed', False)
    by_email = Change({'email': 'a@example.com'}, 'Order Completed', True)
    assert workflow_verdict(workflow(SIGNUP), NEW_CONTACT, by_user_id) is False
    assert workflow_verdict(workflow(SIGNUP), NEW_CONTACT, by_email) is True


def test_an_event_by_user_id_creates_its_contact_with_its_fallback_email():
    def change(body):
        return request_change(event_send({'eventName': 'Order Completed', **body}, 'user:u1',
                                          NO_STAMP, 'm', 'segment-k'))
    with_email = change({'userId': 'u1', 'email': 'a@example.com'})
    assert (with_email.body, with_email.creates) == ({'userId': 'u1'}, True)
    assert change({'userId': 'u1'}).creates is False
    assert workflow_verdict(workflow(SIGNUP), NEW_CONTACT, with_email) is True


@pytest.mark.parametrize('before, trigger, expected', [
    (NEW_CONTACT, PRO, True),                    # created: a change from no value
    (NEW_CONTACT, PRO_FROM_FREE, False),         # ... which was not 'free'
    (UNKNOWN_CONTACT, PRO, None),                # the value before may be 'pro' already
    (found_contact({'plan': 'free'}), PRO_FROM_FREE, True),
    (found_contact({'plan': 'pro'}), PRO, False),            # no change
    (from_digests({'plan': ((1, 1, 'm'), value_digest('free'))}), PRO_FROM_FREE, True),
    (from_digests({'plan': ((1, 1, 'm'), value_digest('trial'))}), PRO_FROM_FREE, False),
    (from_digests({'plan': ((1, 1, 'm'), value_digest('pro'))}), PRO, False),
    (from_digests({'email': ((1, 1, 'm'), value_digest('a@x.io'))}), PRO, None),
])
def test_a_property_change_against_what_is_known_before(before, trigger, expected):
    assert workflow_verdict(workflow(trigger), before, UPSERT_PRO) is expected


def test_an_operator_a_digest_cannot_decide_is_at_most():
    change = Change({'userId': 'u1', 'seats': 12}, None, True)
    digests = from_digests({'seats': ((1, 1, 'm'), value_digest(3))})
    assert workflow_verdict(workflow(PRO_FROM_SMALL_TEAM), digests, change) is None
    assert workflow_verdict(workflow(PRO_FROM_SMALL_TEAM), found_contact({'seats': 3}),
                            change) is True
    assert workflow_verdict(workflow(PRO_FROM_SMALL_TEAM), found_contact({'seats': 7}),
                            change) is False


def test_a_new_contact_gets_loops_defaults_and_those_are_changes_too():
    subscribed = Trigger('ContactPropertyTrigger', property_query=PropertyQuery(
        'subscribed', cmp('true'), cmp('any')))
    change = Change({'userId': 'u1'}, None, True)
    assert workflow_verdict(workflow(subscribed), NEW_CONTACT, change) is True
    assert workflow_verdict(workflow(subscribed), UNKNOWN_CONTACT, change) is None
    assert workflow_verdict(workflow(subscribed), found_contact({'subscribed': True}),
                            change) is False


@pytest.mark.parametrize('before, lists, expected', [
    (NEW_CONTACT, {'list_news': True}, True),
    (NEW_CONTACT, {'list_news': False}, False),
    (NEW_CONTACT, {'list_product': True}, False),
    (found_contact({'mailingLists': {'list_news': True}}), {'list_news': True}, False),
    (found_contact({'mailingLists': {}}), {'list_news': True}, True),
    (UNKNOWN_CONTACT, {'list_news': True}, None),
    (from_digests({('mailingLists', 'list_news'): ((1, 1, 'm'), value_digest(False))}),
     {'list_news': True}, True),
])
def test_joining_a_list(before, lists, expected):
    change = Change({'userId': 'u1', 'mailingLists': lists}, None, True)
    assert workflow_verdict(workflow(NEWS), before, change) is expected


def test_an_event_of_the_triggers_exact_name():
    assert workflow_verdict(workflow(ORDER), UNKNOWN_CONTACT,
                            Change({'userId': 'u1'}, 'Order Completed', False)) is True
    assert workflow_verdict(workflow(ORDER), UNKNOWN_CONTACT,
                            Change({'userId': 'u1'}, 'order completed', False)) is False
    assert workflow_verdict(workflow(ORDER), UNKNOWN_CONTACT, UPSERT_PRO) is False
    by_pattern = Trigger('EventTrigger', event_pattern_id='pattern-9')
    assert workflow_verdict(workflow(by_pattern), UNKNOWN_CONTACT,
                            Change({'userId': 'u1'}, 'Anything', False)) is None


@pytest.mark.parametrize('before, body, expected', [
    (NEW_CONTACT, {'mailingLists': {'list_vip': True}}, True),
    (NEW_CONTACT, {}, False),
    (found_contact({'mailingLists': {'list_vip': True}}), {}, True),
    (UNKNOWN_CONTACT, {}, None),
    (UNKNOWN_CONTACT, {'mailingLists': {'list_vip': False}}, False),
])
def test_a_workflow_limited_to_a_list_takes_only_its_contacts(before, body, expected):
    change = Change({'userId': 'u1', 'plan': 'pro', **body}, None, True)
    assert workflow_verdict(workflow(PRO, list_id='list_vip'), before, change) is expected


def test_blank_and_unknown_trigger_kinds():
    assert workflow_verdict(workflow(Trigger('BlankTrigger')), NEW_CONTACT, UPSERT_PRO) is False
    assert workflow_verdict(workflow(Trigger('ScheduleTrigger')), NEW_CONTACT,
                            UPSERT_PRO) is None


def test_verdicts_leave_out_what_is_not_set_off():
    workflows = [workflow(SIGNUP, workflow_id='welcome'), workflow(PRO, workflow_id='pro'),
                 workflow(ORDER, workflow_id='order')]
    assert verdicts(workflows, UNKNOWN_CONTACT, UPSERT_PRO) == {'welcome': None, 'pro': None}
    assert verdicts(workflows, NEW_CONTACT, UPSERT_PRO) == {'welcome': True, 'pro': True}


def test_after_a_change_the_contact_exists_with_what_it_sent():
    after = after_change(NEW_CONTACT, Change({'userId': 'u1', 'plan': 'pro',
                                              'mailingLists': {'list_news': True}}, None, True))
    assert after.exists is True and after.complete is True
    assert after.of('plan') == Known('pro')
    assert after.of('source') == Known('API')
    assert after.of(('mailingLists', 'list_news')) == Known(True)
    assert after.of('seats') == Known(None)
    event = Change({'userId': 'u1'}, 'Signed Up', False)
    assert workflow_verdict(workflow(SIGNUP), after, event) is False
    unknown_after = after_change(UNKNOWN_CONTACT, UPSERT_PRO)
    assert unknown_after.exists is True and unknown_after.of('seats') is None


# ------------------------------------------------------------------ counting

def test_the_tally_counts_contacts_once_and_re_eligible_matches_each_time():
    welcome, order = workflow(SIGNUP, workflow_id='welcome'), workflow(ORDER, workflow_id='order')
    tally = TriggerTally([welcome, order])
    tally.add('user:u1', {'welcome': None})
    tally.add('user:u1', {'welcome': True})     # the same contact, now certain
    tally.add('user:u2', {'welcome': None})
    tally.add('user:u1', {'order': True})
    tally.add('user:u1', {'order': True})
    tally.add('user:u2', {'order': None})

    assert tally.counts() == {'welcome': Count(1, 1), 'order': Count(2, 1)}
    assert Count(1, 1).at_most == 2 and not Count(1, 1).exact and Count(3, 0).exact


def test_property_keys_a_run_must_keep():
    assert property_keys([workflow(SIGNUP), workflow(PRO), workflow(ORDER)]) == {'plan'}
    assert property_keys([workflow(NEWS)]) == {'mailingLists'}
    assert property_keys([workflow(SIGNUP, list_id='list_vip')]) == {'mailingLists'}


def test_a_contact_before_knows_nothing_of_what_it_was_not_told():
    partial = ContactBefore(True, {'plan': Known('pro')})
    assert partial.of('plan') == Known('pro') and partial.of('seats') is None
