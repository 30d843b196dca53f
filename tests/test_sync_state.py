"""Incremental and resumable backfills with a sync state (--state), against
the local Loops sandbox over HTTP: a rerun sends nothing it delivered, one
more day costs only that day's changes and events, a run killed halfway and
started again sends little more than one run, and a stream's newer values
are never overwritten with older ones."""
import argparse
import collections
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import backfill
from pipeline import state as state_command
from pipeline import state_commands
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from pipeline.options import UsageError
from pipeline.summary import unaccounted
from tests.test_backfill_delivery import write_calls
from transforms.core.records import Stamp, contact_upsert, idempotency_key_for
from transforms.delivery.write import DeliveryRecorder
from transforms.loops.retry import Outcome
from transforms.state.files import list_state, read_facts
from transforms.state.recorder import StateRecorder

KEY = 'sync-state-test-key'
WORKER_PROCESSES = ['--direct_running_mode=multi_processing', '--direct_num_workers=2']
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def archive_glob(archive) -> str:
    return os.path.join(archive.root, 'segment-logs', '*', '*', '*.gz')


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=30, days=2, seed=41)


@pytest.fixture(scope='module')
def next_day(tmp_path_factory):
    """One more received day: some of the same users (same userIds), new traits and events."""
    return write_archive(str(tmp_path_factory.mktemp('day3')), users=8, days=1, seed=42,
                         start_day='2026-11-03')


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'key'
    path.write_text(KEY)
    return str(path)


def argv(base_url, key_file, tmp_path, inputs, *extra, rate=1000):
    args = ['--types', 'identify,track', '--max_event_age', 'none',
            '--loops_base_url', base_url, '--loops_api_key_file', key_file,
            '--rate_limit', str(rate), '--dead_letter', str(tmp_path / 'dl') + '/', *extra]
    for pattern in inputs:
        args += ['--input', pattern]
    return args


def run(sandbox, key_file, tmp_path, inputs, *extra):
    summary = backfill.run(argv(sandbox.base_url, key_file, tmp_path, inputs, *extra),
                           out=io.StringIO())
    assert unaccounted(summary) == 0
    assert summary['contacts'] + summary['events'] == (
        summary['delivered'] + summary['already_delivered'] + summary['delivery_failed'])
    return summary


def writes(sandbox) -> list:
    return [r for r in sandbox.state()['requests'] if r['method'] != 'GET']


def account(sandbox) -> tuple:
    """The account's contacts and events, without what differs run to run."""
    state = sandbox.state()
    contacts = sorted((json.dumps({k: v for k, v in c.items() if k != 'id'}, sort_keys=True)
                       for c in state['contacts']))
    events = sorted(json.dumps({k: v for k, v in e.items() if k not in ('contact_id',
                                                                         'received_at')},
                               sort_keys=True) for e in state['events'])
    return contacts, events


def assert_same_account(actual: tuple, expected: tuple) -> None:
    """account() results equal, or a message naming what is missing and extra."""
    for name, got, wanted in zip(('contacts', 'events'), actual, expected):
        missing = collections.Counter(wanted) - collections.Counter(got)
        extra = collections.Counter(got) - collections.Counter(wanted)
        assert not missing and not extra, f'{name}: missing {dict(missing)}, extra {dict(extra)}'


def sandbox(**settings):
    return LoopsSandbox(api_key=KEY, rate_limit=None, **settings)


def plain_run(tmp_path, inputs) -> tuple:
    """(account, write requests) after one backfill without a state."""
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    with sandbox() as loops:
        run(loops, str(key_file), tmp_path, inputs)
        return account(loops), len(writes(loops))


@pytest.fixture(scope='module')
def reference(archive, next_day, tmp_path_factory):
    """plain_run of the archive, and of the archive plus the next day."""
    return [plain_run(tmp_path_factory.mktemp('reference'), inputs)
            for inputs in ([archive_glob(archive)],
                           [archive_glob(archive), archive_glob(next_day)])]


@pytest.fixture(scope='module')
def larger_archive(tmp_path_factory):
    """An archive whose delivery lasts several seconds at 40 requests/s,
    and plain_run of it."""
    archive = write_archive(str(tmp_path_factory.mktemp('larger')), users=80, days=2, seed=43)
    return archive, plain_run(tmp_path_factory.mktemp('larger_reference'),
                              [archive_glob(archive)])


