"""--segment_subscriptions: a Segment "Loops (Actions)" destination's own
subscriptions as the mapping of a run.

The live setup (data/segment/subscriptions_live_setup.json: the destination's
default subscriptions, a `Signed Up` track -> createOrUpdateContact with a
@template name and an @if email, a disabled subscription and one of an action
Loops' destination does not have) and its calls, with the requests Segment's
own code made for each (subscriptions_live_calls.json), run through one
backfill: it sends, for each call, exactly Segment's requests, but where one of
this tool's documented rules decides otherwise (docs/mapping.md, "Differences
from Segment's destination"; each difference below says why).
"""
import collections
import glob
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from pipeline import backfill
from pipeline.options import UsageError
from pipeline.summary import unaccounted
from transforms.core.records import RawEvent, idempotency_key_for
from transforms.core.sinks import read_failure_records
from transforms.mapping.processor import EventProcessor, Policy, Selection
from transforms.mapping.segment_routes import segment_mapping

DATA = Path(__file__).parent / 'data' / 'segment'
LIVE_SETUP = str(DATA / 'subscriptions_live_setup.json')
LIVE_CALLS = json.loads(
    (DATA / 'subscriptions_live_calls.json').read_text(encoding='utf-8'))['calls']
LOOPS_API = 'https://app.loops.so/api'
EMPTY_MAILING_LISTS = 'an empty mailingLists changes nothing in Loops: it is not sent'
CONSENT = ('a backfill never sends subscribed: true without --resubscribe: it would '
           're-subscribe whoever unsubscribed since')
FALLBACK_EMAIL = ("an event that has a userId goes without its email, which would set the "
                  "contact's email to the event's; it is kept aside, sent only if Loops has no "
                  'contact of that userId')
NAMES = {'sub_identify_contact': "subscription 'Create or update a contact' "
                                 "(id sub_identify_contact, createOrUpdateContact)",
         'sub_track_event': "subscription 'Send Event' (id sub_track_event, sendEvent)",
         'sub_signed_up_contact': "subscription 'Signed Up -> contact' "
                                  "(id sub_signed_up_contact, createOrUpdateContact)"}


class Difference(NamedTuple):
    """Where our request for a call and subscription is not Segment's, and why."""
    why: str
    body: dict


# (messageId, subscription) -> our request's body, where a rule of ours decides.
DIFFERENCES = {
    ('msg-1', 'sub_identify_contact'): Difference(
        'mailing-list flags are read as a yes or a no, as subscribed is: "yes" is a yes '
        '(Segment keeps only booleans and "true"/"false")',
        {'email': 'ada@example.com', 'firstName': 'Ada', 'lastName': 'Lovelace', 'plan': 'pro',
         'source': 'Segment', 'userId': 'user-1',
         'mailingLists': {'cm_product': True, 'cm_beta': True}}),
    ('msg-9', 'sub_identify_contact'): Difference(
        'Loops holds only flat scalars: a nested object is flattened to camelCase names; '
        'subscribed is a yes or a no, and true is held back (consent); no empty mailingLists',
        {'email': 'nine@example.com', 'firstName': '123', 'source': 'Segment',
         'companyName': 'Acme', 'userId': 'user-9'}),
}


def by_our_rules(message_id: str, subscription: str, segments: dict) -> dict:
    """Segment's request body as this tool sends it for the call and subscription."""
    difference = DIFFERENCES.get((message_id, subscription))
    if difference is not None:
        return difference.body
    body = {key: value for key, value in segments.items()
            if not (key == 'mailingLists' and value == {})}
    assert body.get('subscribed') is not True   # else: CONSENT would hold it back
    return body


def write_calls(path: Path) -> str:
    path.write_text(''.join(json.dumps(call['event']) + '\n' for call in LIVE_CALLS),
                    encoding='utf-8')
    return str(path)


def dry_run(tmp_path: Path, *extra: str) -> tuple:
    """A backfill dry run of the live calls -> (summary, requests, failure
    records, what it printed)."""
    out = io.StringIO()
    summary = backfill.run(['--input', write_calls(tmp_path / 'calls.jsonl'),
                            '--dry_run', str(tmp_path / 'out' / 'requests'),
                            '--dead_letter', str(tmp_path / 'dl') + '/', *extra], out=out)
    requests = [json.loads(line) for path in glob.glob(str(tmp_path / 'out' / 'requests*'))
                for line in open(path, encoding='utf-8')]
    return summary, requests, read_failure_records(str(tmp_path / 'dl') + '/'), out.getvalue()


