"""A default backfill into an account that already holds an unsubscribed
contact, of an archive mixing what a real account must be protected from:
old events, re-subscription by history, leads without a userId, a colon in an
event name, an unknown mailing list, an empty property name, a byte-order mark."""
import collections
import datetime
import gzip
import json
import os

from pipeline import backfill
from pipeline.local.sandbox import LoopsSandbox
from pipeline.summary import unaccounted
from transforms.core.records import idempotency_key_for
from transforms.core.sinks import read_failure_records

KEY = 'safety-test-key'
NOW = datetime.datetime.now(datetime.timezone.utc)
LAST_YEAR = (NOW - datetime.timedelta(days=365)).isoformat()
YESTERDAY = (NOW - datetime.timedelta(hours=30)).isoformat()
AN_HOUR_AGO = (NOW - datetime.timedelta(hours=1)).isoformat()


def identify(message_id, user_id, when, **traits):
    return {'type': 'identify', 'messageId': message_id, 'userId': user_id, 'timestamp': when,
            'receivedAt': when, 'traits': traits}


def track(message_id, user_id, when, name, **properties):
    return {'type': 'track', 'messageId': message_id, 'userId': user_id, 'timestamp': when,
            'receivedAt': when, 'event': name, 'properties': properties}


EVENTS = [
    # Its own history says subscribed: true; it unsubscribed in Loops since.
    identify('i1', 'u-gone', LAST_YEAR, email='gone@example.com', subscribed=True, plan='pro'),
    # An opt-out written as text, as many sources send it.
    identify('i2', 'u-out', YESTERDAY, email='out@example.com', subscribed='false'),
    # A newsletter sign-up: an email, no userId.
    identify('i3', None, YESTERDAY, email='lead@example.com', newsletter=True),
    # A list the account lacks beside one it has, and a property name Loops can't take.
    identify('i4', 'u-lists', YESTERDAY, email='lists@example.com',
             mailingLists={'list_news': True, 'list_gone': True}, **{'': 'nameless', 'seats': 3}),
    track('t1', 'u-gone', LAST_YEAR, 'Order Completed', orderId='old'),
    track('t2', 'u-gone', AN_HOUR_AGO, 'Order Completed', orderId='new'),
    track('t3', None, AN_HOUR_AGO, 'Signed Up', email='buyer@example.com'),
    track('t4', 'u-gone', AN_HOUR_AGO, 'Billing: Paid'),
]


def write_archive(folder):
    os.makedirs(folder)
    lines = [json.dumps(event) for event in EVENTS]
    with gzip.open(os.path.join(folder, 'events.gz'), 'wb') as f:
        # Saved by an editor that starts files with a UTF-8 byte-order mark.
        f.write(b'\xef\xbb\xbf' + '\n'.join(lines).encode('utf-8') + b'\n')


def test_a_default_backfill_does_only_what_the_owner_would_do_by_hand(tmp_path):
    folder = str(tmp_path / 'segment-logs' / 'src' / '1793491200000')
    write_archive(folder)
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    unsubscribed = {'email': 'gone@example.com', 'userId': 'u-gone', 'subscribed': False}
    with LoopsSandbox(KEY, rate_limit=0, contacts=[unsubscribed]) as sandbox:
        summary = backfill.run([
            '--input', os.path.join(folder, '*.gz'), '--types', 'identify,track',
            '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file),
            '--dead_letter', str(tmp_path / 'dl') + '/'], out=open(os.devnull, 'w'))
        state = sandbox.state()

    contacts = {c['email']: c for c in state['contacts']}
    # Still unsubscribed: history never turns a subscription back on ...
    assert contacts['gone@example.com']['subscribed'] is False
    assert contacts['gone@example.com']['plan'] == 'pro'
    # ... and a text opt-out is an opt-out.
    assert contacts['out@example.com']['subscribed'] is False
    # The lead and the event by email made their contacts.
    assert contacts['lead@example.com']['userId'] is None
    assert contacts['lead@example.com']['newsletter'] is True
    assert 'buyer@example.com' in contacts
    # The refused list cost only itself; the empty name was left out.
    assert contacts['lists@example.com']['mailingLists'] == {'list_news': True}
    assert contacts['lists@example.com']['seats'] == 3 and '' not in contacts['lists@example.com']
    # Only recent events, each once; the old one held back.
    sent = collections.Counter(e['idempotency_key'] for e in state['events'])
    assert sent == {idempotency_key_for('t2'): 1, idempotency_key_for('t3'): 1}

    failures = read_failure_records(str(tmp_path / 'dl') + '/')
    assert sorted((f['stage'], f['reason']) for f in failures) == [
        ('conform', 'unknown_mailing_list'), ('map', 'colon_in_event_name')]
    assert "'list_gone'" in next(f['message'] for f in failures if f['stage'] == 'conform')
    assert summary['held_back_events'] == 1 and summary['held_back_resubscribes'] == 1
    assert summary['read'] == len(EVENTS) and summary['parse_failed'] == 0
    assert summary['map/dropped_invalid_name'] == 1 and summary['delivery_failed'] == 0
    assert unaccounted(summary) == 0
