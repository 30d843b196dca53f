"""`segment-loops check` against a local Loops sandbox over real HTTP: what it
reports, when it exits non-zero, and that its figures are the backfill's."""
import gzip
import io
import json
import os

import pytest

from pipeline import backfill, check
from pipeline.options import UsageError
from pipeline.local.samples import write_archive, write_avro, write_ndjson
from pipeline.local.sandbox import LoopsSandbox

KEY = 'check-test-key'
TS = '2026-11-01T10:00:00.000Z'
LATER = '2026-11-01T11:00:00.000Z'


def identify(message_id, user_id, ts=TS, **traits):
    return {'type': 'identify', 'messageId': message_id, 'userId': user_id, 'timestamp': ts,
            'receivedAt': ts, 'traits': traits}


def track(message_id, user_id, name, **properties):
    return {'type': 'track', 'messageId': message_id, 'userId': user_id, 'timestamp': TS,
            'receivedAt': TS, 'event': name, 'properties': properties}


def prop(key, kind):
    return {'key': key, 'label': key, 'type': kind}


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'loops-key'
    path.write_text(KEY + '\n')
    return str(path)


def run_check(tmp_path, key_file, inputs, custom_properties=(), *extra, mailing_lists=None):
    """Runs `check` against a fresh sandbox; returns (exit status, text, JSON report)."""
    report_path = tmp_path / 'report.json'
    argv = [arg for pattern in inputs for arg in ('--input', pattern)] + [
        '--loops_api_key_file', key_file, '--report', str(report_path), *extra]
    out = io.StringIO()
    with LoopsSandbox(KEY, custom_properties=list(custom_properties),
                      mailing_lists=mailing_lists, rate_limit=None) as sandbox:
        status = check.main(argv + ['--loops_base_url', sandbox.base_url], out=out)
        assert {r['method'] for r in sandbox.state()['requests']} == {'GET'}
    return status, out.getvalue(), json.loads(report_path.read_text(encoding='utf-8'))


def write_events(tmp_path, events, name='events.jsonl'):
    path = str(tmp_path / name)
    write_ndjson(path, events)
    return path


@pytest.mark.parametrize('events, custom_properties, findings', [
    ([identify('m1', 'u1', nickname='ace', plan='pro')], [prop('plan', 'string')],
     [('unknown_property', 'nickname', 1)]),
    ([identify('m1', 'u1', seats='twelve'), identify('m2', 'u2', seats='12')],
     [prop('seats', 'number')],
     [('type_mismatch', 'seats', 1)]),
    ([identify('m1', 'u1', mailingLists={'list_vip': True, 'list_news': False})], [],
     [('unknown_mailing_list', 'list_vip', 1)]),
    ([identify('m1', 'u1', plan='pro', seats='3', signedUpAt=1793527200000,
               mailingLists={'list_news': True})],
     [prop('plan', 'string'), prop('seats', 'number'), prop('signedUpAt', 'date')],
     []),
], ids=['missing property', 'type conflict', 'unknown list', 'nothing lost'])
def test_exit_status_and_findings(tmp_path, key_file, events, custom_properties, findings):
    status, text, report = run_check(tmp_path, key_file, [write_events(tmp_path, events)],
                                     custom_properties)

    assert [(f['kind'], f['subject'], f['count']) for f in report['findings']] == findings
    assert report['data_loss'] is bool(findings)
    assert status == (check.EXIT_DATA_LOSS if findings else check.EXIT_OK)
    for finding in report['findings']:
        assert finding['message'] in text
    if not findings:
        assert 'No data would be lost to the Loops account.' in text


def test_warn_only_exits_zero_but_still_reports(tmp_path, key_file):
    path = write_events(tmp_path, [identify('m1', 'u1', nickname='ace')])

    status, text, report = run_check(tmp_path, key_file, [path], (), '--warn_only')

    assert status == 0
    assert report['data_loss'] is True
    assert "property 'nickname' does not exist in the Loops account" in text


