"""What a backfill's delivered requests set off in the workflows it was
allowed to set off (`--allow_workflows`), counted in the pipeline as the
guard's pass counts them (pipeline/trigger_scan.py), contact by contact.

    sequences of every phase  -> per contact, its requests: its upsert first,
                                 then its events in the order they were sent
    the writers' failure records (stage deliver)
                              -> what Loops did not take: a request that
                                 failed, or the part of an upsert it refused
    the sync state's contact facts (with --state)
                              -> what the contact held before (digests)
      CoGroupByKey by contact -> each delivered change held against the
                                 workflows (transforms/loops/triggers.py)
      -> counters, per workflow id:
           workflows/<id>/set_off      contacts it took in (a re-eligible
                                       one: times)
           workflows/<id>/may_set_off  more it may have: what decides it was
                                       not known

The requests (as small records: only the properties the triggers read)
and the state's contact facts are grouped by contact a second time for
this, only when some workflow is allowed; the join waits for the writers'
failures, so the count is of what Loops accepted.
"""
import json
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam

from transforms.core.digests import contact_digest
from transforms.core.metrics import BundleCounts
from transforms.core.records import ContactSequence, LoopsRequest
from transforms.loops.triggers import (NEW_CONTACT, UNKNOWN_CONTACT, Change, ContactBefore,
                                       TriggerTally, after_change, from_digests, property_keys,
                                       request_change, verdicts)
from transforms.state.facts import IDENTITY_KEYS, Facts, fold
from transforms.state.files import CONTACTS

SET_OFF, MAY_SET_OFF = 'set_off', 'may_set_off'
SENT, FAILED, STATE = 'sent', 'failed', 'state'


def counter_name(workflow_id: str, verdict: str) -> str:
    """'workflows/<id>/set_off' or '.../may_set_off'."""
    return f'workflows/{workflow_id}/{verdict}'


def before_from_facts(facts: Optional[Facts]) -> ContactBefore:
    """What the sync state knows of a contact before a run: it exists, with
    the digests of what this tool delivered; a contact it deleted, with
    nothing delivered since, does not; one it never delivered is unknown."""
    if facts is not None and facts.properties:
        return from_digests(facts.properties)
    if facts is not None and facts.deleted is not None:
        return NEW_CONTACT
    return UNKNOWN_CONTACT


class Sent(NamedTuple):
    """One request as the count needs it: an upsert or not, its
    Idempotency-Key, its body's keys, and its change (triggers.Change)."""
    upsert: bool
    key: Optional[str]
    keys: frozenset
    change: Change


class Failed(NamedTuple):
    """What Loops did not take of one request: its Idempotency-Key (an
    event) and its body's keys (an upsert: the refused part, or all)."""
    key: Optional[str]
    keys: frozenset


def sent_of(sequence: ContactSequence, keys: frozenset) -> tuple:
    """(contact digest, (order, [Sent, ...])): a contact's upsert sorts
    before its events, an event part after the one before it."""
    requests = [Sent(request.spec.mergeable, request.idempotency_key,
                     frozenset(request.body), request_change(request, keys))
                for request in sequence.requests]
    upsert = all(item.upsert for item in requests)
    return contact_digest(sequence.contact), ((0 if upsert else 1, sequence.part), requests)


def failed_of(record: dict) -> list:
    """A writer's failure record -> [(contact digest, Failed)] ([] for one
    that names no request this tool makes)."""
    try:
        request = LoopsRequest.from_dict(json.loads(record.get('request') or 'null'))
    except ValueError:
        return []
    return [(contact_digest(request.contact),
             Failed(request.idempotency_key, frozenset(request.body)))]


def delivered_change(sent: Sent, failed: Iterable[Failed]) -> Optional[Change]:
    """The part of a sent request Loops took: None when it took none of it;
    an upsert without the properties it refused."""
    if sent.key is not None:
        return None if any(f.key == sent.key for f in failed) else sent.change
    refused = set()
    for failure in failed:
        if failure.key is None:
            refused |= failure.keys - set(IDENTITY_KEYS)
    if refused >= sent.keys - set(IDENTITY_KEYS):
        return None
    body = {key: value for key, value in sent.change.body.items() if key not in refused}
    return sent.change._replace(body=body)


def contact_counts(workflows: tuple, before: ContactBefore, sent: Iterable[tuple],
                   failed: list) -> dict:
    """One contact's sent parts ((order, [Sent])) -> workflow id -> Count."""
    tally = TriggerTally(workflows)
    for _, requests in sorted(sent, key=lambda part: part[0]):
        for item in requests:
            change = delivered_change(item, failed)
            if change is None:
                continue
            tally.add('', verdicts(workflows, before, change))
            before = after_change(before, change)
    return tally.counts()


class _CountContact(beam.DoFn):
    def __init__(self, workflows: tuple):
        self._workflows = workflows

    def setup(self):
        self._counts = BundleCounts()

    def process(self, joined):
        _, grouped = joined
        sent = list(grouped[SENT])
        if not sent:
            return
        facts = list(grouped.get(STATE, ()))
        before = before_from_facts(fold(facts) if facts else None)
        counts = contact_counts(self._workflows, before, sent, list(grouped[FAILED]))
        for workflow_id, count in counts.items():
            self._counts[counter_name(workflow_id, SET_OFF)] += count.certain
            self._counts[counter_name(workflow_id, MAY_SET_OFF)] += count.possible

    def finish_bundle(self):
        self._counts.flush()


class CountSetOff(beam.PTransform):
    """Sequences of every phase (a tuple of PCollections), with the writers'
    `failures` and the sync state's `facts` ((partition, digest, Facts), or
    None) -> the counters of the module docstring; nothing to wait for."""

    def __init__(self, workflows: Iterable, failures, facts=None):
        super().__init__()
        self._workflows = tuple(workflows)
        self._keys = property_keys(self._workflows)
        self._failures = failures
        self._facts = facts

    def expand(self, sequences):
        joined = {
            SENT: (sequences | 'AllSent' >> beam.Flatten()
                   | 'SentByContact' >> beam.Map(sent_of, self._keys)),
            FAILED: self._failures | 'FailedByContact' >> beam.FlatMap(failed_of),
        }
        if self._facts is not None:
            joined[STATE] = self._facts | 'StateByContact' >> beam.FlatMap(
                lambda fact: [(fact[1], fact[2])] if fact[0] == CONTACTS else [])
        return (joined
                | 'JoinByContact' >> beam.CoGroupByKey()
                | 'CountContacts' >> beam.ParDo(_CountContact(self._workflows)))
