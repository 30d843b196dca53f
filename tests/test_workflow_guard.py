"""The backfill's guard against the sandbox over HTTP: a run that would set
off a live workflow stops before sending anything, names it with its count
and the option; with the option it sends and its summary counts what the
sandbox records; the sync state makes a property trigger's count exact; a
key that cannot read workflows stops unless told; a first load by CSV lists
what the import could set off; a stream lists the workflows it feeds."""
import io
import time

import pytest

from pipeline import backfill, stream, workflow_guard
from pipeline.local.samples import write_ndjson
from pipeline.local.sandbox import LoopsSandbox
from pipeline.options import UsageError
from pipeline.selection import event_selection_from_args
from pipeline.workflow_guard import WorkflowsWouldRun, allowance_from
from transforms.core.records import NO_STAMP, contact_upsert
from transforms.loops.connection import LoopsConnection
from transforms.loops.credentials import ApiKey
from transforms.loops.triggers import Change, request_change
from transforms.state.workflow_count import Failed, Sent, delivered_change

KEY = 'workflow-guard-test-key'
TS = '2026-11-01T10:00:00.000Z'
LATER = '2026-11-02T10:00:00.000Z'
WELCOME = {'id': 'wf_welcome', 'name': 'Welcome', 'status': 'Sending',
           'trigger': {'typeName': 'SignupTrigger'}}
PAUSED = {'id': 'wf_old', 'name': 'Old welcome', 'status': 'Paused',
          'trigger': {'typeName': 'SignupTrigger'}}
DRAFT_PRO = {'id': 'wf_draft', 'name': 'Draft pro', 'status': 'Draft',
             'trigger': {'typeName': 'ContactPropertyTrigger', 'contactPropertyQuery': {
                 'key': 'plan', 'is': {'operator': 'equal', 'value': 'pro'},
                 'was': {'operator': 'any', 'value': ''}}}}


def property_workflow(workflow_id, name, was):
    return {'id': workflow_id, 'name': name, 'status': 'Sending',
            'trigger': {'typeName': 'ContactPropertyTrigger', 'contactPropertyQuery': {
                'key': 'plan', 'is': {'operator': 'equal', 'value': 'pro'}, 'was': was}}}


PRO = property_workflow('wf_pro', 'Pro', {'operator': 'any', 'value': ''})
PRO_FROM_FREE = property_workflow('wf_pro_free', 'Pro from free',
                                  {'operator': 'equal', 'value': 'free'})
PLAN = [{'key': 'plan', 'label': 'Plan', 'type': 'string'}]


def identify(message_id, user_id, ts=TS, **traits):
    return {'type': 'identify', 'messageId': message_id, 'userId': user_id, 'timestamp': ts,
            'receivedAt': ts, 'traits': traits}


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'loops-key'
    path.write_text(KEY)
    return str(path)


def write_events(tmp_path, events, name='events.jsonl'):
    path = str(tmp_path / name)
    write_ndjson(path, events)
    return path


def run_backfill(sandbox, key_file, tmp_path, inputs, *extra):
    """backfill.run against the sandbox -> (summary, text printed)."""
    out = io.StringIO()
    argv = [arg for path in inputs for arg in ('--input', path)] + [
        '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file,
        '--rate_limit', '1000', '--dead_letter', str(tmp_path / 'dead-letter') + '/', *extra]
    return backfill.run(argv, out=out), out.getvalue()


def sent(sandbox) -> list:
    return [r for r in sandbox.state()['requests'] if r['method'] != 'GET']


def triggers_of(sandbox, workflow_id) -> list:
    return [t for t in sandbox.state()['triggers'] if t['workflow_id'] == workflow_id]


THREE_USERS = [identify('m1', 'u1', email='a@example.com', plan='free'),
               identify('m2', 'u2', email='b@example.com', plan='pro'),
               identify('m3', 'u3', email='c@example.com')]


