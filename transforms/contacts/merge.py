"""From partial contact states to one contact upsert per contact.

    partial states -> MergeContacts (CombinePerKey: the latest value of every
    property wins) -> ResolveLeads (an email-only contact whose email is the
    latest email of exactly one userId contact is merged into it)
    -> UpsertsFromStates (consent: a backfill never sends subscribed: true
    unless told to) -> ContactSequence, one upsert each

The pure functions (`resolve_leads`, `upsert_from_state`) also serve `check`.
"""
import dataclasses
import pickle
from typing import Iterable, Optional

import apache_beam as beam

from transforms.contacts.model import (ContactState, MergeContactStates, body_of, email_of,
                                       latest_stamp, merge, stamps_of)
from transforms.core.metrics import BundleCounts
from transforms.core.records import ContactSequence, LoopsRequest, contact_upsert
from transforms.mapping.processor import without_resubscribe

USER_PREFIX, EMAIL_PREFIX = 'user:', 'email:'
UNSUBSCRIBES = 'contacts/unsubscribes'
PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


def lead_email(contact: str) -> Optional[str]:
    """The email of an email-only contact key, None for a userId contact."""
    return contact[len(EMAIL_PREFIX):] if contact.startswith(EMAIL_PREFIX) else None


def resolve_leads(users: list, leads: list, counts) -> list:
    """The userId contacts (contact, state) whose latest email is an address,
    and the email-only states (leads) of that address -> the contacts to send.

    With exactly one such userId contact, the leads merge into it (the latest
    value of every property wins; counted `contacts/leads_merged`). With none,
    the leads merge into one contact of their own. With several (the same
    latest email on two userIds), nothing merges: Loops matches an update by
    email to one of them, so each is sent as it is (counted
    `contacts/ambiguous_leads`).
    """
    if not leads:
        return list(users)
    lead = merge(*leads)
    lead_key = EMAIL_PREFIX + email_of(lead).lower()
    if len(users) == 1:
        counts['contacts/leads_merged'] += 1
        contact, state = users[0]
        return [(contact, merge(state, lead))]
    if users:
        counts['contacts/ambiguous_leads'] += 1
    return list(users) + [(lead_key, lead)]


def resolve_group(group: Iterable[tuple], counts) -> list:
    """The contacts (contact, state) that met at one meeting key -> the
    contacts to send (resolve_leads of its userId contacts and its leads)."""
    users, leads = [], []
    for contact, state in group:
        if contact.startswith(EMAIL_PREFIX):
            leads.append(state)
        else:
            users.append((contact, state))
    return resolve_leads(users, leads, counts)


def count_unsubscribe(body: dict, counts) -> None:
    """Counts `contacts/unsubscribes` for a request body that sends
    `subscribed: false` (an upsert's, or an event's contact fields): an
    opt-out is always sent."""
    if body.get('subscribed') is False:
        counts[UNSUBSCRIBES] += 1


def upsert_from_state(contact: str, state: ContactState, resubscribe: bool,
                      counts, keep_stamps: bool = False) -> LoopsRequest:
    """A contact's merged state -> its upsert. Unless `resubscribe`, a latest
    `subscribed: true` is left out, counted `held_back/resubscribes`: the
    consent rule every request that can set `subscribed` follows
    (without_resubscribe, transforms/mapping/processor.py). An opt-out
    (`false`) is always sent: counted `contacts/unsubscribes`. With
    `keep_stamps`, the upsert carries each property's stamp
    (`LoopsRequest.stamps`, for the sync state)."""
    body = body_of(state)
    if not resubscribe:
        body = without_resubscribe(body, counts)
    count_unsubscribe(body, counts)
    sources = sorted({stamp[2] for stamp, _ in state.values() if stamp[2]})
    upsert = contact_upsert(body, contact, latest_stamp(state), ','.join(sources))
    if keep_stamps:
        return dataclasses.replace(upsert, stamps=stamps_of(state))
    return upsert


def meeting_key(contact: str, state: ContactState) -> str:
    """Where a contact meets the others that may be the same person: its
    latest email ('email:<address>'), or its own key when it has none."""
    email = email_of(state)
    return EMAIL_PREFIX + email.lower() if email is not None else contact


class _ResolveLeads(beam.DoFn):
    def setup(self):
        self._counts = BundleCounts()

    def process(self, grouped):
        _, encoded = grouped
        yield from resolve_group(map(pickle.loads, encoded), self._counts)

    def finish_bundle(self):
        self._counts.flush()


class ResolveLeads(beam.PTransform):
    """(contact, state) -> (contact, state), email-only contacts merged into
    the userId contact whose latest email they have (see resolve_leads).
    Contacts meet by their latest email; they cross the shuffle pickled (one
    call each, instead of Beam's coder on every stamp)."""

    def expand(self, states):
        return (states
                | 'KeyByEmail' >> beam.Map(
                    lambda keyed: (meeting_key(*keyed), pickle.dumps(keyed, PICKLE_PROTOCOL)))
                | 'MeetByEmail' >> beam.GroupByKey()
                | 'Resolve' >> beam.ParDo(_ResolveLeads()))


class MergeContacts(beam.PTransform):
    """(contact, partial ContactState) -> (contact, ContactState): one state
    per contact, every property's latest value, leads resolved."""

    def expand(self, partial_states):
        return (partial_states
                | 'MergePerContact' >> beam.CombinePerKey(MergeContactStates())
                | 'ResolveLeads' >> ResolveLeads())


class _ToUpsert(beam.DoFn):
    def __init__(self, resubscribe: bool, keep_stamps: bool):
        self._resubscribe = resubscribe
        self._keep_stamps = keep_stamps

    def setup(self):
        self._counts = BundleCounts()

    def process(self, keyed):
        contact, state = keyed
        self._counts['contacts/upserts'] += 1
        yield ContactSequence(contact, (upsert_from_state(
            contact, state, self._resubscribe, self._counts, self._keep_stamps),))

    def finish_bundle(self):
        self._counts.flush()


class UpsertsFromStates(beam.PTransform):
    """(contact, ContactState) -> ContactSequence of one upsert (see
    upsert_from_state; `keep_stamps` when a sync state records them).
    Counts `contacts/upserts`."""

    def __init__(self, resubscribe: bool, keep_stamps: bool = False):
        super().__init__()
        self._resubscribe = resubscribe
        self._keep_stamps = keep_stamps

    def expand(self, states):
        return states | 'ToUpsert' >> beam.ParDo(_ToUpsert(self._resubscribe, self._keep_stamps))


def merged_states(updates: Iterable[tuple], counts) -> list:
    """(contact, state) pairs -> [(contact, state)], one per contact, leads
    resolved: MergeContacts as a plain loop (check, tests, benchmarks)."""
    states = {}
    for contact, state in updates:
        states[contact] = merge(states.get(contact, {}), state)
    return resolved_contacts(states, counts)


def resolved_contacts(states: dict, counts) -> list:
    """{contact: merged state} -> [(contact, state)], leads resolved (the
    plain-loop form of ResolveLeads)."""
    meetings = {}
    for contact, state in states.items():
        meetings.setdefault(meeting_key(contact, state), []).append((contact, state))
    return [resolved for group in meetings.values()
            for resolved in resolve_group(group, counts)]
