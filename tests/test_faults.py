"""Nothing is lost when Loops misbehaves: the backfill and the stream under
injected faults (429 storms, 5xx before and after processing, dropped
connections, answers slower than the timeout, an outage), against the local
sandbox over real HTTP.

After each run: every input line is accounted for, every contact holds exactly
what the mapped and merged identify calls say, every event exists exactly once,
and everything else is a failure record whose reason says why.
"""
import collections
import json
import os
import re
import threading
import time
from typing import Optional

import pytest

from pipeline import backfill
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from pipeline.summary import unaccounted
from transforms.contacts.merge import merged_states, upsert_from_state
from transforms.contacts.model import state_of
from transforms.core.records import RawEvent, contact_key, derived_key, idempotency_key_for
from transforms.core.sinks import read_failure_records
from transforms.delivery.in_flight import FALLBACK_SALT
from transforms.mapping.language import default_mapping
from transforms.mapping.processor import EventProcessor, Selection

API_KEY = 'fault-test-key'
REASON = re.compile(r'^[a-z][a-z0-9_]*$')
# What the sandbox holds for a contact before any property is set (find's
# contact, loops-openapi.yaml `Contact`).
NEW_CONTACT = {'email': None, 'userId': None, 'firstName': None, 'lastName': None,
               'source': 'API', 'subscribed': True, 'userGroup': '', 'mailingLists': {},
               'optInStatus': None}


# ------------------------------------------------------------------ the oracle

class Expected:
    """What Loops must hold after delivering `events`, from the one per-event
    path and the contact model: per contact the body of its merged upsert
    (leads resolved, consent applied), and per Idempotency-Key the body of
    each event send and its fallback email. Events of any age (runs use
    --max_event_age none)."""

    def __init__(self, events, mapping=None, resubscribe=False):
        processor = EventProcessor(Selection(('identify', 'track'), None,
                                             mapping or default_mapping()))
        counts = collections.Counter()
        updates, self.sends, self.fallback_emails = [], {}, {}
        for number, event in enumerate(events, start=1):
            raw = RawEvent('expected', number, json.dumps(event))
            for request in processor.process(raw, counts).requests:
                if request.spec.mergeable:
                    updates.append((request.contact, state_of(request.body, request.stamp)))
                else:
                    self.sends[request.idempotency_key] = request.body
                    self.fallback_emails[request.idempotency_key] = request.fallback_email
        self.contacts = {contact: upsert_from_state(contact, state, resubscribe, counts).body
                         for contact, state in merged_states(updates, counts)}

    @property
    def unsendable_upserts(self) -> set:
        """Contacts whose merged upsert has no email: Loops can't create them (400)."""
        return {contact for contact, body in self.contacts.items() if 'email' not in body}

    @property
    def unsendable_events(self) -> set:
        """Keys of events with no email, nor one to fall back on, whose
        contact can't exist: Loops finds no contact by the userId alone (400)."""
        known = {body['userId'] for body in self.contacts.values()
                 if 'email' in body and 'userId' in body}
        return {key for key, body in self.sends.items()
                if 'email' not in body and self.fallback_emails[key] is None
                and body['userId'] not in known}

    def own_key(self, key: str, rekeyed: dict) -> str:
        """The key of the event Loops stored under `key`: its own, one it was
        re-sent under (`rekeyed`: a replay of a refusal), or either's
        with its fallback email."""
        key = self._fallback_keys(rekeyed).get(key, key)
        return rekeyed.get(key, key)

    def _fallback_keys(self, rekeyed: dict) -> dict:
        sent = [*self.sends, *rekeyed]
        return {fallback_request_key(key): key for key in sent}


def contact_state(body: dict) -> dict:
    """A merged upsert body -> the contact Loops holds after it (on a new contact)."""
    state = {**NEW_CONTACT, **body}
    # Loops keeps the lists a contact is on, each true.
    state['mailingLists'] = {list_id: True for list_id, on in
                             body.get('mailingLists', {}).items() if on}
    return state


def loops_key(contact: dict) -> str:
    """The contact key of a contact Loops holds (as the pipeline keys it)."""
    return contact_key(contact['userId'], contact['email'])


def assert_loops_holds(expected: Expected, state: dict, deliver_failures: list,
                       rekeyed: Optional[dict] = None) -> None:
    """Every expected contact and event is in Loops exactly as it should be;
    the only delivery failures are the requests Loops must refuse, with the
    reason. `rekeyed` maps the keys events were re-sent under (a replay of a
    refusal) to their own."""
    rekeyed = rekeyed or {}
    contacts = {}
    for contact in state['contacts']:
        key = loops_key(contact)
        assert key not in contacts, f'two contacts for {key}'
        contacts[key] = {k: v for k, v in contact.items() if k != 'id'}
    event_users = {f'user:{body["userId"]}' for body in expected.sends.values()
                   if 'userId' in body}
    assert set(contacts) <= set(expected.contacts) | event_users

    failed_upserts, failed_events = {}, {}
    for record in deliver_failures:
        request = json.loads(record['request'])
        assert (record['reason'], record['http_status']) == ('http_400', 400), record
        if request['path'] == '/v1/contacts/update':
            body = request['body']
            failed_upserts[contact_key(body.get('userId'), body.get('email'))] = record
            assert 'cannot create a new contact without an email' in record['message']
        else:
            # By the event's messageId: a replay of a refusal has a key of its own.
            failed_events[idempotency_key_for(record['source'])] = record
            assert 'Contact not found' in record['message']
    assert set(failed_upserts) == expected.unsendable_upserts
    assert set(failed_events) == expected.unsendable_events

    for contact, body in expected.contacts.items():
        if contact not in failed_upserts:
            assert contacts[contact] == contact_state(body), contact

    sends = collections.Counter(expected.own_key(event['idempotency_key'], rekeyed)
                                for event in state['events'])
    assert sends == {key: 1 for key in expected.sends if key not in failed_events}
    for event in state['events']:
        body = expected.sends[expected.own_key(event['idempotency_key'], rekeyed)]
        assert (event['eventName'], event['userId']) == (body['eventName'], body.get('userId'))
        assert event['eventProperties'] == body.get('eventProperties', {})