@pytest.mark.parametrize('runner', [[], WORKER_PROCESSES], ids=['in_process', 'workers'])
def test_a_second_run_sends_nothing_it_delivered(archive, reference, key_file, tmp_path, runner):
    state = str(tmp_path / 'state')
    with sandbox() as loops:
        first = run(loops, key_file, tmp_path, [archive_glob(archive)], '--state', state, *runner)
        sent_first = writes(loops)
        second = run(loops, key_file, tmp_path, [archive_glob(archive)], '--state', state,
                     *runner)
        sent_second = writes(loops)[len(sent_first):]
        assert account(loops) == reference[0][0]

    assert len(sent_first) == reference[0][1]
    # Only what Loops refused the first time is tried again (it was never
    # delivered): the upserts as they were, the events under new keys (a
    # refusal may spend its key), refused again (Loops still lacks their contact).
    refused = [r for r in sent_first if r['status'] == 400]
    assert len(sent_second) == first['delivery_failed'] == len(refused)
    assert sorted(map(request_key, upserts_of(sent_second))) == sorted(
        map(request_key, upserts_of(refused)))
    assert all(r['status'] == 400 for r in sent_second)
    refused_events = sum(1 for r in refused if r['path'] == EVENTS_PATH)
    resent_keys = {r['idempotency_key'] for r in sent_second if r['path'] == EVENTS_PATH}
    assert len(resent_keys) == refused_events > 0
    assert not resent_keys & {r['idempotency_key'] for r in sent_first}
    assert second['state/refused_events_resent'] == refused_events
    assert second['events'] == refused_events
    assert second['events_already_sent'] == first['events'] - refused_events > 0
    assert second['contacts_unchanged'] == first['contacts'] - (len(refused) - refused_events)
    listing = list_state(state)
    assert all('/snapshot-' in f.path for f in listing.files)   # folded, logs gone


SEGMENT_DATA = os.path.join(os.path.dirname(__file__), 'data', 'segment')
LIVE_LISTS = [{'id': list_id, 'name': list_id, 'description': None, 'isPublic': True}
              for list_id in ('cm_newsletter', 'cm_product', 'cm_beta')]


def test_with_segment_subscriptions_a_second_run_sends_nothing_it_delivered(key_file, tmp_path):
    # Several routes per call: a Signed Up track is an event send and an upsert.
    with open(os.path.join(SEGMENT_DATA, 'subscriptions_live_calls.json'), encoding='utf-8') as f:
        calls = [call['event'] for call in json.load(f)['calls']]
    calls_path = tmp_path / 'calls.jsonl'
    calls_path.write_text(''.join(json.dumps(call) + '\n' for call in calls), encoding='utf-8')
    options = ['--segment_subscriptions',
               os.path.join(SEGMENT_DATA, 'subscriptions_live_setup.json'),
               '--state', str(tmp_path / 'state')]
    with sandbox(mailing_lists=LIVE_LISTS) as loops:
        first = run(loops, key_file, tmp_path, [str(calls_path)], *options)
        sent_first = writes(loops)
        second = run(loops, key_file, tmp_path, [str(calls_path)], *options)
        sent_second = writes(loops)[len(sent_first):]

    assert (first['contacts'], first['events'], first['delivered']) == (4, 3, 7)
    assert sent_second == []
    assert (second['contacts_unchanged'], second['events_already_sent']) == (4, 3)


EVENTS_PATH = '/v1/events/send'


def request_key(request: dict) -> tuple:
    return request['path'], request['idempotency_key']


def upserts_of(requests: list) -> list:
    return [r for r in requests if r['path'] != EVENTS_PATH]


def dry_run_upserts(tmp_path, inputs) -> tuple:
    """(summary, {contact's userId or email: upsert body}) of a dry run."""
    out = tmp_path / f'dry{len(list(tmp_path.glob("dry*")))}'
    argv = ['--types', 'identify,track', '--max_event_age', 'none', '--dry_run', str(out) + '/',
            '--dead_letter', str(tmp_path / 'dl') + '/']
    for pattern in inputs:
        argv += ['--input', pattern]
    summary = backfill.run(argv, out=io.StringIO())
    bodies = {}
    for path in out.glob('*.jsonl'):
        for line in path.read_text(encoding='utf-8').splitlines():
            request = json.loads(line)
            if request['path'] == '/v1/contacts/update':
                body = request['body']
                bodies[body.get('userId') or body['email'].lower()] = body
    return summary, bodies


