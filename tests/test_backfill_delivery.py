"""The backfill sending to Loops for real: over HTTP to the local sandbox."""
import gzip
import json
import os
import subprocess
import sys
import time

import pytest

from pipeline import backfill
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from pipeline.options import UsageError
from pipeline.summary import unaccounted
from tests.test_faults import Expected, assert_loops_holds
from transforms.core.sinks import read_failure_records

KEY = 'backfill-delivery-test-key'
RATE = 25


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=20, days=2, seed=21)


def run_against(sandbox, archive, tmp_path, *extra, key_file=None):
    if key_file is None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        key_file = tmp_path / 'key'
        key_file.write_text(KEY)
    return backfill.run([
        '--input', os.path.join(archive.root, 'segment-logs', '*', '*', '*.gz'),
        '--types', 'identify,track', '--max_event_age', 'none',
        '--loops_base_url', sandbox.base_url,
        '--loops_api_key_file', str(key_file), '--rate_limit', str(RATE),
        '--dead_letter', str(tmp_path / 'dl') + '/', *extra], out=open(os.devnull, 'w'))


def max_accepted_in_any_second(requests):
    times = sorted(r['t'] for r in requests if r['status'] not in (None, 429))
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_backfill_leaves_loops_with_the_merged_traits_and_every_event_once(archive, tmp_path):
    expected = Expected(archive.events)
    with LoopsSandbox(api_key=KEY, rate_limit=RATE, latency=(0.02, 0.08), seed=4) as sandbox:
        summary = run_against(sandbox, archive, tmp_path)
        state = sandbox.state()

    assert unaccounted(summary) == 0
    assert summary['contacts'] + summary['events'] == (
        summary['delivered'] + summary['already_delivered'] + summary['delivery_failed'])
    failures = read_failure_records(str(tmp_path / 'dl') + '/')
    deliver_failures = [f for f in failures if f['stage'] == 'deliver']
    assert len(deliver_failures) == summary['delivery_failed']
    assert_loops_holds(expected, state, deliver_failures)
    assert max_accepted_in_any_second(state['requests']) <= RATE


def test_a_second_run_delivers_nothing_twice(archive, tmp_path):
    with LoopsSandbox(api_key=KEY, rate_limit=RATE, latency=(0.0, 0.01), seed=5) as sandbox:
        first = run_against(sandbox, archive, tmp_path / 'first')
        events_after_first = len(sandbox.state()['events'])
        # The events of the user whose every email is invalid, sent by userId
        # alone: Loops has no such contact.
        refused_events = sum(r['path'] == '/v1/events/send' and r['status'] == 400
                             for r in sandbox.state()['requests'])
        second = run_against(sandbox, archive, tmp_path / 'second')
        state = sandbox.state()

    delivered_events = first['events'] - refused_events
    assert len(state['events']) == events_after_first == delivered_events
    # Every key was spent by the first run (a refused event's too: 409 again).
    assert second['already_delivered'] == second['events'] == first['events']
    assert second['delivered'] == first['delivered'] - delivered_events   # the upserts again


def test_events_wait_for_the_contacts_of_the_same_run(tmp_path):
    # Each track call names its user by userId only: it needs the contact the
    # same run creates from the identify call.
    folder = tmp_path / 'segment-logs' / 'src' / '1761955200000'
    folder.mkdir(parents=True)
    lines = []
    for user in range(15):
        lines.append({'type': 'track', 'messageId': f't{user}', 'userId': f'u{user}',
                      'event': 'Signed Up', 'timestamp': '2025-11-01T08:00:00Z'})
        lines.append({'type': 'identify', 'messageId': f'i{user}', 'userId': f'u{user}',
                      'timestamp': '2025-11-01T09:00:00Z',
                      'traits': {'email': f'u{user}@example.com'}})
    with gzip.open(folder / 'f.gz', 'wt') as f:
        f.write(''.join(json.dumps(line) + '\n' for line in lines))
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    with LoopsSandbox(api_key=KEY, rate_limit=0, latency=(0.0, 0.01)) as sandbox:
        summary = backfill.run([
            '--input', str(folder / '*.gz'), '--types', 'identify,track', '--max_event_age', 'none',
            '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file),
            '--dead_letter', str(tmp_path / 'dl') + '/'], out=open(os.devnull, 'w'))
        state = sandbox.state()
    assert summary['delivery_failed'] == 0
    assert len(state['events']) == 15 and len(state['contacts']) == 15
    sends = [r['t'] for r in state['requests'] if r['path'] == '/v1/events/send']
    upserts = [r['t'] for r in state['requests'] if r['path'] == '/v1/contacts/update']
    assert min(sends) > max(upserts)