def test_a_live_signup_workflow_stops_the_backfill_before_anything_is_sent(tmp_path, key_file):
    path = write_events(tmp_path, THREE_USERS)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME, PAUSED],
                      custom_properties=PLAN) as sandbox:
        with pytest.raises(WorkflowsWouldRun) as stopped:
            run_backfill(sandbox, key_file, tmp_path, [path])

        assert sent(sandbox) == []
        assert sandbox.state()['contacts'] == [] and sandbox.state()['triggers'] == []
    message = str(stopped.value)
    assert message.startswith('this backfill would set off live Loops workflows, which '
                              'email the contacts they take in:\n')
    assert ('  Welcome: at most 3 contacts; a contact is created; '
            'https://app.loops.so/workflows/wf_welcome') in message
    assert 'Nothing was sent. To let them run: --allow_workflows Welcome (or all)' in message
    assert 'Old welcome' not in message      # paused: not counted
    assert isinstance(stopped.value, UsageError)


def test_with_the_option_it_sends_and_counts_what_the_sandbox_records(tmp_path, key_file):
    path = write_events(tmp_path, THREE_USERS)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME, PAUSED, PRO],
                      custom_properties=PLAN) as sandbox:
        summary, text = run_backfill(sandbox, key_file, tmp_path, [path],
                                     '--allow_workflows', 'Welcome,Pro')
        welcome, pro = triggers_of(sandbox, 'wf_welcome'), triggers_of(sandbox, 'wf_pro')
        paused = triggers_of(sandbox, 'wf_old')

    assert len(welcome) == 3 and len(pro) == 1 and paused == []
    assert summary['delivered'] == 3
    # Nothing says whether Loops had these contacts: "at most", each one.
    assert summary['workflows/wf_welcome/may_set_off'] == len(welcome)
    assert summary['workflows/wf_pro/may_set_off'] == len(pro)
    assert not any(key.startswith('workflows/wf_old') for key in summary)
    assert 'Allowed to run (--allow_workflows): Welcome, Pro' in text
    assert '  Welcome: at most 3 contacts; a contact is created;' in text
    assert '  Pro: at most 1 contact; plan changes (was any, is equal "pro");' in text


def test_the_sync_state_makes_a_property_triggers_count_exact(tmp_path, key_file):
    state = str(tmp_path / 'state') + '/'
    first = write_events(tmp_path, [
        identify(f'm{n}', f'u{n}', email=f'u{n}@example.com', plan=plan)
        for n, plan in ((1, 'free'), (2, 'pro'), (3, 'free'), (4, 'trial'))], 'first.jsonl')
    second = write_events(tmp_path, [
        identify('n1', 'u1', LATER, plan='pro'),       # free -> pro: both workflows
        identify('n2', 'u2', LATER, plan='pro'),       # unchanged: not sent
        identify('n3', 'u3', LATER, plan='business'),  # not pro
        identify('n4', 'u4', LATER, plan='pro')],      # trial -> pro: Pro only
        'second.jsonl')
    with LoopsSandbox(KEY, rate_limit=None, workflows=[PRO, PRO_FROM_FREE],
                      custom_properties=PLAN) as sandbox:
        run_backfill(sandbox, key_file, tmp_path, [first], '--state', state,
                     '--allow_workflows', 'all')
        before = {workflow_id: len(triggers_of(sandbox, workflow_id))
                  for workflow_id in ('wf_pro', 'wf_pro_free')}
        sent_before = len(sent(sandbox))
        with pytest.raises(WorkflowsWouldRun) as stopped:
            run_backfill(sandbox, key_file, tmp_path, [second], '--state', state)
        assert len(sent(sandbox)) == sent_before
        summary, _ = run_backfill(sandbox, key_file, tmp_path, [second], '--state', state,
                                  '--allow_workflows', 'Pro,Pro from free')
        set_off = {workflow_id: len(triggers_of(sandbox, workflow_id)) - before[workflow_id]
                   for workflow_id in before}

    # Exact, no "at most": the state knows every value before, as a digest.
    message = str(stopped.value)
    assert '  Pro: 2 contacts; plan changes (was any, is equal "pro");' in message
    assert '  Pro from free: 1 contact; plan changes (was equal "free", is equal "pro");' in message
    assert set_off == {'wf_pro': 2, 'wf_pro_free': 1}
    assert summary['contacts'] == 3
    # The run's own count of what it delivered knows what the guard knew.
    assert {key: n for key, n in summary.items() if key.startswith('workflows/')} == {
        'workflows/wf_pro/set_off': 2, 'workflows/wf_pro_free/set_off': 1}