def test_one_more_day_sends_only_its_changed_contacts_and_its_events(
        archive, next_day, reference, key_file, tmp_path):
    state = str(tmp_path / 'state')
    all_before, before = dry_run_upserts(tmp_path, [archive_glob(archive)])
    all_after, after = dry_run_upserts(tmp_path, [archive_glob(archive), archive_glob(next_day)])
    day_events = all_after['events'] - all_before['events']
    changed = [contact for contact, body in after.items() if before.get(contact) != body]
    with sandbox() as loops:
        first = run(loops, key_file, tmp_path, [archive_glob(archive)], '--state', state)
        sent_first = writes(loops)
        second = run(loops, key_file, tmp_path, [archive_glob(archive), archive_glob(next_day)],
                     '--state', state)
        sent = writes(loops)[len(sent_first):]
        assert_same_account(account(loops), reference[1][0])

    assert 0 < len(changed) < len(after)
    upserts = [r for r in sent if r['path'] == '/v1/contacts/update']
    assert len(upserts) == second['contacts'] <= len(changed) + first['delivery_failed']
    # The day's events, and the events Loops refused the first time, tried again.
    refused_events = sum(1 for r in sent_first if r['path'] == EVENTS_PATH and r['status'] == 400)
    assert len(sent) - len(upserts) == second['events'] == day_events + refused_events
    assert day_events > 0
    assert second['events_already_sent'] == first['events'] - refused_events
    assert second['contacts_unchanged'] >= len(after) - len(changed) - 1


