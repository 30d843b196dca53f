"""Segment's own Python SDK (segment-analytics-python) as the source: it posts
batches to a local stand-in for Segment's tracking API, which archives them
as Segment does (tests/segment_tracking_api.py), with a batch retried days
later, one whose connection dropped, and opt-outs through the SDK's own
`integrations=` argument. A backfill of that archive sends each message at
most once and nothing Segment would not have given Loops, accounts for every
line, and `check` counts the same."""
import datetime
import glob
import gzip
import io
import json
import os

import pytest
from segment.analytics import Client

from pipeline import backfill, check
from pipeline.local.sandbox import LoopsSandbox
from pipeline.summary import unaccounted
from tests.segment_tracking_api import DROP, ERROR_500, SegmentTrackingApi
from transforms.core.records import idempotency_key_for

WRITE_KEY = 'sdk-write-key'
LOOPS_KEY = 'sdk-loops-key'
T0 = datetime.datetime(2026, 11, 4, 10, 0, tzinfo=datetime.timezone.utc)
BATCH = 3


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def send_through_the_sdk(client: Client) -> None:
    """Three batches of three calls (upload_size 3; flushed after each)."""
    client.identify('u1', {'email': 'ada@example.com', 'firstName': 'Ada', 'plan': 'free'},
                    timestamp=at(0), message_id='sdk-i1')
    client.identify('u2', {'email': 'bob@example.com'}, timestamp=at(1),
                    integrations={'All': False}, message_id='sdk-i2')
    client.track('u3', 'Viewed Pricing', {'page': 'pricing'}, timestamp=at(2),
                 integrations={'Loops (Actions)': False}, message_id='sdk-t3')
    client.flush()
    # Archived, answered 500, posted again at once: received two days later.
    client.track('u1', 'Signed Up', {'plan': 'pro'}, timestamp=at(3), message_id='sdk-t1')
    client.identify('u3', {'email': 'cy@example.com'}, timestamp=at(4),
                    integrations={'All': False, 'Loops (Actions)': True}, message_id='sdk-i3')
    client.identify('u1', {'plan': 'pro'}, timestamp=at(5), message_id='sdk-i4')
    client.flush()
    # Archived, the connection dropped, posted again: a later file.
    client.track('u3', 'Signed Up', {}, context={'traits': {'email': 'cy@example.com'}},
                 timestamp=at(6), integrations={'Amplitude': False}, message_id='sdk-t4')
    client.identify('u4', {'email': 'dee@example.com'}, timestamp=at(7),
                    integrations={'Loops': False}, message_id='sdk-i5')
    client.track('u1', 'Upgraded', {'plan': 'team'}, timestamp=at(8),
                 integrations={'All': False, 'Loops (Actions)': {'anOption': 1}},
                 message_id='sdk-t5')
    client.flush()


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    """The stand-in's archive of what the SDK sent: (file pattern, stand-in)."""
    root = str(tmp_path_factory.mktemp('segment'))
    errors = []
    with SegmentTrackingApi(root, WRITE_KEY) as api:
        api.fail_once('sdk-t1', ERROR_500, later=datetime.timedelta(days=2))
        api.fail_once('sdk-t4', DROP, later=datetime.timedelta(minutes=1))
        client = Client(WRITE_KEY, host=api.host, upload_size=BATCH, upload_interval=1,
                        max_retries=2, on_error=lambda error, batch: errors.append(error))
        try:
            send_through_the_sdk(client)
        finally:
            client.shutdown()
    assert errors == []
    return os.path.join(root, 'segment-logs', '*', '*', '*.gz'), api


def lines_of(paths):
    return [json.loads(line) for path in paths for line in gzip.open(path, 'rt')]


def test_the_stand_in_archives_the_sdks_batches_and_retries_as_segment_does(archive):
    pattern, api = archive
    assert [(post.retry_count, post.answer) for post in api.posts] == [
        (0, '200'), (0, ERROR_500), (1, '200'), (0, DROP), (1, '200')]
    assert api.posts[1].message_ids == api.posts[2].message_ids == ('sdk-t1', 'sdk-i3', 'sdk-i4')
    assert len(lines_of(glob.glob(pattern))) == 15

    first, retried = lines_of([api.files[1]])[0], lines_of([api.files[2]])[0]
    assert first['messageId'] == retried['messageId'] == 'sdk-t1'
    # A later day's folder; the copy's own sentAt; the call's time kept.
    assert os.path.dirname(api.files[2]) > os.path.dirname(api.files[1])
    assert retried['sentAt'] > first['sentAt'] and retried['receivedAt'] > first['receivedAt']
    assert (first['originalTimestamp'] == retried['originalTimestamp']
            == '2026-11-04T10:03:00.000+00:00')
    assert first['integrations'] == {} and first['context']['library']['name'] == 'analytics-python'
    # timestamp = receivedAt - (sentAt - originalTimestamp): within the
    # request's delay of the call's time.
    assert datetime.timedelta(0) <= (datetime.datetime.fromisoformat(first['timestamp'])
                                     - at(3)) < datetime.timedelta(seconds=5)


