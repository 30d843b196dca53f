"""One upsert per contact: merged, leads resolved, consent kept."""
import collections

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.contacts.merge import (MergeContacts, UpsertsFromStates, resolve_leads,
                                       upsert_from_state)
from transforms.contacts.model import body_of, state_of
from transforms.core.records import Stamp


def state(body, t, message_id='m'):
    return state_of(body, Stamp(t, 0, f'{message_id}{t}'))


def test_a_lead_merges_into_the_one_user_with_its_latest_email():
    counts = collections.Counter()
    user = ('user:u1', state({'userId': 'u1', 'email': 'ann@x.io', 'plan': 'pro'}, 5))
    lead = state({'email': 'Ann@X.io', 'newsletter': True, 'plan': 'free'}, 3)
    [(contact, merged)] = resolve_leads([user], [lead], counts)
    assert contact == 'user:u1'
    # The lead's email (same address) is older: the user's spelling stays.
    assert body_of(merged) == {'userId': 'u1', 'email': 'ann@x.io', 'plan': 'pro',
                               'newsletter': True}
    assert counts == {'contacts/leads_merged': 1}


def test_leads_of_one_address_with_no_user_become_one_contact():
    counts = collections.Counter()
    leads = [state({'email': 'b@x.io', 'a': 1}, 1), state({'email': 'B@x.io', 'b': 2}, 2)]
    [(contact, merged)] = resolve_leads([], leads, counts)
    assert contact == 'email:b@x.io' and body_of(merged) == {'email': 'B@x.io', 'a': 1, 'b': 2}
    assert not counts


def test_a_lead_claimed_by_two_users_merges_into_neither():
    counts = collections.Counter()
    users = [('user:u1', state({'userId': 'u1', 'email': 'c@x.io'}, 1)),
             ('user:u2', state({'userId': 'u2', 'email': 'c@x.io'}, 2))]
    resolved = dict(resolve_leads(users, [state({'email': 'c@x.io', 'x': 1}, 3)], counts))
    assert set(resolved) == {'user:u1', 'user:u2', 'email:c@x.io'}
    assert counts == {'contacts/ambiguous_leads': 1}


@pytest.mark.parametrize('subscribed, resubscribe, sent, counted', [
    (True, False, None, 'held_back/resubscribes'),
    (True, True, True, None),
    (False, False, False, 'contacts/unsubscribes'),
    (False, True, False, 'contacts/unsubscribes'),
])
def test_consent(subscribed, resubscribe, sent, counted):
    counts = collections.Counter()
    request = upsert_from_state('user:u1', state({'userId': 'u1', 'subscribed': subscribed}, 1),
                                resubscribe, counts)
    assert request.body.get('subscribed') == sent
    assert dict(counts) == ({counted: 1} if counted else {})


def test_an_opt_in_after_an_opt_out_is_held_back_not_turned_into_the_opt_out():
    merged = state({'userId': 'u', 'subscribed': False}, 1)
    merged.update(state({'subscribed': True}, 2))
    request = upsert_from_state('user:u', merged, False, collections.Counter())
    assert request.body == {'userId': 'u'}


def test_merge_contacts_and_upserts_in_a_pipeline():
    partials = [('user:u1', state({'userId': 'u1', 'plan': 'pro'}, 9)),
                ('user:u1', state({'userId': 'u1', 'plan': 'free', 'email': 'a@x.io'}, 1)),
                ('email:a@x.io', state({'email': 'a@x.io', 'lead': True}, 4)),
                ('email:z@x.io', state({'email': 'z@x.io', 'subscribed': True}, 4)),
                ('user:u2', state({'userId': 'u2', 'subscribed': False}, 3))]
    with TestPipeline(runner='FnApiRunner') as p:
        upserts = (p | beam.Create(partials) | MergeContacts() | UpsertsFromStates(False)
                   | beam.Map(lambda s: (s.contact, sorted(s.requests[0].body.items()))))
        assert_that(upserts, equal_to([
            ('user:u1', sorted({'userId': 'u1', 'plan': 'pro', 'email': 'a@x.io',
                                'lead': True}.items())),
            ('email:z@x.io', [('email', 'z@x.io')]),
            ('user:u2', [('subscribed', False), ('userId', 'u2')])]))