def test_json_report_content(tmp_path, key_file):
    events = [
        identify('m1', 'u1', email='ada@example.com', plan='pro', seats='12', nickname='ace',
                 mailingLists={'list_news': True}),
        identify('m2', 'u1', LATER, plan='business', seats=15, address={'city': 'Paris'}),
        identify('m3', 'u2', email='bob@example.com', seats='twelve'),
        identify('m4', None, email='anon@example.com'),
        identify('m1', 'u1', email='ada@example.com', plan='pro', seats='12', nickname='ace',
                 mailingLists={'list_news': True}),
        track('t1', 'u1', 'Signed Up', plan='pro'),
        track('t2', 'u2', 'Order Completed', total=12.5),
        track('t3', 'u2', 'Order Completed', total=3),
        {'type': 'page', 'messageId': 'p1', 'userId': 'u1', 'name': 'Home'},
    ]
    path = write_events(tmp_path, events)
    with open(path, 'a', encoding='utf-8') as f:
        f.write('{"not": "closed"\n')

    status, text, report = run_check(
        tmp_path, key_file, [path], [prop('plan', 'string'), prop('seats', 'number')],
        '--types', 'identify,track', '--events', 'Order Completed')

    assert status == check.EXIT_DATA_LOSS
    assert report['input'] == {
        'patterns': [path], 'files': 1, 'files_read': 1, 'files_skipped_not_archive': 0,
        'files_skipped_outside_dates': 0, 'unreadable_files': [], 'lines': 10,
        'sample': None, 'complete': True}
    assert report['events'] == {
        'by_type': {'identify': 5, 'track': 3, 'page': 1},
        'track_by_name': {'Order Completed': 2, 'Signed Up': 1},
        'selected_types': ['identify', 'track'],
        'selected_track_names': ['Order Completed'],
        'filtered_out': 2}
    # u1's upserts m1, m2 merge into one (m1's repeat dropped); m3 fails on 'twelve'.
    assert report['backfill'] == {
        'contacts': 2, 'contact_upserts': 2, 'contact_requests': 1, 'event_requests': 2,
        'requests': 3, 'duplicates': 1, 'rate_limit': 10.0, 'estimated_seconds': 0.3}
    assert report['account'] == {
        'team': 'Sandbox team', 'custom_properties': 2,
        'mailing_lists': ['list_news', 'list_product'], 'unknown_properties': 'send'}
    assert report['properties']['seats'] == {
        'count': 4, 'example': '12', 'inferred_type': 'string',
        'value_types': {'number': 1, 'string': 3}, 'account_type': 'number',
        'status': 'type_conflict', 'coerced': 2, 'type_conflicts': 1,
        'conflict_example': 'twelve'}
    assert report['properties']['nickname'] == {
        'count': 2, 'example': 'ace', 'inferred_type': 'string', 'value_types': {'string': 2},
        'account_type': None, 'status': 'missing', 'coerced': 0, 'type_conflicts': 0,
        'conflict_example': None}
    assert {key: item['status'] for key, item in report['properties'].items()} == {
        'address_city': 'missing', 'email': 'built_in', 'nickname': 'missing', 'plan': 'ok',
        'seats': 'type_conflict', 'source': 'built_in', 'userId': 'built_in'}
    assert report['mailing_lists'] == {'list_news': {'count': 2, 'exists': True}}
    assert report['adjustments'] == {'conform/coerced': 2, 'conform/unknown_property_sent': 3,
                                     'map/flattened': 1}
    assert report['failures'] == {'map/missing_user_id': 1, 'map/type_mismatch': 1,
                                  'parse/invalid_json': 1}
    assert [(f['kind'], f['subject']) for f in report['findings']] == [
        ('unknown_property', 'address_city'), ('unknown_property', 'nickname'),
        ('type_mismatch', 'seats')]
    assert 'TYPE CONFLICT (1)' in text and 'NOT IN THE ACCOUNT' in text


def test_unknown_properties_fail_predicts_the_failures(tmp_path, key_file):
    path = write_events(tmp_path, [identify('m1', 'u1', nickname='ace'),
                                   identify('m2', 'u2', plan='pro')])

    _, _, report = run_check(tmp_path, key_file, [path], [prop('plan', 'string')],
                             '--unknown_properties', 'fail')

    assert report['failures'] == {'map/unknown_property': 1}
    assert report['backfill']['contact_requests'] == 1
    assert 'failure records (--unknown_properties=fail)' in report['findings'][0]['message']


def test_sample_reads_only_the_first_lines_in_path_order(tmp_path, key_file):
    write_events(tmp_path, [identify(f'a{i}', f'u{i}', plan='pro') for i in range(5)], 'a.jsonl')
    write_events(tmp_path, [identify('b1', 'u9', nickname='ace')], 'b.jsonl')

    status, text, report = run_check(tmp_path, key_file, [str(tmp_path / '*.jsonl')],
                                     [prop('plan', 'string')], '--sample', '3')

    assert status == 0
    assert report['input']['lines'] == 3
    assert report['input']['files_read'] == 1
    assert report['input']['complete'] is False
    assert report['properties']['plan']['count'] == 3
    assert 'nickname' not in report['properties']
    assert '--sample 3: the figures cover these lines only' in text


