"""The backfill job end to end, dry run (no Loops): what it would send, what
it counts, and what it rejects."""
import collections
import datetime
import glob
import gzip
import io
import json
import os
import subprocess
import sys

import pytest

from pipeline import backfill
from pipeline.local.samples import write_archive, write_avro, write_ndjson
from pipeline.options import UsageError
from pipeline.summary import unaccounted
from transforms.core.records import idempotency_key_for
from transforms.core.sinks import read_failure_records

DAY_FOLDER = '1761955200000'  # 2025-11-01


def identify(message_id, user_id, ts, **traits):
    return {'type': 'identify', 'messageId': message_id, 'userId': user_id, 'timestamp': ts,
            'receivedAt': ts, 'traits': traits}


def track(message_id, user_id, ts, name, **properties):
    return {'type': 'track', 'messageId': message_id, 'userId': user_id, 'timestamp': ts,
            'receivedAt': ts, 'event': name, 'properties': properties}


# Written out of order on purpose: event time decides, not file order.
EVENTS = [
    identify('m2', 'u1', '2025-11-01T10:00:00Z', plan='pro', first_name='Ada', nickname=None),
    identify('m1', 'u1', '2025-11-01T09:00:00.000+00:00', email='ada@example.com', plan='free',
             nickname='ace', address={'city': 'Paris'}, mailingLists={'list_news': True}),
    identify('m3', 42, 1761994800000, email='bob@example.com', tags=['a', 'b']),
    identify('m4', None, '2025-11-01T09:00:00Z', email='anon@example.com'),
    identify('m5', 'u3', '2025-11-01', email='not-an-email'),
    track('t1', 'u1', '2025-11-01T11:00:00Z', 'Signed Up', plan='pro'),
    {'type': 'page', 'messageId': 'p1', 'userId': 'u1', 'name': 'Home'},
]
RAW_LINES = ['{"not": "closed"', '[1, 2]', '{"type": "pageview", "messageId": "x"}']


def run_backfill(tmp_path, inputs, *extra):
    out = tmp_path / 'out'
    argv = [arg for pattern in inputs for arg in ('--input', pattern)] + [
        '--dry_run', str(out / 'requests'), '--dead_letter', str(tmp_path / 'dl') + '/',
        '--summary', str(tmp_path / 'summary.json'), *extra]
    summary = backfill.run(argv, out=open(os.devnull, 'w'))
    requests = [json.loads(line) for path in glob.glob(str(out / 'requests*'))
                for line in open(path, encoding='utf-8')]
    failures = read_failure_records(str(tmp_path / 'dl') + '/')
    assert json.load(open(tmp_path / 'summary.json')) == summary
    return summary, requests, failures


def write_small_archive(root):
    folder = os.path.join(root, 'segment-logs', 'src', DAY_FOLDER)
    os.makedirs(folder)
    lines = [json.dumps(e) for e in EVENTS] + RAW_LINES + [json.dumps(EVENTS[0])]  # + a duplicate
    with gzip.open(os.path.join(folder, '1761958800000.ab.cd.uuid.gz'), 'wt') as f:
        f.write('\n'.join(lines) + '\n')
    open(os.path.join(folder, 'notes.txt'), 'w').close()  # not an archive: skipped, counted
    return os.path.join(root, 'segment-logs', '*', '*', '*')


