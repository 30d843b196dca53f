"""`segment-loops delete` against the local Loops sandbox over HTTP: deletions
by userId, by email and by Segment's delete message, 404 as already gone,
failure records for lines that name nobody and for deletions that ran out of
retries, the dry run, and, with --state, a backfill that does not bring a
deleted contact back from history while data from after the deletion does."""
import glob
import io
import json
import os
import threading
import time

import pytest

from pipeline import backfill, cli, delete, replay
from pipeline.local.sandbox import LoopsSandbox
from transforms.core.sinks import read_failure_records

KEY = 'delete-test-key'
CONTACTS = [{'userId': 'u1', 'email': 'u1@example.com'}, {'email': 'Ann@Example.com'},
            {'userId': 'u3', 'email': 'u3@example.com'}, {'userId': 'keep', 'email': 'k@x.io'}]
GOOD_LINES = ['u1', 'ann@example.com', '', 'nobody',
              '{"type": "delete", "userId": "u3", "messageId": "delete-1", '
              '"timestamp": "2026-03-01T00:00:00Z"}', 'u1']
BAD_LINES = ['u 5', 'bad@', '{not json', '{"type": "identify", "userId": "u4"}',
             '{"type": "delete", "anonymousId": "a1"}']


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'key'
    path.write_text(KEY)
    return str(path)


def write_lines(path, lines) -> str:
    path.write_text(''.join(line + '\n' for line in lines))
    return str(path)


def run_delete(sandbox, key_file, tmp_path, input_path, *extra) -> tuple:
    """-> (summary, printed output)."""
    out = io.StringIO()
    summary = delete.run(['--input', input_path, '--loops_base_url', sandbox.base_url,
                          '--loops_api_key_file', key_file, '--rate_limit', '1000',
                          '--dead_letter', str(tmp_path / 'dl') + '/', *extra], out=out)
    return summary, out.getvalue()


def deletions_sent(sandbox) -> list:
    return [r['status'] for r in sandbox.state()['requests'] if r['path'] == '/v1/contacts/delete']


def test_deletes_by_user_id_email_and_delete_message_and_a_missing_contact_is_already_gone(
        tmp_path, key_file):
    lines = write_lines(tmp_path / 'deletions.txt', GOOD_LINES)
    with LoopsSandbox(KEY, rate_limit=None, contacts=CONTACTS) as sandbox:
        summary, printed = run_delete(sandbox, key_file, tmp_path, lines)
        left = [c['userId'] for c in sandbox.state()['contacts']]
        statuses = deletions_sent(sandbox)
    assert left == ['keep']
    # One request per contact, u1 once; Loops found nothing for `nobody`.
    assert sorted(statuses) == [200, 200, 200, 404]
    assert {key: summary[key] for key in ('read', 'blank', 'invalid', 'duplicates', 'deletions',
                                          'deleted', 'deleted_already_gone', 'delete_failed')} == {
        'read': 6, 'blank': 1, 'invalid': 0, 'duplicates': 1, 'deletions': 4, 'deleted': 3,
        'deleted_already_gone': 1, 'delete_failed': 0}
    assert read_failure_records(str(tmp_path / 'dl') + '/') == []
    assert '3 contacts deleted, 1 already gone' in printed
    assert 'No --state: a later backfill would create these contacts again' in printed


def test_lines_that_name_no_contact_become_failure_records_with_their_reason(tmp_path, key_file):
    lines = write_lines(tmp_path / 'deletions.txt', ['u1'] + BAD_LINES)
    with LoopsSandbox(KEY, rate_limit=None, contacts=CONTACTS) as sandbox:
        summary, printed = run_delete(sandbox, key_file, tmp_path, lines)
        assert deletions_sent(sandbox) == [200]
    records = read_failure_records(str(tmp_path / 'dl') + '/')
    assert sorted((r['stage'], r['reason'], r['source'], r['event']) for r in records) == sorted([
        ('parse', 'not_one_id', f'{lines}:2', 'u 5'),
        ('parse', 'invalid_email', f'{lines}:3', 'bad@'),
        ('parse', 'invalid_json', f'{lines}:4', '{not json'),
        ('parse', 'not_a_deletion', f'{lines}:5', BAD_LINES[3]),
        ('parse', 'missing_user_id', f'{lines}:6', BAD_LINES[4])])
    assert all(r['message'] for r in records)
    assert (summary['invalid'], summary['deleted'], summary['delete/not_one_id']) == (5, 1, 1)
    assert '5 lines named no contact to delete' in printed


