"""`segment-loops check` on what a run sets off and what the account needs,
against the sandbox over HTTP: each live workflow's count against what a
backfill then sets off in the sandbox, lookups that make counts exact,
workflows not affected, creating the properties the data needs, and event
properties the account's patterns do not list."""
import io
import json

import pytest

from pipeline import backfill, check
from pipeline.local.samples import write_ndjson
from pipeline.local.sandbox import LoopsSandbox
from transforms.loops.account import read_account
from transforms.loops.client import LoopsClient

KEY = 'check-workflows-test-key'
TS = '2026-11-01T10:00:00.000Z'
WELCOME = {'id': 'wf_welcome', 'name': 'Welcome', 'status': 'Sending',
           'trigger': {'typeName': 'SignupTrigger'}}
PRO = {'id': 'wf_pro', 'name': 'Pro', 'status': 'Sending',
       'trigger': {'typeName': 'ContactPropertyTrigger', 'contactPropertyQuery': {
           'key': 'plan', 'is': {'operator': 'equal', 'value': 'pro'},
           'was': {'operator': 'not_equal', 'value': 'pro'}}}}
NEWS = {'id': 'wf_news', 'name': 'News', 'status': 'Sending',
        'trigger': {'typeName': 'AddToListTrigger', 'mailingListId': 'list_news'}}
ORDERS = {'id': 'wf_orders', 'name': 'Orders', 'status': 'Sending',
          'trigger': {'typeName': 'EventTrigger', 'eventName': 'Order Completed',
                      'reEligible': True}}
FIRST_ORDER = {'id': 'wf_first_order', 'name': 'First order', 'status': 'Sending',
               'trigger': {'typeName': 'EventTrigger', 'eventName': 'Order Completed'}}
PAUSED = {'id': 'wf_paused', 'name': 'Paused welcome', 'status': 'Paused',
          'trigger': {'typeName': 'SignupTrigger'}}
QUEUEING = {'id': 'wf_queue', 'name': 'Queued welcome', 'status': 'PausedAndQueueing',
            'trigger': {'typeName': 'SignupTrigger'}}
TRIAL = {'id': 'wf_trial', 'name': 'Trial', 'status': 'Sending',
         'trigger': {'typeName': 'EventTrigger', 'eventName': 'Trial Started'}}
WORKFLOWS = [WELCOME, PRO, NEWS, ORDERS, FIRST_ORDER, PAUSED, QUEUEING, TRIAL]
PLAN = [{'key': 'plan', 'label': 'Plan', 'type': 'string'}]


def identify(message_id, user_id, **traits):
    return {'type': 'identify', 'messageId': message_id, 'userId': user_id, 'timestamp': TS,
            'receivedAt': TS, 'traits': traits}


def track(message_id, user_id, name, **properties):
    return {'type': 'track', 'messageId': message_id, 'userId': user_id, 'timestamp': TS,
            'receivedAt': TS, 'event': name, 'properties': properties}


EVENTS = [
    identify('m1', 'u1', email='a@example.com', plan='pro', mailingLists={'list_news': True}),
    identify('m2', 'u2', email='b@example.com', plan='free'),
    identify('m3', 'u3', email='c@example.com', plan='pro'),
    track('t1', 'u1', 'Order Completed', total=12.5, currency='EUR'),
    track('t2', 'u1', 'Order Completed', total=3, currency='EUR'),
    track('t3', 'u2', 'Order Completed', total=7, currency='USD'),
    track('t4', 'u3', 'Signed Up', plan='pro'),
]
SEEDED = [{'email': 'c@example.com', 'userId': 'u3', 'plan': 'pro',
           'mailingLists': {'list_news': True}}]


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'loops-key'
    path.write_text(KEY)
    return str(path)


def events_file(tmp_path, events=EVENTS):
    path = str(tmp_path / 'events.jsonl')
    write_ndjson(path, events)
    return path


def run_check(sandbox, key_file, tmp_path, path, *extra):
    """check.main against a running sandbox -> (status, text, report)."""
    report_path = tmp_path / 'report.json'
    out = io.StringIO()
    status = check.main(['--input', path, '--types', 'identify,track', '--max_event_age', 'none',
                         '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file,
                         '--report', str(report_path), *extra], out=out)
    return status, out.getvalue(), json.loads(report_path.read_text(encoding='utf-8'))


def counted(report) -> dict:
    return {item['name']: (item['certain'], item['possible'])
            for item in report['workflows']['set_off']}