def test_every_format_is_read_and_an_unreadable_file_is_reported(tmp_path, key_file):
    write_avro(str(tmp_path / 'a.avro'), [identify('m1', 'u1', plan='pro')])
    with gzip.open(tmp_path / 'b.json.gz', 'wt', encoding='utf-8') as f:
        f.write(json.dumps(identify('m2', 'u2', plan='free')) + '\n')
    write_events(tmp_path, [identify('m3', 'u3', plan='pro')], 'c.ndjson')
    lines = ''.join(json.dumps(identify(f'm4-{i}', 'u4', plan='pro')) + '\n'
                    for i in range(2000))
    whole = gzip.compress(lines.encode())
    (tmp_path / 'd.gz').write_bytes(whole[:len(whole) // 2])  # the lines before the cut count

    status, text, report = run_check(tmp_path, key_file, [str(tmp_path / '*')],
                                     [prop('plan', 'string')])

    assert status == 0
    assert report['backfill']['contact_requests'] == 4
    assert report['input']['files_skipped_not_archive'] == 1  # the API key file
    assert [(f['path'], f['reason']) for f in report['input']['unreadable_files']] == [
        (str(tmp_path / 'd.gz'), 'truncated_file')]
    assert report['failures'] == {'read/truncated_file': 1}
    assert f'Unreadable: {tmp_path / "d.gz"}' in text


def test_an_account_with_every_reported_property_passes(tmp_path, key_file):
    root = str(tmp_path / 'archive')
    write_archive(root, users=12, days=1, files_per_day=1)
    pattern = os.path.join(root, 'segment-logs', '*', '*', '*')

    status, _, report = run_check(tmp_path, key_file, [pattern])
    missing = [prop(key, item['inferred_type']) for key, item in report['properties'].items()
               if item['status'] == 'missing']
    status_after, text, report_after = run_check(tmp_path, key_file, [pattern], missing)

    assert status == check.EXIT_DATA_LOSS and len(missing) > 10
    assert {f['kind'] for f in report['findings']} == {'unknown_property'}
    assert status_after == 0
    assert report_after['findings'] == []
    assert 'No data would be lost to the Loops account.' in text


def test_figures_match_the_backfill_summary(tmp_path, key_file):
    root = str(tmp_path / 'archive')
    write_archive(root, users=10, days=2, files_per_day=2)
    pattern = os.path.join(root, 'segment-logs', '*', '*', '*')

    _, _, report = run_check(tmp_path, key_file, [pattern], (), '--types', 'identify,track')
    summary = backfill.run(['--input', pattern, '--types', 'identify,track',
                            '--dry_run', str(tmp_path / 'out' / 'requests'),
                            '--dead_letter', str(tmp_path / 'dl') + '/'],
                           out=open(os.devnull, 'w'))

    figures = report['backfill']
    assert (figures['contact_requests'], figures['event_requests'], figures['duplicates']) == (
        summary['contacts'], summary['events'], summary['duplicates'])
    assert report['input']['lines'] == summary['read']
    assert report['events']['filtered_out'] == summary['filtered_out']
    failures = report['failures']
    assert sum(n for name, n in failures.items() if name.startswith('parse/')) == (
        summary['parse_failed'])
    assert sum(n for name, n in failures.items() if name.startswith('map/')) == (
        summary['map_failed'])
    assert {name: summary[name] for name in failures} == failures
    reshaped = {name: n for name, n in report['adjustments'].items() if name.startswith('map/')}
    assert {name: summary[name] for name in reshaped} == reshaped


@pytest.mark.parametrize('extra, message', [
    (['--sample', '0'], '--sample must be a positive number of lines'),
    (['--types', 'page'], 'supported types are identify, track'),
    (['--unknown_properties', 'ignore'], None),
])
def test_usage_errors(tmp_path, key_file, extra, message):
    path = write_events(tmp_path, [identify('m1', 'u1')])
    argv = ['--input', path, '--loops_api_key_file', key_file, *extra]
    if message is None:
        with pytest.raises(SystemExit):
            check.main(argv)
    else:
        with pytest.raises(UsageError, match=message):
            check.main(argv)


def test_usage_errors_without_input_or_key(tmp_path, monkeypatch):
    monkeypatch.delenv('LOOPS_API_KEY', raising=False)
    with pytest.raises(UsageError, match='--input is required'):
        check.main([])
    with pytest.raises(UsageError, match='no files match'):
        check.main(['--input', str(tmp_path / 'nothing-*.gz')])
    path = write_events(tmp_path, [identify('m1', 'u1')])
    with pytest.raises(UsageError, match='no Loops API key'):
        check.main(['--input', path])


@pytest.mark.parametrize('value, kind', [
    (None, 'null'), (True, 'boolean'), (3, 'number'), (2.5, 'number'), ('pro', 'string'),
    ('2026-11-01T10:00:00.000Z', 'date'), ('2026-11-01 10:00', 'date'), ('2026-11-01', 'string'),
])
def test_value_type(value, kind):
    assert check.value_type(value) == kind


@pytest.mark.parametrize('seconds, text', [
    (0, '0s'), (4.4, '4s'), (75, '1m 15s'), (3725, '1h 02m'), (90000, '25h 00m'),
])
def test_duration_text(seconds, text):
    assert check.duration_text(seconds) == text