def test_dry_run_sends_one_merged_upsert_per_contact_and_one_send_per_event(tmp_path):
    pattern = write_small_archive(str(tmp_path / 'archive'))

    summary, requests, failures = run_backfill(tmp_path, [pattern], '--types', 'identify,track',
                                               '--max_event_age', 'none')

    upserts = {r['body'].get('userId', r['body'].get('email')): r for r in requests
               if r['path'] == '/v1/contacts/update'}
    assert upserts['u1'] == {
        'method': 'PUT', 'path': '/v1/contacts/update',
        'headers': {'Content-Type': 'application/json'},
        'body': {'userId': 'u1', 'email': 'ada@example.com', 'firstName': 'Ada', 'plan': 'pro',
                 'nickname': None, 'addressCity': 'Paris', 'source': 'Segment',
                 'mailingLists': {'list_news': True}}}
    assert upserts['42']['body'] == {'userId': '42', 'email': 'bob@example.com', 'tags': 'a, b',
                                     'source': 'Segment'}
    # An identify with an email and no userId is a contact of its own (a lead).
    assert upserts['anon@example.com']['body'] == {'email': 'anon@example.com',
                                                   'source': 'Segment'}
    # An invalid email costs only itself (a failure record below).
    assert upserts['u3']['body'] == {'userId': 'u3', 'source': 'Segment'}
    assert set(upserts) == {'u1', '42', 'anon@example.com', 'u3'}
    (send,) = [r for r in requests if r['path'] == '/v1/events/send']
    assert send['method'] == 'POST'
    assert send['body'] == {'eventName': 'Signed Up', 'userId': 'u1',
                            'eventProperties': {'plan': 'pro'}}
    assert send['headers']['Idempotency-Key'].startswith('segment-')
    assert len(send['headers']['Idempotency-Key']) <= 100
    assert not any('Authorization' in r['headers'] for r in requests)

    reasons = collections.Counter((f['stage'], f['reason']) for f in failures)
    assert reasons == {('parse', 'invalid_json'): 1, ('parse', 'not_an_object'): 1,
                       ('parse', 'unknown_type'): 1, ('conform', 'invalid_email'): 1}
    invalid = next(f for f in failures if f['reason'] == 'invalid_email')
    assert json.loads(invalid['event'])['messageId'] == 'm5'
    assert invalid['source'].endswith('.gz:5')
    assert {k: summary[k] for k in ('read', 'parse_failed', 'duplicates', 'filtered_out',
                                    'map_failed', 'held_back_events', 'merged', 'contacts',
                                    'events')} == {
        'read': 11, 'parse_failed': 3, 'duplicates': 0, 'filtered_out': 1, 'map_failed': 0,
        'held_back_events': 0, 'merged': 2, 'contacts': 4, 'events': 1}
    assert summary['refused/invalid_email'] == 1
    assert summary['files_skipped_not_archive'] == 1
    assert unaccounted(summary) == 0


def test_old_track_events_are_held_back_by_default_and_the_run_says_how_to_send_them(tmp_path):
    pattern = write_small_archive(str(tmp_path / 'archive'))
    out = io.StringIO()
    argv = ['--input', pattern, '--types', 'identify,track', '--dry_run',
            str(tmp_path / 'out' / 'requests'), '--dead_letter', str(tmp_path / 'dl') + '/']

    summary = backfill.run(argv, out=out)

    # 2025-11-01 is more than 24 hours before any run of this test.
    assert summary['events'] == 0 and summary['held_back_events'] == 1
    assert unaccounted(summary) == 0
    assert 'Held back 1 track events older than --max_event_age 24h' in out.getvalue()
    assert '--max_event_age none' in out.getvalue()