def start_cli(args, log_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(log_path, 'w') as log:
        return subprocess.Popen([sys.executable, '-m', 'pipeline', 'backfill', *args], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_when(process, loops, condition, timeout=120):
    """SIGKILL the CLI's process group (it and any workers it started) once
    `condition(write requests seen)` holds."""
    deadline = time.monotonic() + timeout
    while not condition(len(writes(loops))):
        assert process.poll() is None, 'the run ended before it could be killed'
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.parametrize('runner', [[], WORKER_PROCESSES], ids=['in_process', 'workers'])
def test_a_run_killed_halfway_then_started_again_sends_little_more_than_one_run(
        larger_archive, key_file, tmp_path, runner):
    archive, (expected, one_run) = larger_archive
    state = str(tmp_path / 'state')
    with sandbox() as loops:
        # --failures_ok http_400: Loops refuses a few of the archive's contacts.
        args = argv(loops.base_url, key_file, tmp_path, [archive_glob(archive)], '--state',
                    state, '--state_flush_seconds', '0.5', '--failures_ok', 'http_400', *runner,
                    rate=40)
        killed = start_cli(args, tmp_path / 'killed.log')
        kill_when(killed, loops, lambda seen: seen >= one_run // 2)
        at_kill = len(writes(loops))
        # The killed run's lease is live for two more minutes: this run knows it is dead.
        again = start_cli([*args, '--break_lease'], tmp_path / 'again.log')
        assert again.wait(timeout=300) == 0, (tmp_path / 'again.log').read_text()
        total = len(writes(loops))
        assert_same_account(account(loops), expected)   # events exactly once, contacts merged

    assert at_kill < one_run
    assert total <= one_run * 1.10, (total, one_run)


def test_an_event_loops_refused_goes_again_under_a_new_key_once_the_account_is_fixed(
        key_file, tmp_path):
    # A track by userId alone of a user Loops does not know: refused, and
    # (the stricter Loops) its Idempotency-Key spent.
    pattern = write_calls(tmp_path, [
        {'type': 'track', 'messageId': 't1', 'userId': 'ghost', 'event': 'Visited',
         'timestamp': '2025-11-01T08:00:00Z'}])
    state = str(tmp_path / 'state')
    with sandbox() as loops:
        first = run(loops, key_file, tmp_path, [pattern], '--state', state)
        # The owner fixes the account: the contact exists now.
        answer = requests.put(loops.base_url + '/v1/contacts/update', timeout=10,
                              json={'userId': 'ghost', 'email': 'ghost@example.com'},
                              headers={'Authorization': f'Bearer {KEY}'})
        assert answer.status_code == 200
        printed = io.StringIO()
        second = backfill.run(argv(loops.base_url, key_file, tmp_path, [pattern], '--state',
                                   state), out=printed)
        third = run(loops, key_file, tmp_path, [pattern], '--state', state)
        events = loops.state()['events']
        sent = [(r['idempotency_key'], r['status']) for r in writes(loops)
                if r['path'] == EVENTS_PATH]

    assert (first['events'], first['delivery_failed']) == (1, 1)
    # Delivered once, counted as delivered: the refused key is not offered again.
    assert (second['events'], second['delivered'], second['already_delivered']) == (1, 1, 0)
    assert second['state/refused_events_resent'] == 1
    assert '1 events Loops refused in an earlier run: sent again under new keys' in (
        printed.getvalue())
    assert [(e['eventName'], e['userId']) for e in events] == [('Visited', 'ghost')]
    assert len(sent) == 2 and sent[0] == (idempotency_key_for('t1'), 400)
    assert sent[1][0] != sent[0][0] and sent[1][1] == 200
    assert (third['events'], third['events_already_sent']) == (0, 1)


def test_a_backfill_never_overwrites_a_newer_value_a_stream_applied(
        archive, key_file, tmp_path):
    state = str(tmp_path / 'state')
    with sandbox() as loops:
        run(loops, key_file, tmp_path, [archive_glob(archive)], '--state', state)
        before = len(writes(loops))
        # A stream delivers a later firstName for usr_000001 and records it with its recorder.
        streamed = contact_upsert({'userId': 'usr_000001', 'firstName': 'Streamed'},
                                  'user:usr_000001', Stamp(int(time.time() * 1000), 0, 'live1'),
                                  'live1')
        answer = requests.put(loops.base_url + '/v1/contacts/update', json=streamed.body,
                              headers={'Authorization': f'Bearer {KEY}'}, timeout=10)
        assert answer.status_code == 200
        recorder = StateRecorder(state, 'stream-run')
        recorder.open()
        recorder.record(streamed, Outcome('delivered', 200, '{}', 1, 0, None, None))
        recorder.close()
        # The archive's (older) first names, re-sent without a state, would win.
        run(loops, key_file, tmp_path, [archive_glob(archive)], '--state', state)
        resent = writes(loops)[before + 1:]
        contact = next(c for c in loops.state()['contacts'] if c['userId'] == 'usr_000001')

    assert contact['firstName'] == 'Streamed'
    # What Loops refused the first time, refused again (its events under new keys).
    assert all(r['status'] == 400 for r in resent)


def all_facts(state: str) -> dict:
    return read_facts(list_state(state))


def test_compact_folds_every_log_into_one_snapshot_per_partition(tmp_path):
    state = str(tmp_path / 'state')
    for number in range(3):
        recorder = StateRecorder(state, f'run{number}')
        recorder.open()
        for user in range(5):
            upsert = contact_upsert({'userId': f'u{user}', 'n': number}, f'user:u{user}',
                                    Stamp(number, 0, f'm{number}'), '')
            recorder.record(upsert, Outcome('delivered', 200, '{}', 1, 0, None, None))
        recorder.close()
    before = all_facts(state)

    figures = state_commands.compact(['--state', state], out=io.StringIO())

    assert figures['files_before'] == 3 and figures['files_after'] == 1
    assert figures['contacts'] == 5
    assert all_facts(state) == before
    assert {facts.properties['n'][0] for facts in before.values()} == {(2, 0, 'm2')}


def test_a_job_that_only_records_gets_its_recorder_from_its_options(tmp_path):
    parser = argparse.ArgumentParser()
    state_command.add_state_options(parser)
    options = PipelineOptions([])

    assert state_command.recorder_from_args(parser.parse_args([]), options) is None
    recorder = state_command.recorder_from_args(
        parser.parse_args(['--state', str(tmp_path), '--state_flush_seconds', '5']), options)
    assert isinstance(recorder, DeliveryRecorder)
    with pytest.raises(UsageError, match='--state_flush_seconds must be positive'):
        state_command.recorder_from_args(
            parser.parse_args(['--state', str(tmp_path), '--state_flush_seconds', '0']), options)