def fallback_request_key(key: str) -> str:
    """The key an event sent under `key` goes again under with its fallback email."""
    return derived_key(key, FALLBACK_SALT)


def assert_failure_records_say_why(failures: list) -> None:
    for record in failures:
        assert REASON.match(record['reason']) and record['message'], record
        if record['stage'] == 'deliver':
            assert record['request'] and record['attempts'] >= 1, record
        else:
            # The event as it came (an empty line is ''), or the unreadable file.
            assert record['event'] is not None or record['stage'] == 'read', record
            assert record['source'], record


# ------------------------------------------------------------------- backfill

@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp('archive')
    manifest = write_archive(str(root), users=12, days=2, seed=29)
    return manifest, Expected(manifest.events)


def run_backfill(sandbox, manifest, tmp_path, *loops_args):
    key_file = tmp_path / 'key'
    key_file.write_text(API_KEY)
    summary = backfill.run([
        '--input', os.path.join(manifest.root, 'segment-logs', '*', '*', '*'),
        '--types', 'identify,track', '--max_event_age', 'none',
        '--dead_letter', str(tmp_path / 'dead-letter') + '/',
        '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file),
        *loops_args], out=open(os.devnull, 'w'))
    return summary, read_failure_records(str(tmp_path / 'dead-letter') + '/')


def outage_after(sandbox, requests: int, seconds: float) -> None:
    """Starts an outage once the sandbox has seen `requests` API requests."""
    def wait_then_go_down():
        deadline = time.monotonic() + 60
        while len(sandbox.state()['requests']) < requests and time.monotonic() < deadline:
            time.sleep(0.02)
        sandbox.outage(seconds)
    threading.Thread(target=wait_then_go_down, daemon=True).start()


STEADY = ['--rate_limit', '60', '--max_attempts', '12', '--read_timeout', '2']

# (sandbox settings, client options, an outage (after n requests, seconds),
#  what the sandbox's request log must show happened)
FAULTS = {
    '429_storm': (dict(rate_limit=20), ['--rate_limit', '100', '--write_shards', '2',
                                        '--max_attempts', '15'], None, {429}),
    '5xx_before_processing': (dict(fail_before=0.3), STEADY, None, {500}),
    '5xx_after_processing': (dict(fail_after=0.3), STEADY, None, {500, 409}),
    'dropped_connections': (dict(drop_before=0.15, drop_after=0.15), STEADY, None, {None, 409}),
    'slower_than_timeout': (dict(slow_after=0.2, slow_seconds=1.0),
                            ['--rate_limit', '60', '--max_attempts', '12', '--read_timeout',
                             '0.3'], None, {409}),
    'outage_and_back': ({}, STEADY, (15, 2.0), {None}),
    'all_at_once': (dict(rate_limit=15, fail_before=0.05, fail_after=0.05, drop_before=0.05,
                         drop_after=0.05, slow_after=0.05, slow_seconds=1.0),
                    ['--rate_limit', '60', '--max_attempts', '15', '--read_timeout', '0.5'],
                    # No 429 is required here: the writer paces at the limit Loops
                    # advertises from its first answer on (429_storm makes them).
                    (20, 1.0), {500, None, 409}),
}


@pytest.mark.parametrize('fault', FAULTS)
def test_backfill_loses_nothing_and_repeats_nothing(fault, archive, tmp_path):
    manifest, expected = archive
    settings, loops_args, outage, statuses_seen = FAULTS[fault]
    settings = {'rate_limit': 60, 'latency': (0.002, 0.01), **settings}
    with LoopsSandbox(API_KEY, seed=17, **settings) as sandbox:
        if outage:
            outage_after(sandbox, *outage)
        summary, failures = run_backfill(sandbox, manifest, tmp_path, *loops_args)
        state = sandbox.state()

    assert summary['read'] == manifest.lines and unaccounted(summary) == 0
    assert (summary['contacts'], summary['events']) == (len(expected.contacts),
                                                        len(expected.sends))
    assert (summary['delivered'] + summary['already_delivered'] + summary['delivery_failed']
            == summary['contacts'] + summary['events'])
    assert len(failures) == (summary['files_unreadable'] + summary['parse_failed']
                             + summary['map_failed'] + summary['refused/invalid_email']
                             + summary['delivery_failed'])
    assert_failure_records_say_why(failures)
    deliver_failures = [f for f in failures if f['stage'] == 'deliver']
    assert_loops_holds(expected, state, deliver_failures)
    # The faults did happen, and were retried through.
    assert statuses_seen <= {r['status'] for r in state['requests']}
    assert summary['retries'] > 0
    if 429 in statuses_seen:
        assert summary['rate_limited'] > 0