def test_check_counts_what_a_backfill_then_sets_off(tmp_path, key_file):
    path = events_file(tmp_path)
    with LoopsSandbox(KEY, rate_limit=None, workflows=WORKFLOWS, custom_properties=PLAN,
                      contacts=SEEDED) as sandbox:
        status, text, report = run_check(sandbox, key_file, tmp_path, path)
        assert {r['method'] for r in sandbox.state()['requests']} == {'GET'}
        backfill.run(['--input', path, '--types', 'identify,track', '--max_event_age', 'none',
                      '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file,
                      '--rate_limit', '1000', '--dead_letter', str(tmp_path / 'dl') + '/',
                      '--allow_workflows', 'all'], out=io.StringIO())
        recorded = sandbox.state()['triggers']

    set_off = {name: sum(t['workflow_name'] == name for t in recorded)
               for name in ('Welcome', 'Pro', 'News', 'Orders', 'First order')}
    # Nothing is known before (no lookup, no state): what depends on it is
    # "at most", and what happened is within it; events of a name are certain
    # (a contact that entered First order before this run only Loops knows).
    assert counted(report) == {'Welcome': (0, 3), 'Pro': (0, 2), 'News': (0, 1),
                               'Orders': (3, 0), 'First order': (2, 0)}
    assert set_off == {'Welcome': 2, 'Pro': 1, 'News': 1, 'Orders': 3, 'First order': 2}
    assert all(set_off[name] <= certain + possible
               for name, (certain, possible) in counted(report).items())
    assert {item['name']: item['reason'] for item in report['workflows']['not_affected']} == {
        'Paused welcome': 'Paused: not sending',
        'Queued welcome': ('PausedAndQueueing: not sending (it may queue the contacts it '
                           'takes in and email them once resumed; Loops does not say)'),
        'Trial': 'live; nothing this run sends matches its trigger'}
    assert report['workflows']['allow'] == "'Welcome,Pro,News,Orders,First order'"
    assert status == check.EXIT_OK        # setting workflows off is not data loss
    assert ('  Welcome: at most 3 contacts; a contact is created; '
            'https://app.loops.so/workflows/wf_welcome') in text
    assert '  Orders: 3 times; event "Order Completed", every time;' in text
    assert '  Pro: at most 2 contacts; plan changes (was not equal "pro", is equal "pro");' in text
    assert '  not affected: Paused welcome (Paused: not sending)' in text
    assert ('A backfill with these options stops before sending anything unless '
            "--allow_workflows 'Welcome,Pro,News,Orders,First order'") in text


def test_lookups_make_the_counts_exact(tmp_path, key_file):
    path = events_file(tmp_path)
    with LoopsSandbox(KEY, rate_limit=None, workflows=WORKFLOWS, custom_properties=PLAN,
                      contacts=SEEDED) as sandbox:
        _, text, report = run_check(sandbox, key_file, tmp_path, path, '--lookup', '10')
        finds = [r for r in sandbox.state()['requests'] if '/contacts/find' in r['path']]

    # u3 is in Loops already, with plan pro and on list_news: nothing for it
    # but its event; u1 and u2 are new, and the first order is each one's first.
    assert counted(report) == {'Welcome': (2, 0), 'Pro': (1, 0), 'News': (1, 0),
                               'Orders': (3, 0), 'First order': (2, 0)}
    assert report['workflows']['lookup'] == {'limit': 10, 'looked_up': 3, 'found': 1}
    assert len(finds) == 5     # by userId, then by email for the two Loops lacks
    assert 'at most' not in text.split('What this run sets off')[1]


def test_a_lookup_limit_leaves_the_rest_at_most(tmp_path, key_file):
    path = events_file(tmp_path)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME], contacts=SEEDED,
                      custom_properties=PLAN) as sandbox:
        _, text, report = run_check(sandbox, key_file, tmp_path, path, '--lookup', '1')

    assert counted(report) == {'Welcome': (1, 2)}
    assert 'Welcome: at most 3 contacts (1 certain)' in text
    assert ('"at most": what decides it is not known: for 2 contacts, whether Loops has them '
            'and their values before (1 looked up, 0 of them found in Loops;') in text


def test_a_key_without_access_to_workflows_is_a_line_not_a_crash(tmp_path, key_file):
    path = events_file(tmp_path)
    with LoopsSandbox(KEY, rate_limit=None, workflows=WORKFLOWS, custom_properties=PLAN,
                      workflow_endpoints='forbidden') as sandbox:
        status, text, report = run_check(sandbox, key_file, tmp_path, path)

    assert report['workflows']['readable'] is False
    assert 'HTTP 403' in report['workflows']['message']
    assert 'cannot tell: Loops refused this API key access to workflows' in text
    assert '(a backfill then stops unless --allow_workflows unknown)' in text
    assert report['event_patterns']['readable'] is False
    assert status == check.EXIT_OK