def write_calls(tmp_path, calls) -> str:
    """Segment calls as one archive file; -> its pattern."""
    folder = tmp_path / 'segment-logs' / 'src' / '1761955200000'
    folder.mkdir(parents=True)
    with gzip.open(folder / 'f.gz', 'wt') as f:
        f.write(''.join(json.dumps(call) + '\n' for call in calls))
    return str(folder / '*.gz')


def test_old_events_never_put_back_old_emails_and_track_only_users_are_still_created(tmp_path):
    def call(kind, message_id, user, hour, **fields):
        return {'type': kind, 'messageId': message_id, 'userId': user,
                'timestamp': f'2025-11-01T{hour:02d}:00:00Z', **fields}

    calls = [
        call('identify', 'i1', 'ann', 7, traits={'email': 'ann.old@example.com'}),
        call('track', 't1', 'ann', 8, event='Ordered',
             context={'traits': {'email': 'ann.old@example.com'}}),
        call('identify', 'i2', 'ann', 9, traits={'email': 'ann.new@example.com'}),
        # Segment's default reads properties.email: here an invitee's.
        call('track', 't2', 'ann', 10, event='Invited',
             properties={'email': 'guest@example.com'}),
        # A user Loops hears of only through track calls.
        call('track', 't3', 'bob', 8, event='Visited', properties={'email': 'bob@example.com'}),
        call('track', 't4', 'bob', 9, event='Visited', properties={'email': 'bob@example.com'}),
    ]
    pattern = write_calls(tmp_path, calls)
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    with LoopsSandbox(api_key=KEY, rate_limit=0) as sandbox:
        summary = backfill.run([
            '--input', pattern, '--types', 'identify,track', '--max_event_age', 'none',
            '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file),
            '--dead_letter', str(tmp_path / 'dl') + '/'], out=open(os.devnull, 'w'))
        state = sandbox.state()
    emails = {c['userId']: c['email'] for c in state['contacts']}
    assert emails == {'ann': 'ann.new@example.com', 'bob': 'bob@example.com'}
    assert sorted(e['eventName'] for e in state['events']) == [
        'Invited', 'Ordered', 'Visited', 'Visited']
    # bob's first event found no contact and went again with its email; the
    # second found bob by userId.
    assert summary['deliver/sent_with_fallback_email'] == 1
    assert (summary['delivered'], summary['delivery_failed']) == (1 + 4, 0)
    refused = [r for r in state['requests'] if r['status'] == 400]
    assert [r['path'] for r in refused] == ['/v1/events/send']


def test_a_wrong_key_stops_the_job_in_seconds_with_a_clear_message(archive, tmp_path):
    key_file = tmp_path / 'key'
    key_file.write_text('not-the-key')
    with LoopsSandbox(api_key=KEY) as sandbox:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, '-m', 'pipeline', 'backfill',
             '--input', os.path.join(archive.root, 'segment-logs', '*', '*', '*.gz'),
             '--loops_base_url', sandbox.base_url, '--loops_api_key_file', str(key_file)],
            capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - started
        requests = sandbox.state()['requests']
    assert result.returncode == 3
    assert 'API key' in result.stderr and 'Traceback' not in result.stderr
    assert 'not-the-key' not in result.stderr + result.stdout
    assert [r['path'] for r in requests] == ['/v1/api-key']   # nothing else was sent
    assert elapsed < 60


@pytest.mark.parametrize('url, message', [
    ('http://api.example.com/api', 'refusing plain http:// to api.example.com'),
    ('ftp://127.0.0.1/api', 'must be an https:// URL'),
])
def test_unsafe_base_urls_are_refused(archive, tmp_path, url, message):
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    with pytest.raises(UsageError, match=message):
        backfill.run(['--input', archive.files[0], '--loops_base_url', url,
                      '--loops_api_key_file', str(key_file)])