@pytest.fixture(scope='module')
def live_run(tmp_path_factory):
    return dry_run(tmp_path_factory.mktemp('live'), '--segment_subscriptions', LIVE_SETUP,
                   '--types', 'identify,track', '--max_event_age', 'none')


def test_a_backfill_sends_for_each_call_segments_requests_but_where_our_rules_decide(live_run):
    summary, requests, failures, _ = live_run
    expected_requests, expected_failures = [], []
    for call in LIVE_CALLS:
        event = call['event']
        for row in call['expected']:
            if 'error' in row:
                expected_failures.append((event['messageId'], 'map', 'action_refused',
                                          f"{NAMES[row['subscription']]}: {row['error']}"))
                continue
            segments = row['request']
            ours = {'method': segments['method'], 'path': segments['url'][len(LOOPS_API):],
                    'headers': {'Content-Type': 'application/json'},
                    'body': by_our_rules(event['messageId'], row['subscription'],
                                         segments['body'])}
            if segments['url'].endswith('/events/send'):
                # Segment sends no Idempotency-Key: a repeated event would send its emails again.
                ours['headers']['Idempotency-Key'] = idempotency_key_for(event['messageId'])
                ours['fallback_email'] = ours['body'].pop('email')   # FALLBACK_EMAIL
            expected_requests.append(ours)

    def key(request):
        return json.dumps(request, sort_keys=True)

    assert sorted(requests, key=key) == sorted(expected_requests, key=key)
    assert sorted((json.loads(f['event'])['messageId'], f['stage'], f['reason'], f['message'])
                  for f in failures) == sorted(expected_failures)
    assert summary['held_back_resubscribes'] == 1          # user-9's subscribed: "true"
    assert summary['filtered_out'] == 3                    # page, group, screen: not selected
    assert summary['map/more_routes'] == 3                 # the Signed Up tracks: 2 routes each
    assert unaccounted(summary) == 0


def test_every_difference_names_a_call_and_a_subscription_of_the_live_setup():
    rows = {(call['event']['messageId'], row['subscription'])
            for call in LIVE_CALLS for row in call['expected'] if 'request' in row}
    assert set(DIFFERENCES) <= rows and all(d.why for d in DIFFERENCES.values())


def test_the_run_says_which_subscriptions_never_apply_before_it_starts(live_run):
    printed = live_run[3]
    assert printed.startswith(
        'Never applied (skipped):\n'
        "  - subscription 'Page viewed (retired)' (id sub_page_event, sendEvent): disabled\n"
        "  - subscription 'Company to audience (old destination)' "
        '(id sub_group_audience, syncAudience): disabled\n')


def test_without_types_a_backfill_takes_the_identify_calls_the_subscriptions_route(tmp_path):
    summary, requests, _, _ = dry_run(tmp_path, '--segment_subscriptions', LIVE_SETUP)
    assert {request['path'] for request in requests} == {'/v1/contacts/update'}
    assert summary['contacts'] == 2 and summary['filter/filtered_out_track'] == 4


def test_segment_subscriptions_and_mapping_are_one_or_the_other(tmp_path):
    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text('contact: {skip: [plan]}\n')
    with pytest.raises(UsageError, match='--mapping and --segment_subscriptions are two ways'):
        dry_run(tmp_path, '--segment_subscriptions', LIVE_SETUP, '--mapping', str(mapping))


def test_types_no_subscription_routes_are_refused(tmp_path):
    with pytest.raises(UsageError, match='--types: page calls are sent only when the mapping'):
        dry_run(tmp_path, '--segment_subscriptions', LIVE_SETUP, '--types', 'identify,page')