@pytest.mark.parametrize('endpoints, status', [('forbidden', 403), ('missing', 404)])
def test_a_key_that_cannot_read_workflows_stops_unless_told(tmp_path, key_file, endpoints,
                                                            status):
    path = write_events(tmp_path, THREE_USERS)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME], custom_properties=PLAN,
                      workflow_endpoints=endpoints) as sandbox:
        with pytest.raises(WorkflowsWouldRun) as stopped:
            run_backfill(sandbox, key_file, tmp_path, [path])
        assert sent(sandbox) == []
        summary, text = run_backfill(sandbox, key_file, tmp_path, [path],
                                     '--allow_workflows', 'unknown')

    message = str(stopped.value)
    assert message.startswith('cannot tell which Loops workflows this backfill would set off')
    assert f'HTTP {status}' in message
    assert message.endswith('Nothing was sent. To go on without knowing: '
                            '--allow_workflows unknown')
    assert 'Warning: ' in text and f'HTTP {status}' in text
    assert summary['delivered'] == 3


def test_a_name_that_is_no_workflow_is_a_usage_error(tmp_path, key_file):
    path = write_events(tmp_path, THREE_USERS)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME]) as sandbox:
        with pytest.raises(UsageError, match="no workflow of the account is named 'Welcom'"):
            run_backfill(sandbox, key_file, tmp_path, [path], '--allow_workflows', 'Welcom')
        assert sent(sandbox) == []


def test_live_workflows_nothing_matches_let_the_run_go_on(tmp_path, key_file):
    order = {'id': 'wf_order', 'name': 'Order', 'status': 'Sending',
             'trigger': {'typeName': 'EventTrigger', 'eventName': 'Order Completed'}}
    path = write_events(tmp_path, THREE_USERS)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[order, PAUSED, DRAFT_PRO],
                      custom_properties=PLAN) as sandbox:
        summary, text = run_backfill(sandbox, key_file, tmp_path, [path])
        assert sandbox.state()['triggers'] == []

    assert summary['delivered'] == 3
    assert '  Order: nothing this run sends sets it off.' in text


def test_no_live_workflow_costs_no_pass(tmp_path, key_file):
    path = write_events(tmp_path, THREE_USERS)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[PAUSED]) as sandbox:
        _, text = run_backfill(sandbox, key_file, tmp_path, [path])
    assert 'No live workflow in the Loops account: this backfill sets none off.' in text
    assert 'Counting' not in text


def test_a_first_load_by_csv_lists_what_the_import_could_set_off(tmp_path, key_file):
    path = write_events(tmp_path, THREE_USERS)
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME, PRO, PAUSED]) as sandbox:
        _, text = run_backfill(sandbox, key_file, tmp_path, [path],
                               '--state', str(tmp_path / 'state') + '/',
                               '--contacts_csv', str(tmp_path / 'csv') + '/')
        assert sent(sandbox) == []

    note = text[text.index('The import of these files could set off'):]
    assert '  Pro: plan changes (was any, is equal "pro"); https://app.loops.so/workflows/wf_pro' \
        in note
    assert 'Welcome' not in note and 'Old welcome' not in note


def test_allowance_words():
    assert allowance_from('Welcome, Pro upgrade') == workflow_guard.Allowance(
        frozenset({'Welcome', 'Pro upgrade'}))
    assert allowance_from('all').every and allowance_from('all').unknown
    assert allowance_from('unknown,Welcome') == workflow_guard.Allowance(
        frozenset({'Welcome'}), False, True)
    assert allowance_from(None) == workflow_guard.Allowance()