def test_recent_events_pass_the_default_age_limit(tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    recent = (now - datetime.timedelta(hours=2)).isoformat()
    old = (now - datetime.timedelta(hours=30)).isoformat()
    events = [track('new', 'u1', recent, 'Order Completed'), track('old', 'u1', old, 'Order Completed'),
              identify('i-old', 'u1', old, email='a@example.com')]
    write_ndjson(str(tmp_path / 'events.jsonl'), events)

    summary, requests, _ = run_backfill(tmp_path, [str(tmp_path / 'events.jsonl')],
                                        '--types', 'identify,track')

    sends = [r for r in requests if r['path'] == '/v1/events/send']
    assert [s['headers']['Idempotency-Key'] for s in sends] == [idempotency_key_for('new')]
    assert summary['held_back_events'] == 1
    # Identifies have no age limit: history of a contact is its current state.
    assert summary['contacts'] == 1


def test_subscribed_true_is_held_back_and_opt_outs_are_sent(tmp_path):
    events = [identify('a1', 'ann', '2025-11-01T09:00:00Z', email='ann@example.com',
                       subscribed=False),
              identify('a2', 'ann', '2025-11-01T10:00:00Z', subscribed=True),
              identify('b1', 'bob', '2025-11-01T09:00:00Z', email='bob@example.com',
                       subscribed='false'),
              identify('c1', 'cy', '2025-11-01T09:00:00Z', email='cy@example.com',
                       subscribed='no')]
    write_ndjson(str(tmp_path / 'events.jsonl'), events)

    summary, requests, _ = run_backfill(tmp_path, [str(tmp_path / 'events.jsonl')])
    (tmp_path / 'again').mkdir()
    again, resubscribed, _ = run_backfill(tmp_path / 'again', [str(tmp_path / 'events.jsonl')],
                                          '--resubscribe')

    bodies = {r['body']['userId']: r['body'] for r in requests}
    assert 'subscribed' not in bodies['ann']          # latest is true: held back
    assert bodies['bob']['subscribed'] is False and bodies['cy']['subscribed'] is False
    assert summary['held_back_resubscribes'] == 1 and summary['unsubscribes'] == 2
    assert {r['body']['userId']: r['body'].get('subscribed') for r in resubscribed} == {
        'ann': True, 'bob': False, 'cy': False}
    assert again['held_back_resubscribes'] == 0


def test_gzip_plain_and_avro_inputs_give_the_same_requests(tmp_path):
    events = [e for e in EVENTS if e['type'] == 'identify']
    write_ndjson(str(tmp_path / 'events.jsonl'), events)
    write_avro(str(tmp_path / 'events.avro'), events)
    with gzip.open(tmp_path / 'events.json.gz', 'wt') as f:
        f.write(''.join(json.dumps(e) + '\n' for e in events))

    results = []
    for name in ('events.jsonl', 'events.avro', 'events.json.gz'):
        run_dir = tmp_path / name.replace('.', '_')
        run_dir.mkdir()
        _, requests, failures = run_backfill(run_dir, [str(tmp_path / name)])
        results.append((sorted(json.dumps(r, sort_keys=True) for r in requests),
                        sorted(f['reason'] for f in failures)))
    assert results[0] == results[1] == results[2]
    assert len(results[0][0]) == 4  # u1, 42, u3 (its invalid email refused) and a lead


def test_generated_archive_every_line_is_accounted_for(tmp_path):
    manifest = write_archive(str(tmp_path / 'archive'), users=15, days=2, seed=11)

    summary, requests, failures = run_backfill(
        tmp_path, [os.path.join(manifest.root, 'segment-logs', '*', '*', '*.gz')],
        '--types', 'identify,track', '--max_event_age', 'none')

    assert summary['read'] == manifest.lines
    assert unaccounted(summary) == 0
    assert summary['parse_failed'] == manifest.invalid_lines
    # Whole events, and the invalid emails of calls sent by their userId.
    assert len(failures) == (summary['parse_failed'] + summary['map_failed']
                             + summary.get('refused/invalid_email', 0))
    upserts = [r for r in requests if r['path'] == '/v1/contacts/update']
    contacts = [r['body'].get('userId') or r['body']['email'].lower() for r in upserts]
    assert len(contacts) == len(set(contacts)) == summary['contacts']
    expected_sends = {e['messageId'] for e in manifest.events if e['type'] == 'track'}
    sends = [r for r in requests if r['path'] == '/v1/events/send']
    assert len(sends) == summary['events'] <= len(expected_sends)
    assert {r['headers']['Idempotency-Key'] for r in sends} == {
        idempotency_key_for(m) for m in expected_sends} - {
        idempotency_key_for(json.loads(f['event'])['messageId']) for f in failures
        if f['stage'] == 'map'}


def retried(event, received, timestamp):
    """A later copy of `event` as Segment archives a library's retry: the same
    messageId, a later sentAt and receivedAt, a timestamp skewed by the
    difference in network delay."""
    return dict(event, sentAt=received, receivedAt=received, timestamp=timestamp)


def test_a_retried_message_in_a_later_day_is_sent_once_and_counted(tmp_path):
    sent = track('t1', 'u1', '2025-11-01T11:00:00.000Z', 'Signed Up', plan='pro')
    named = identify('i1', 'u1', '2025-11-01T10:00:00.000Z', email='ada@example.com')
    other = track('t2', 'u1', '2025-11-01T12:00:00.000Z', 'Upgraded', plan='team')
    first_day = [sent, named, other]
    later_day = [retried(sent, '2025-11-03T08:00:00.000Z', '2025-11-01T11:00:00.040Z'),
                 retried(named, '2025-11-03T08:00:00.000Z', '2025-11-01T10:00:00.040Z'),
                 sent]   # and a plain repeat of a line
    for day, events in (('1761955200000', first_day), ('1762128000000', later_day)):
        folder = tmp_path / 'archive' / 'segment-logs' / 'src' / day
        folder.mkdir(parents=True)
        with gzip.open(folder / f'{day}.gz', 'wt') as f:
            f.write(''.join(json.dumps(e) + '\n' for e in events))
    pattern = str(tmp_path / 'archive' / 'segment-logs' / '*' / '*' / '*')

    summary, requests, _ = run_backfill(tmp_path, [pattern], '--types', 'identify,track',
                                        '--max_event_age', 'none')

    sends = [r for r in requests if r['path'] == '/v1/events/send']
    assert sorted(r['headers']['Idempotency-Key'] for r in sends) == sorted(
        idempotency_key_for(m) for m in ('t1', 't2'))
    # The identify's copy sets the same values: it merges into the contact.
    assert {k: summary[k] for k in ('read', 'duplicates', 'merged', 'contacts', 'events')} == {
        'read': 6, 'duplicates': 2, 'merged': 1, 'contacts': 1, 'events': 2}
    assert unaccounted(summary) == 0


def test_since_and_until_read_only_those_received_days(tmp_path):
    manifest = write_archive(str(tmp_path / 'archive'), users=5, days=3, seed=3,
                             invalid=False, duplicates=False)
    first_day = manifest.days[0]
    import datetime
    day = datetime.datetime.fromtimestamp(first_day / 1000, datetime.timezone.utc).date()

    summary, _, _ = run_backfill(
        tmp_path, [os.path.join(manifest.root, 'segment-logs', '*', '*', '*.gz')],
        '--since', day.isoformat(), '--until', day.isoformat())

    files_that_day = [f for f in manifest.files if f'/{first_day}/' in f]
    assert summary['files'] == len(files_that_day)
    assert summary['files_skipped_outside_dates'] == len(manifest.files) - len(files_that_day)


def test_mapping_file_changes_where_fields_come_from(tmp_path):
    pattern = write_small_archive(str(tmp_path / 'archive'))
    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text('contact:\n  skip: [plan]\n  rename: {nickname: alias}\n')

    _, requests, _ = run_backfill(tmp_path, [pattern], '--mapping', str(mapping))

    u1 = next(r['body'] for r in requests if r['body'].get('userId') == 'u1')
    assert 'plan' not in u1 and u1['alias'] is None and 'nickname' not in u1


def test_consent_holds_for_subscribed_sent_with_an_event(tmp_path):
    write_ndjson(str(tmp_path / 'events.jsonl'), [
        track('t1', 'u1', '2025-11-01T11:00:00Z', 'Signed Up', optIn=True),
        track('t2', 'u2', '2025-11-01T11:00:00Z', 'Left', optIn=False)])
    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text('event:\n  contactProperties: {subscribed: "$.properties.optIn"}\n')
    argv = ['--mapping', str(mapping), '--types', 'track', '--max_event_age', 'none']

    (tmp_path / 'held').mkdir()
    (tmp_path / 'sent').mkdir()
    summary, requests, _ = run_backfill(tmp_path / 'held', [str(tmp_path / 'events.jsonl')],
                                        *argv)
    resent, again, _ = run_backfill(tmp_path / 'sent', [str(tmp_path / 'events.jsonl')], *argv,
                                    '--resubscribe')

    subscribed = {r['body']['userId']: r['body'].get('subscribed') for r in requests}
    assert subscribed == {'u1': None, 'u2': False}
    assert summary['held_back_resubscribes'] == 1 and summary['events'] == 2
    # u2's opt-out, sent with its event, is counted as an upsert's would be.
    assert summary['unsubscribes'] == resent['unsubscribes'] == 1
    assert {r['body']['userId']: r['body'].get('subscribed') for r in again} == {
        'u1': True, 'u2': False}
    assert resent['held_back_resubscribes'] == 0


@pytest.mark.parametrize('argv, message', [
    ([], '--input is required'),
    (['--input', '/nonexistent/dir/*.gz'], 'no files match'),
    (['--input', __file__, '--types', 'alias'], 'supported types are identify, track'),
    (['--input', __file__, '--types', 'page'], 'page calls are sent only when the mapping'),
    (['--input', __file__, '--max_event_age', 'soon'], 'expected a duration such as 24h'),
    (['--input', __file__, '--since', '2025-13-01'], 'expected a date'),
    (['--input', __file__, '--mapping', '/nonexistent.yaml'], '--mapping: /nonexistent.yaml'),
    # On a remote runner, local output paths would land on a worker's disk.
    (['--input', __file__, '--runner', 'DataflowRunner'], "--dead_letter 'dead-letter/': workers"),
    (['--input', 's3://bucket/segment-logs/*/*/*.gz', '--direct_running_mode=multi_processing'],
     's3:// inputs cannot be read with --direct_running_mode=multi_processing'),
])
def test_bad_requests_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        backfill.run(argv + ['--dry_run', '/tmp/unused'])


def test_a_remote_runner_takes_the_key_only_from_secret_manager(tmp_path):
    key_file = tmp_path / 'key'
    key_file.write_text('some-key')
    with pytest.raises(UsageError, match='--loops_api_key_secret'):
        backfill.run(['--input', __file__, '--runner', 'DataflowRunner',
                      '--dead_letter', 'gs://bucket/dead-letter/',
                      '--loops_api_key_file', str(key_file)])


def test_cli_dry_run_end_to_end(tmp_path):
    manifest = write_archive(str(tmp_path / 'archive'), users=8, days=2, seed=5)
    out = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'backfill',
         '--input', os.path.join(manifest.root, 'segment-logs', '*', '*', '*.gz'),
         '--types', 'identify,track', '--dry_run', str(out / 'requests'),
         '--dead_letter', str(tmp_path / 'DL') + '/', '--summary', str(tmp_path / 'S.json')],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.load(open(tmp_path / 'S.json'))
    assert summary['read'] == manifest.lines and unaccounted(summary) == 0
    assert 'backfill summary' in result.stdout and 'merged' in result.stdout
    assert glob.glob(str(tmp_path / 'DL' / 'failures*.avro'))
    assert sum(1 for p in glob.glob(str(out / 'requests*')) for _ in open(p)) == (
        summary['contacts'] + summary['events'])