def test_subscriptions_that_cannot_apply_stop_the_cli_before_anything_runs(tmp_path):
    document = json.loads(Path(LIVE_SETUP).read_text(encoding='utf-8'))
    broken = document['data']['subscriptions'][2]
    broken['trigger'] = 'type = "track" and event = "Signed Up'
    broken['settings']['firstName'] = {'@template': {'not': 'text'}}
    path = tmp_path / 'subscriptions.json'
    path.write_text(json.dumps(document), encoding='utf-8')
    result = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'backfill', '--input', write_calls(tmp_path / 'c.jsonl'),
         '--segment_subscriptions', str(path), '--dry_run', str(tmp_path / 'out')],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr == (
        'segment-loops backfill: error: --segment_subscriptions:\n'
        f"  {path}: subscription 'Signed Up -> contact' (id sub_signed_up_contact): trigger: "
        'the string opened at position 27 is not closed\n'
        f"  {path}: subscription 'Signed Up -> contact' (id sub_signed_up_contact): settings "
        '/firstName/@template: should be a string or a mapping directive but it is an object.\n')
    assert not os.path.exists(tmp_path / 'out')


@pytest.mark.parametrize('content, problem', [
    ('{"data": ', 'the subscriptions are not JSON'),
    ('{"data": {"items": []}}', "the subscriptions should be the Public API's answer"),
])
def test_a_file_that_is_not_subscriptions_is_a_usage_error_naming_it(tmp_path, content, problem):
    path = tmp_path / 'subscriptions.json'
    path.write_text(content, encoding='utf-8')
    with pytest.raises(UsageError, match=f'{path}: {problem}'):
        dry_run(tmp_path, '--segment_subscriptions', str(path))


def test_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match='/nonexistent.json: cannot read the subscriptions'):
        dry_run(tmp_path, '--segment_subscriptions', '/nonexistent.json')



# --- this tool's rules hold for a subscription's requests

def subscription(slug: str, trigger: str, settings: dict, id: str) -> dict:
    return {'id': id, 'name': id, 'actionSlug': slug, 'enabled': True, 'trigger': trigger,
            'settings': settings}


def processed(subscriptions: list, event: dict, policy=Policy()):
    counts = collections.Counter()
    processor = EventProcessor(Selection(('identify', 'track'), None,
                                         segment_mapping(subscriptions)), policy)
    return processor.process(RawEvent('f', 1, json.dumps(event)), counts), counts


SEND = {'eventName': {'@path': '$.event'}, 'userId': {'@path': '$.userId'},
        'eventProperties': {'@path': '$.properties'}}
TRACK = {'type': 'track', 'event': 'Billing: Paid', 'userId': 'u1', 'messageId': 'm1',
         'timestamp': '2026-01-05T10:00:00Z', 'properties': {'orderId': 2 ** 60, 'note': None}}


def test_two_event_subscriptions_of_one_call_send_apart_by_loops_rules():
    renamed = {**SEND, 'eventName': {'@template': 'Paid {{properties.orderId}}'}}
    result, counts = processed([subscription('sendEvent', 'type = "track"', SEND, 'sub_a'),
                                subscription('sendEvent', 'type = "track"', renamed, 'sub_b')],
                               TRACK)
    # The first: Loops refuses a colon in an event name, so the call fails for it.
    ((failure,), (send,)) = result.failures, result.requests
    assert (failure['reason'], failure['message'].split(':')[0]) == (
        'colon_in_event_name', "subscription 'sub_a' (id sub_a, sendEvent)")
    # The second: an integer Loops would round goes as its text, a null is left out,
    # and its key is its own (the first's would be the messageId's).
    assert send.body == {'eventName': f'Paid {2 ** 60}', 'userId': 'u1',
                         'eventProperties': {'orderId': str(2 ** 60)}}
    assert send.idempotency_key == idempotency_key_for('m1#sub_b')
    assert counts['map/unsafe_integer_as_text'] == 1
    assert counts['map/dropped_null_event_properties'] == 1


def test_history_and_consent_hold_for_a_subscriptions_event_send():
    settings = {**SEND, 'contactProperties': {'subscribed': {'@path': '$.properties.optIn'}}}
    event = {**TRACK, 'event': 'Opted In', 'properties': {'optIn': True}}
    subscriptions = [subscription('sendEvent', 'type = "track"', settings, 'sub_a')]
    result, counts = processed(subscriptions, event, Policy(resubscribe=False))
    (send,) = result.requests
    assert 'subscribed' not in send.body and counts['held_back/resubscribes'] == 1
    old, counts = processed(subscriptions, event, Policy(max_event_age_ms=1, now_ms=2 ** 41))
    assert old.requests == () and counts['held_back/old_events'] == 1