def test_a_dry_run_writes_the_requests_as_loops_documents_them_and_sends_nothing(
        tmp_path, monkeypatch):
    monkeypatch.delenv('LOOPS_API_KEY', raising=False)
    lines = write_lines(tmp_path / 'deletions.txt', GOOD_LINES + BAD_LINES)
    out = io.StringIO()
    summary = delete.run(['--input', lines, '--dry_run', str(tmp_path / 'dry' / 'deletions'),
                          '--dead_letter', str(tmp_path / 'dl') + '/'], out=out)
    written = [json.loads(line) for path in glob.glob(str(tmp_path / 'dry' / 'deletions*'))
               for line in open(path)]
    headers = {'Content-Type': 'application/json'}
    assert sorted(written, key=json.dumps) == sorted([
        {'method': 'POST', 'path': '/v1/contacts/delete', 'headers': headers, 'body': body}
        for body in ({'userId': 'u1'}, {'email': 'ann@example.com'}, {'userId': 'nobody'},
                     {'userId': 'u3'})], key=json.dumps)
    assert (summary['deletions'], summary['invalid']) == (4, len(BAD_LINES))
    assert 'deleted' not in summary
    assert 'nothing was sent' in out.getvalue()


def fail_once_the_key_is_checked(sandbox) -> None:
    """Every request answered 500 from the moment the job's key check is
    answered (the pipeline takes far longer to start than this takes to see it)."""
    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                r['path'] == '/v1/api-key' and r['status'] for r in sandbox.state()['requests']):
            time.sleep(0.002)
        sandbox.configure(fail_before=1.0)
    threading.Thread(target=watch, daemon=True).start()


def test_a_deletion_that_runs_out_of_retries_is_a_failure_record_done_by_running_again(
        tmp_path, key_file):
    lines = write_lines(tmp_path / 'deletions.txt', ['u1', 'u3'])
    with LoopsSandbox(KEY, rate_limit=None, contacts=CONTACTS) as sandbox:
        fail_once_the_key_is_checked(sandbox)
        summary, printed = run_delete(sandbox, key_file, tmp_path, lines, '--max_attempts', '2')
        records = read_failure_records(str(tmp_path / 'dl') + '/')
        assert (summary['delete_failed'], summary['deleted'], summary['retries']) == (2, 0, 2)
        assert sorted((r['stage'], r['reason'], json.loads(r['request'])['body']['userId'])
                      for r in records) == [('deliver', 'retries_exhausted', 'u1'),
                                            ('deliver', 'retries_exhausted', 'u3')]
        assert 'run this same command again' in printed
        assert '2 failure records in' in printed and 'To delete them, run it again:' in printed
        sandbox.configure(fail_before=0)
        # A replay never sends a deletion, even one of its own records.
        replayed = replay.run(['--dead_letter', str(tmp_path / 'dl') + '/',
                               '--replay_dead_letter', str(tmp_path / 'replay-dl') + '/',
                               '--loops_base_url', sandbox.base_url,
                               '--loops_api_key_file', key_file], out=io.StringIO())
        assert (replayed['replayed'], replayed['replay/skipped_deliver_deletion']) == (0, 2)
        assert deletions_sent(sandbox) == [500] * 4
        again, _ = run_delete(sandbox, key_file, tmp_path, lines)
        assert again['deleted'] == 2
        assert sorted(c['userId'] for c in sandbox.state()['contacts'] if c['userId']) == ['keep']


def identify(user, message_id, at, **traits):
    return json.dumps({'type': 'identify', 'userId': user, 'messageId': message_id,
                       'timestamp': at, 'receivedAt': at, 'traits': traits})


def track(user, message_id, at):
    return json.dumps({'type': 'track', 'userId': user, 'messageId': message_id,
                       'event': 'Paid', 'timestamp': at, 'receivedAt': at, 'properties': {}})


def backfill_with_state(sandbox, key_file, tmp_path, types) -> tuple:
    out = io.StringIO()
    summary = backfill.run([
        '--input', str(tmp_path / 'archive' / '*.jsonl'), '--types', types,
        '--max_event_age', 'none', '--state', str(tmp_path / 'state') + '/',
        '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file,
        '--rate_limit', '1000', '--dead_letter', str(tmp_path / 'backfill-dl') + '/'], out=out)
    return summary, out.getvalue()