def run_backfill(pattern, tmp_path):
    out = tmp_path / 'out'
    text = io.StringIO()
    summary = backfill.run(['--input', pattern, '--types', 'identify,track',
                            '--max_event_age', 'none', '--dry_run', str(out / 'requests'),
                            '--dead_letter', str(tmp_path / 'dl') + '/'], out=text)
    requests = [json.loads(line) for path in glob.glob(str(out / 'requests*'))
                for line in open(path, encoding='utf-8')]
    return summary, requests, text.getvalue()


def test_a_backfill_sends_each_message_once_and_only_what_segment_gave_loops(archive, tmp_path):
    pattern, _ = archive
    summary, requests, text = run_backfill(pattern, tmp_path)

    upserts = {r['body']['userId']: r for r in requests if r['path'] == '/v1/contacts/update'}
    sends = {r['headers']['Idempotency-Key']: r for r in requests
             if r['path'] == '/v1/events/send'}
    # u2 ("All": false) and u4 ("Loops": false) never reached Loops; nor u3's
    # Viewed Pricing ("Loops (Actions)": false).
    assert set(upserts) == {'u1', 'u3'}
    assert set(sends) == {idempotency_key_for(m) for m in ('sdk-t1', 'sdk-t4', 'sdk-t5')}
    assert len(requests) == len(upserts) + len(sends)
    assert upserts['u1'] == {
        'method': 'PUT', 'path': '/v1/contacts/update',
        'headers': {'Content-Type': 'application/json'},
        'body': {'userId': 'u1', 'email': 'ada@example.com', 'firstName': 'Ada', 'plan': 'pro',
                 'source': 'Segment'}}
    assert upserts['u3']['body'] == {'userId': 'u3', 'email': 'cy@example.com',
                                     'source': 'Segment'}
    assert sends[idempotency_key_for('sdk-t1')] == {
        'method': 'POST', 'path': '/v1/events/send',
        'headers': {'Content-Type': 'application/json',
                    'Idempotency-Key': idempotency_key_for('sdk-t1')},
        'body': {'eventName': 'Signed Up', 'userId': 'u1', 'eventProperties': {'plan': 'pro'}}}
    # Its email is sent only if Loops has no contact of the userId (the dry
    # run shows it beside the request).
    t4 = sends[idempotency_key_for('sdk-t4')]
    assert (t4['body'], t4['fallback_email']) == (
        {'eventName': 'Signed Up', 'userId': 'u3'}, 'cy@example.com')
    assert sends[idempotency_key_for('sdk-t5')]['body'] == {
        'eventName': 'Upgraded', 'userId': 'u1', 'eventProperties': {'plan': 'team'}}

    # 15 lines: 3 later copies of event sends; 4 calls turned off for
    # Loops (u4's twice); the identifies' copies merge into their contacts.
    assert {k: summary[k] for k in ('read', 'duplicates', 'filtered_out', 'merged', 'contacts',
                                    'events')} == {
        'read': 15, 'duplicates': 3, 'filtered_out': 4, 'merged': 3, 'contacts': 2, 'events': 3}
    assert summary['filter/integrations_off'] == 4
    assert unaccounted(summary) == 0
    assert '--ignore_integrations' in text


def test_check_counts_what_the_backfill_does(archive, tmp_path):
    pattern, _ = archive
    summary, _, _ = run_backfill(pattern, tmp_path)
    key_file = tmp_path / 'key'
    key_file.write_text(LOOPS_KEY)
    report_path = tmp_path / 'report.json'
    with LoopsSandbox(LOOPS_KEY, rate_limit=None,
                      custom_properties=[{'key': 'plan', 'label': 'plan', 'type': 'string'}]
                      ) as sandbox:
        check.main(['--input', pattern, '--types', 'identify,track', '--max_event_age', 'none',
                    '--loops_api_key_file', str(key_file), '--report', str(report_path),
                    '--loops_base_url', sandbox.base_url], out=io.StringIO())
    report = json.loads(report_path.read_text(encoding='utf-8'))['summary']
    # A dry run knows no account: only check fits requests to it; and check
    # writes no dead letter (the backfill's parse failures went to one).
    assert summary['dead_lettered'] == summary['parse_failed']
    assert {k: n for k, n in report.items() if not k.startswith(('conform/', 'refused/'))} == {
        k: n for k, n in summary.items() if k != 'dead_lettered'}