# ------------------------------------------------------------------ the stream

def connection(sandbox) -> LoopsConnection:
    return LoopsConnection(base_url=sandbox.base_url, api_key=ApiKey(KEY), rate_limit=1000)


ORDER_EVENT = {'id': 'wf_order', 'name': 'Order', 'status': 'Sending',
               'trigger': {'typeName': 'EventTrigger', 'eventName': 'Order Completed'}}


def test_a_stream_lists_the_live_workflows_its_calls_feed_and_notices_a_change(tmp_path):
    args = stream.stream_parser().parse_args(['--subscription', 'projects/p/subscriptions/s',
                                              '--events', 'Signed Up'])
    selection = event_selection_from_args(args, ('identify', 'track'))
    out = io.StringIO()
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME, ORDER_EVENT, PAUSED]) as sandbox:
        watch = workflow_guard.watch_stream(connection(sandbox), selection, 0.05, out)
        watch.start()
        try:
            sandbox.configure(workflow_endpoints='forbidden')
            deadline = time.monotonic() + 5
            while 'changed' not in out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            watch.stop()

    text = out.getvalue()
    first = text[:text.index('The Loops workflows changed.')]
    assert first == ("Live Loops workflows this stream's calls feed (they email the contacts "
                     "they take in):\n  Welcome: a contact is created; "
                     "https://app.loops.so/workflows/wf_welcome\n")
    assert 'Cannot tell which Loops workflows this stream feeds' in text
    assert 'HTTP 403' in text


def test_the_streams_check_interval_is_zero_or_more():
    parser = stream.stream_parser()
    base = ['--subscription', 'projects/p/subscriptions/s']
    assert parser.parse_args(base).workflow_check_seconds == 600.0
    assert parser.parse_args(base + ['--workflow_check_seconds', '0']).workflow_check_seconds == 0
    with pytest.raises(SystemExit):
        parser.parse_args(base + ['--workflow_check_seconds', '-1'])


def test_what_loops_did_not_take_is_not_counted(tmp_path, key_file):
    # u9 has no email and Loops has no u9: its upsert is refused (400).
    path = write_events(tmp_path, THREE_USERS[:1] + [identify('m9', 'u9', plan='pro')])
    with LoopsSandbox(KEY, rate_limit=None, workflows=[WELCOME],
                      custom_properties=PLAN) as sandbox:
        with pytest.raises(WorkflowsWouldRun, match='Welcome: at most 2 contacts'):
            run_backfill(sandbox, key_file, tmp_path, [path])
        summary, text = run_backfill(sandbox, key_file, tmp_path, [path],
                                     '--allow_workflows', 'Welcome')
        recorded = triggers_of(sandbox, 'wf_welcome')

    assert summary['delivery_failed'] == 1
    assert summary['workflows/wf_welcome/may_set_off'] == len(recorded) == 1


def sent_upsert(**body):
    request = contact_upsert(body, 'user:u1', NO_STAMP, 'm1')
    return Sent(True, None, frozenset(body), request_change(request))


def test_a_refused_part_leaves_the_rest_of_an_upsert_counted():
    sent = sent_upsert(userId='u1', plan='pro', seats='many')
    part = Failed(None, frozenset({'userId', 'seats'}))
    whole = Failed(None, frozenset({'userId', 'plan', 'seats'}))
    assert delivered_change(sent, [part]).body == {'userId': 'u1', 'plan': 'pro'}
    assert delivered_change(sent, [whole]) is None
    assert delivered_change(sent, []) == sent.change
    event = Sent(False, 'key-1', frozenset({'userId', 'eventName'}),
                 Change({'userId': 'u1'}, 'Signed Up', False))
    assert delivered_change(event, [Failed('key-1', frozenset())]) is None
    assert delivered_change(event, [Failed('key-2', frozenset())]) == event.change