def test_with_state_a_backfill_does_not_bring_a_deleted_contact_back_but_later_data_does(
        tmp_path, key_file):
    (tmp_path / 'archive').mkdir()
    write_lines(tmp_path / 'archive' / 'history.jsonl', [
        identify('u1', 'm1', '2026-01-01T00:00:00Z', email='u1@example.com', firstName='Ann'),
        identify('u2', 'm2', '2026-01-01T00:00:00Z', email='u2@example.com', firstName='Bob'),
        track('u1', 'm3', '2026-02-01T00:00:00Z')])
    # Segment's deletion of u1 on 1 March, as its delete message dates it.
    deletions = write_lines(tmp_path / 'deletions.jsonl', [
        '{"type": "delete", "userId": "u1", "messageId": "delete-u1", '
        '"timestamp": "2026-03-01T00:00:00Z", "context": [], "integrations": []}'])

    def contacts():
        return {c['userId']: c for c in sandbox.state()['contacts']}

    with LoopsSandbox(KEY, rate_limit=None) as sandbox:
        first, _ = backfill_with_state(sandbox, key_file, tmp_path, 'identify')
        assert set(contacts()) == {'u1', 'u2'} and first['contacts'] == 2
        summary, printed = run_delete(sandbox, key_file, tmp_path, deletions,
                                      '--state', str(tmp_path / 'state') + '/')
        assert summary['deleted'] == 1 and set(contacts()) == {'u2'}
        assert '1 deletions recorded' in printed

        # The same history again, now with its events: nothing of u1 is sent.
        again, printed = backfill_with_state(sandbox, key_file, tmp_path, 'identify,track')
        assert set(contacts()) == {'u2'}
        assert (again['contacts'], again['events'], again['contacts_unchanged']) == (0, 0, 1)
        assert (again['contacts_before_deletion'], again['events_before_deletion']) == (1, 1)
        assert 'Deleted since: 1 contacts and 1 events' in printed

        # u1 comes back with what arrives after the deletion, the same name included.
        write_lines(tmp_path / 'archive' / 'later.jsonl', [
            identify('u1', 'm4', '2026-04-01T00:00:00Z', email='u1@example.com',
                     firstName='Ann'),
            track('u1', 'm5', '2026-04-02T00:00:00Z')])
        later, _ = backfill_with_state(sandbox, key_file, tmp_path, 'identify,track')
        u1 = contacts()['u1']
        events = sandbox.state()['events']
    assert (u1['email'], u1['firstName']) == ('u1@example.com', 'Ann')
    assert (later['contacts'], later['events'], later['events_before_deletion']) == (1, 1, 1)
    assert [(e['userId'], e['eventName']) for e in events] == [('u1', 'Paid')]


@pytest.mark.parametrize('argv, message', [
    ([], '--input is required'),
    (['--input', '/nonexistent/deletions.txt'], 'no files match'),
    (['--input', 'INPUT', '--dry_run', 'out', '--state_flush_seconds', '0'],
     '--state_flush_seconds must be positive'),
    (['--input', 'INPUT', '--inptu', 'x'], 'did you mean --input'),
    (['--input', 'INPUT'], 'no Loops API key'),
])
def test_options_that_cannot_be_used_are_usage_errors(argv, message, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.delenv('LOOPS_API_KEY', raising=False)
    monkeypatch.chdir(tmp_path)
    lines = write_lines(tmp_path / 'deletions.txt', ['u1'])
    argv = [lines if word == 'INPUT' else word for word in argv]
    assert cli.main(['delete', *argv]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'dead-letter-delete')


def test_a_key_loops_rejects_is_exit_status_3(tmp_path, capsys):
    lines = write_lines(tmp_path / 'deletions.txt', ['u1'])
    key_file = tmp_path / 'wrong-key'
    key_file.write_text('not-the-key')
    with LoopsSandbox(KEY, rate_limit=None, contacts=CONTACTS) as sandbox:
        status = cli.main(['delete', '--input', lines, '--loops_base_url', sandbox.base_url,
                           '--loops_api_key_file', str(key_file)])
        assert deletions_sent(sandbox) == []
    assert status == cli.EXIT_AUTH
    assert 'not-the-key' not in capsys.readouterr().err


@pytest.mark.parametrize('extra, status', [([], 5), (['--failures_ok'], 0)])
def test_failed_deletions_end_with_exit_status_5_unless_accepted(extra, status, tmp_path,
                                                                 key_file, capsys):
    lines = write_lines(tmp_path / 'deletions.txt', ['u1'])
    with LoopsSandbox(KEY, rate_limit=None, contacts=CONTACTS) as sandbox:
        fail_once_the_key_is_checked(sandbox)
        assert cli.main(['delete', '--input', lines, '--loops_base_url', sandbox.base_url,
                         '--loops_api_key_file', key_file, '--max_attempts', '1',
                         '--rate_limit', '1000', '--dead_letter', str(tmp_path / 'dl') + '/',
                         *extra]) == status
    err = capsys.readouterr().err
    assert ('segment-loops delete: completed with failures (exit status 5)' in err) == (
        status == 5)