def test_event_properties_the_accounts_patterns_do_not_list(tmp_path, key_file):
    path = events_file(tmp_path)
    pattern = {'eventName': 'Order Completed', 'eventProperties': [
        {'name': 'total', 'type': 'number'}]}
    with LoopsSandbox(KEY, rate_limit=None, custom_properties=PLAN,
                      event_patterns=[pattern]) as sandbox:
        _, text, report = run_check(sandbox, key_file, tmp_path, path)

    assert report['event_patterns']['events'] == {
        'Order Completed': {'count': 3, 'pattern': True, 'unlisted': {'currency': 3}},
        'Signed Up': {'count': 1, 'pattern': False, 'unlisted': {'plan': 1}}}
    assert "  'Order Completed' (3 events): currency (3)" in text
    assert "  'Signed Up' (1 events): no pattern in the account yet" in text


# ------------------------------------------------------------------ --create_properties

TYPED = [
    identify('p1', 'u1', email='a@example.com', plan='pro', seats=12, trial=True,
             renewsAt='2026-12-01T00:00:00.000Z'),
    identify('p2', 'u2', email='b@example.com', plan='free', seats=3, trial=False,
             renewsAt='2027-01-01T00:00:00.000Z'),
]


def account_types(sandbox) -> dict:
    client = LoopsClient(sandbox.base_url, KEY, rate=1000)
    try:
        return read_account(client).properties
    finally:
        client.close()


def test_create_properties_then_a_backfill_refuses_no_property(tmp_path, key_file):
    path = events_file(tmp_path, TYPED)
    with LoopsSandbox(KEY, rate_limit=None) as sandbox:
        status, text, report = run_check(sandbox, key_file, tmp_path, path,
                                         '--create_properties')
        types = account_types(sandbox)
        summary = backfill.run(['--input', path, '--loops_base_url', sandbox.base_url,
                                '--loops_api_key_file', key_file, '--rate_limit', '1000',
                                '--unknown_properties', 'fail',
                                '--dead_letter', str(tmp_path / 'dl') + '/'],
                               out=io.StringIO())
        _, again, report_again = run_check(sandbox, key_file, tmp_path, path,
                                           '--create_properties')
        posts = [r for r in sandbox.state()['requests'] if r['method'] == 'POST']

    assert {key: types[key] for key in ('plan', 'seats', 'trial', 'renewsAt')} == {
        'plan': 'string', 'seats': 'number', 'trial': 'boolean', 'renewsAt': 'date'}
    assert text.startswith('Creating 4 contact properties in Loops:\n  plan (string)\n')
    assert '  renewsAt: created' in text
    # The report is of the account as it is after: nothing would be lost.
    assert report['findings'] == [] and status == check.EXIT_OK
    assert report['created_properties']['results'] == {
        'plan': 'created', 'renewsAt': 'created', 'seats': 'created', 'trial': 'created'}
    assert summary['delivered'] == 2
    assert not any(key.startswith('refused/') for key in summary)
    assert again.startswith('No contact property to create.')
    assert report_again['created_properties']['planned'] == {}
    assert len(posts) == 4      # the second check created nothing


def test_what_create_properties_leaves_for_a_person(tmp_path, key_file):
    path = events_file(tmp_path, [
        identify('q1', 'u1', email='a@example.com', seats='twelve', nickname=None,
                 plan_name='pro', plan=3),
        identify('q2', 'u2', email='b@example.com', seats=12, plan=4),
    ])
    numbers = [{'key': 'plan', 'label': 'Plan', 'type': 'string'}]
    with LoopsSandbox(KEY, rate_limit=None, custom_properties=numbers) as sandbox:
        _, text, report = run_check(sandbox, key_file, tmp_path, path, '--create_properties')
        posts = [r for r in sandbox.state()['requests'] if r['method'] == 'POST']

    created = report['created_properties']
    assert created['planned'] == {} and posts == []
    assert created['not_created'] == {
        'plan_name': ("not a camelCase name, as Loops' API names are: rename it in the "
                      'mapping'),
        'nickname': 'only null values: no type to give it',
        'seats': ('values of several types (number 1, string 1): create it by hand with the '
                  'type you mean, or make the mapping send one')}
    assert created['type_conflicts'] == {}   # plan's numbers become text: coerced, not lost
    assert 'Not created:\n  nickname:' in text