def test_cli_reports_a_bad_mapping_without_a_traceback(tmp_path):
    mapping = tmp_path / 'bad.yaml'
    mapping.write_text('contact:\n  email: traits.email\n')
    result = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'backfill', '--input', __file__,
         '--mapping', str(mapping), '--dry_run', str(tmp_path / 'o')],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'contact.email' in result.stderr and 'Traceback' not in result.stderr


def test_an_avro_record_with_undecodable_json_is_one_failure_not_a_crash(tmp_path):
    # Valid JSON text that decodes to a lone surrogate: no coder can encode that
    # string, so the reader must turn the record into a failure, not pass it on.
    import fastavro

    from schemas import load_schema
    good = {'type': 'identify', 'messageId': 'ok', 'userId': 'u1',
            'traits': '{"email": "a@example.com"}'}
    bad = {'type': 'identify', 'messageId': 'bad', 'userId': 'u2',
           'traits': '{"x": "a\\ud800b"}'}
    with open(tmp_path / 'events.avro', 'wb') as f:
        fastavro.writer(f, load_schema('segment_event'), [bad, good])

    summary, requests, failures = run_backfill(tmp_path, [str(tmp_path / 'events.avro')])

    assert [r['body']['userId'] for r in requests] == ['u1']
    assert [(f['stage'], f['reason'], f['source'].rsplit('/', 1)[-1]) for f in failures] == [
        ('parse', 'invalid_json', 'events.avro:1')]
    assert '"messageId": "bad"' in failures[0]['event']
    assert summary['read'] == 2 and unaccounted(summary) == 0
