"""`segment-loops check` against a local Loops sandbox over real HTTP: what it
reports, when it exits non-zero, and that its figures are a backfill dry
run's summary (leads, consent, held-back events and refused parts included)."""
import datetime
import glob
import gzip
import io
import json
import os
import time

import pytest

from pipeline import backfill, check
from pipeline.check_report import INVALID_EMAIL, value_type
from pipeline.options import UsageError
from pipeline.local.samples import write_archive, write_avro, write_ndjson
from pipeline.local.sandbox import LoopsSandbox
from pipeline.summary import DELIVERY_KEYS, FAILURE_KEYS, unaccounted
from transforms.core.sinks import DEAD_LETTER_PREFIX

KEY = 'check-test-key'


def without_failure_records(summary: dict) -> dict:
    """A backfill's summary without the counts of the failure records it
    wrote (a check writes none)."""
    return {name: n for name, n in summary.items()
            if name not in FAILURE_KEYS and not name.startswith(DEAD_LETTER_PREFIX)}


TS = '2026-11-01T10:00:00.000Z'
LATER = '2026-11-01T11:00:00.000Z'


def identify(message_id, user_id, ts=TS, **traits):
    return {'type': 'identify', 'messageId': message_id, 'userId': user_id, 'timestamp': ts,
            'receivedAt': ts, 'traits': traits}


def track(message_id, user_id, name, ts=TS, **properties):
    return {'type': 'track', 'messageId': message_id, 'userId': user_id, 'timestamp': ts,
            'receivedAt': ts, 'event': name, 'properties': properties}


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


def check_mixed_events(tmp_path, key_file):
    """A check of identifies, tracks, a page and a broken line, against an
    account with plan (string) and seats (number)."""
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

    return run_check(
        tmp_path, key_file, [path], [prop('plan', 'string'), prop('seats', 'number')],
        '--types', 'identify,track', '--events', 'Order Completed', '--max_event_age', 'none')


def test_json_report_what_was_read_and_what_would_be_sent(tmp_path, key_file):
    status, _, report = check_mixed_events(tmp_path, key_file)

    assert status == check.EXIT_DATA_LOSS
    assert report['input'] == {
        'patterns': [str(tmp_path / 'events.jsonl')], 'files': 1, 'files_read': 1,
        'files_skipped_not_archive': 0, 'files_skipped_outside_dates': 0,
        'unreadable_files': [], 'lines': 10, 'sample': None, 'complete': True}
    assert report['events'] == {
        'by_type': {'identify': 5, 'track': 3, 'page': 1},
        'track_by_name': {'Order Completed': 2, 'Signed Up': 1},
        'selected_types': ['identify', 'track'],
        'selected_track_names': ['Order Completed'],
        'filtered_out': 2}
    # u1's updates m1, m2 and m1's repeat merge into one upsert; u2's 'twelve'
    # is refused on its own and the rest of its upsert sent; anon is a lead.
    assert report['requests'] == {
        'contact_upserts': 3, 'event_sends': 2, 'total': 5, 'rate_limit': 10.0,
        'estimated_seconds': 0.5}
    assert report['contacts'] == {
        'upserts': 3, 'leads_created': 1, 'leads_merged': 0, 'ambiguous_leads': 0,
        'unsubscribes': 0, 'resubscribes_sent': 0}
    assert {key: report['summary'][key] for key in (
        'read', 'parse_failed', 'filtered_out', 'map_failed', 'held_back_events', 'duplicates',
        'merged', 'contacts', 'events')} == {
        'read': 10, 'parse_failed': 1, 'filtered_out': 2, 'map_failed': 0,
        'held_back_events': 0, 'duplicates': 0, 'merged': 2, 'contacts': 3, 'events': 2}
    assert report['account'] == {
        'team': 'Sandbox team', 'custom_properties': 2,
        'mailing_lists': ['list_news', 'list_product'], 'unknown_properties': 'send'}
    assert report['held_back'] == {
        'old_events': {'count': 0, 'max_event_age': 'none', 'option': '--max_event_age none'},
        'resubscribes': {'count': 0, 'option': '--resubscribe'}}
    assert report['failures'] == {'parse/invalid_json': 1}


def test_json_report_properties_lists_and_what_would_be_lost(tmp_path, key_file):
    _, text, report = check_mixed_events(tmp_path, key_file)

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
        'addressCity': 'missing', 'email': 'built_in', 'nickname': 'missing', 'plan': 'ok',
        'seats': 'type_conflict', 'source': 'built_in', 'userId': 'built_in'}
    assert report['mailing_lists'] == {'list_news': {'count': 2, 'exists': True}}
    assert report['adjustments'] == {'conform/coerced': 2, 'conform/unknown_property_sent': 3,
                                     'map/flattened': 1}
    assert report['refused'] == {
        'unknown_mailing_list': {}, 'type_mismatch': {'seats': 1}, 'unknown_property': {},
        'not_settable': {}, 'invalid_property_name': 0, 'invalid_email': 0,
        'colon_in_event_name': {}}
    assert [(f['kind'], f['subject']) for f in report['findings']] == [
        ('unknown_property', 'addressCity'), ('unknown_property', 'nickname'),
        ('type_mismatch', 'seats')]
    assert 'TYPE CONFLICT (1)' in text and 'NOT IN THE ACCOUNT' in text


def test_unknown_properties_fail_predicts_the_refused_parts(tmp_path, key_file):
    path = write_events(tmp_path, [identify('m1', 'u1', nickname='ace'),
                                   identify('m2', 'u2', plan='pro')])

    _, _, report = run_check(tmp_path, key_file, [path], [prop('plan', 'string')],
                             '--unknown_properties', 'fail')

    assert report['refused']['unknown_property'] == {'nickname': 1}
    assert report['summary']['refused/unknown_property'] == 1
    assert report['failures'] == {}
    assert report['requests']['contact_upserts'] == 2   # the rest of u1's upsert is sent
    assert 'failure records (--unknown_properties=fail)' in report['findings'][0]['message']


def test_a_field_loops_cannot_set_is_reported_as_a_refused_part(tmp_path, key_file):
    path = write_events(tmp_path, [identify('m1', 'u1', notes='Met at the fair', plan='pro'),
                                   identify('m2', 'u2', plan='pro')])

    status, text, report = run_check(tmp_path, key_file, [path], [prop('plan', 'string')])

    assert report['properties']['notes']['status'] == 'not_settable'
    assert report['refused']['not_settable'] == {'notes': 1}
    assert report['refused']['type_mismatch'] == {}
    assert report['summary']['refused/not_settable'] == 1
    assert [(f['kind'], f['subject']) for f in report['findings']] == [('not_settable', 'notes')]
    assert status == check.EXIT_DATA_LOSS
    assert "field 'notes'" in text and 'NOT SETTABLE' in text


@pytest.mark.parametrize('extra, resubscribes_sent, held_back', [
    ((), 0, 1), (('--resubscribe',), 1, 0)])
def test_consent_sent_with_events_is_counted_as_an_upserts(tmp_path, key_file, extra,
                                                           resubscribes_sent, held_back):
    path = write_events(tmp_path, [track('t1', 'u1', 'Signed Up', optIn=True),
                                   track('t2', 'u2', 'Left', optIn=False)])
    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text('event:\n  contactProperties: {subscribed: "$.properties.optIn"}\n')

    _, _, report = run_check(tmp_path, key_file, [path], (), '--types', 'track',
                             '--max_event_age', 'none', '--mapping', str(mapping), *extra)

    assert report['contacts']['unsubscribes'] == 1
    assert report['contacts']['resubscribes_sent'] == resubscribes_sent
    assert report['held_back']['resubscribes']['count'] == held_back


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
    assert report['requests']['contact_upserts'] == 4
    assert report['input']['files_skipped_not_archive'] == 1  # the API key file
    assert [(f['path'], f['reason']) for f in report['input']['unreadable_files']] == [
        (str(tmp_path / 'd.gz'), 'truncated_file')]
    assert report['failures'] == {'read/truncated_file': 1}
    assert report['summary']['files_unreadable'] == 1
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


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat()


def safety_events():
    """Leads, consent, held-back events, repeats and parts an account refuses."""
    recent = iso(time.time() * 1000 - 3_600_000)
    signed_up = track('h9', 'u100', 'Signed Up', ts=recent)
    return [
        identify('h1', 'u100', email='lead@example.com', plan='pro'),
        identify('h2', None, LATER, email='Lead@Example.com', nickname='l'),  # merges into u100
        identify('h3', None, email='solo@example.com'),                      # a lead of its own
        identify('h4', 'u101', email='out@example.com', subscribed=False),  # an opt-out
        identify('h5', 'u102', email='in@example.com', subscribed=True),    # held back
        identify('h6', 'u103', mailingLists={'list_gone': True, 'list_news': True}),
        identify('h7', 'u104', seats='many'),
        identify('h8', 'u105', **{' ': 'blank name', 'plan': 'free'}),
        track('h10', 'u100', 'Order:Done', ts=recent),                      # a colon
        signed_up, signed_up,                                                # a repeat
        track('h11', 'u101', 'Old Event'),                                   # 2026-11-01
    ]


ACCOUNT = [prop('plan', 'string'), prop('seats', 'number'), prop('nickname', 'string')]


@pytest.mark.parametrize('extra', [
    [],
    ['--max_event_age', 'none', '--resubscribe'],
    ['--identity', 'user_id', '--max_event_age', '7d'],
], ids=['defaults', 'send everything', 'userId only'])
def test_figures_equal_the_backfill_dry_run_summary(tmp_path, key_file, extra):
    root = str(tmp_path / 'archive')
    write_archive(root, users=10, days=2, files_per_day=2)
    inputs = [os.path.join(root, 'segment-logs', '*', '*', '*'),
              write_events(tmp_path, safety_events())]
    options = [arg for pattern in inputs for arg in ('--input', pattern)] + [
        '--types', 'identify,track', *extra]

    _, _, report = run_check(tmp_path, key_file, inputs, ACCOUNT, '--types', 'identify,track',
                             *extra)
    summary = backfill.run(options + ['--dry_run', str(tmp_path / 'out' / 'requests'),
                                      '--dead_letter', str(tmp_path / 'dl') + '/'],
                           out=open(os.devnull, 'w'))

    # A dry run knows no account: only check fits requests to it (conform/,
    # refused/ but for the mapping's own invalid_email); refusing a part never
    # changes what the other figures count.
    fitted = {name: n for name, n in report['summary'].items()
              if name.startswith(('conform/', 'refused/')) and name != INVALID_EMAIL}
    assert {name: n for name, n in report['summary'].items()
            if name not in fitted} == without_failure_records(summary)
    assert unaccounted(summary) == 0
    assert fitted['refused/unknown_mailing_list'] == 1
    assert fitted['refused/type_mismatch'] == 1
    assert summary[INVALID_EMAIL] == report['refused']['invalid_email'] >= 1
    assert summary['map/dropped_invalid_name'] == 1
    assert summary['duplicates'] >= 1
    assert summary['unsubscribes'] >= 1
    if '--identity' not in extra:
        assert summary['leads_merged'] >= 1
        assert summary['map/colon_in_event_name'] >= 1
    if extra == []:
        assert summary['held_back_events'] > 0 and summary['held_back_resubscribes'] > 0


def test_with_segment_subscriptions_check_predicts_the_backfills_figures(tmp_path, key_file):
    segment = os.path.join(os.path.dirname(__file__), 'data', 'segment')
    with open(os.path.join(segment, 'subscriptions_live_calls.json'), encoding='utf-8') as f:
        calls = [call['event'] for call in json.load(f)['calls']]
    options = ['--input', write_events(tmp_path, calls), '--types', 'identify,track',
               '--max_event_age', 'none',
               '--segment_subscriptions', os.path.join(segment, 'subscriptions_live_setup.json')]

    _, text, report = run_check(tmp_path, key_file, options[1:2], (), *options[2:])
    summary = backfill.run(options + ['--dry_run', str(tmp_path / 'out' / 'requests'),
                                      '--dead_letter', str(tmp_path / 'dl') + '/'],
                           out=open(os.devnull, 'w'))

    assert text.startswith('Never applied (skipped):\n')
    fitted = {name for name in report['summary'] if name.startswith(('conform/', 'refused/'))}
    assert {name: n for name, n in report['summary'].items()
            if name not in fitted} == without_failure_records(summary)
    assert report['failures'] == {'map/action_refused': 3}
    assert (report['requests']['contact_upserts'], report['requests']['event_sends']) == (4, 3)


def test_held_back_items_are_shown_with_the_option_that_sends_them(tmp_path, key_file):
    path = write_events(tmp_path, safety_events())

    lists = [{'id': 'list_news', 'name': 'News'}, {'id': 'list_gone', 'name': 'Gone'}]
    status, text, report = run_check(tmp_path, key_file, [path], ACCOUNT,
                                     '--types', 'identify,track', mailing_lists=lists)

    held_back = report['held_back']
    assert held_back['old_events'] == {'count': 1, 'max_event_age': '24h',
                                       'option': '--max_event_age none'}
    assert held_back['resubscribes'] == {'count': 1, 'option': '--resubscribe'}
    assert 'HELD BACK' in text
    assert 'To send them: --max_event_age none' in text
    assert 'To send it: --resubscribe' in text
    # Held back is the safe default, not data loss; seats 'many' still is.
    assert [f['kind'] for f in report['findings']] == ['type_mismatch']
    assert status == check.EXIT_DATA_LOSS


def test_leads_consent_and_refusals_are_reported(tmp_path, key_file):
    path = write_events(tmp_path, safety_events())

    status, text, report = run_check(tmp_path, key_file, [path], ACCOUNT,
                                     '--types', 'identify,track', '--resubscribe')

    assert report['contacts'] == {
        'upserts': 7, 'leads_created': 1, 'leads_merged': 1, 'ambiguous_leads': 0,
        'unsubscribes': 1, 'resubscribes_sent': 1}
    assert report['held_back']['resubscribes']['count'] == 0
    assert report['refused'] == {
        'unknown_mailing_list': {'list_gone': 1}, 'type_mismatch': {'seats': 1},
        'unknown_property': {}, 'not_settable': {}, 'invalid_property_name': 1,
        'invalid_email': 0, 'colon_in_event_name': {'Order:Done': 1}}
    assert report['failures'] == {'map/colon_in_event_name': 1}
    assert [(f['kind'], f['subject']) for f in report['findings']] == [
        ('type_mismatch', 'seats'), ('unknown_mailing_list', 'list_gone')]
    assert status == check.EXIT_DATA_LOSS
    for line in ("mailing list 'list_gone'", "event 'Order:Done'",
                 'property names Loops cannot hold', 'leads merged into their userId contact',
                 're-subscribed (subscribed: true sent, --resubscribe)'):
        assert line in text


def test_a_colon_or_an_invalid_name_alone_is_shown_but_is_not_account_data_loss(
        tmp_path, key_file):
    path = write_events(tmp_path, [identify('m1', 'u1', **{' ': 'x'}),
                                   track('t1', 'u1', 'Order:Done')])

    status, text, report = run_check(tmp_path, key_file, [path], (),
                                     '--types', 'identify,track')

    assert status == check.EXIT_OK
    assert report['refused']['colon_in_event_name'] == {'Order:Done': 1}
    assert report['refused']['invalid_property_name'] == 1
    assert 'set colon_replacement in the mapping' in text


@pytest.mark.parametrize('extra, message', [
    (['--sample', '0'], '--sample must be a positive number of lines'),
    (['--types', 'page'], 'page calls are sent only when the mapping says how'),
    (['--max_event_age', 'soon'], 'expected a duration such as 24h'),
    (['--unknown_properties', 'ignore'], None),
    (['--resubscribe', 'maybe'], None),
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
    with pytest.raises(UsageError, match='no Loops API key') as error:
        check.main(['--input', path])
    # check has no --dry_run: it says what it needs, and where a dry run is.
    assert 'check reads the account' in str(error.value)
    assert 'segment-loops backfill --dry_run' in str(error.value)


@pytest.mark.parametrize('value, kind', [
    (None, 'null'), (True, 'boolean'), (3, 'number'), (2.5, 'number'), ('pro', 'string'),
    ('2026-11-01T10:00:00.000Z', 'date'), ('2026-11-01 10:00', 'date'), ('2026-11-01', 'string'),
])
def test_value_type(value, kind):
    assert value_type(value) == kind


def test_refused_parts_equal_a_sending_backfills(tmp_path, key_file):
    """With the account in hand, the backfill fits requests as check does:
    every figure but delivery's is the same, conform/ and refused/ included."""
    path = write_events(tmp_path, safety_events())

    _, _, report = run_check(tmp_path, key_file, [path], ACCOUNT, '--types', 'identify,track')
    with LoopsSandbox(KEY, custom_properties=ACCOUNT, rate_limit=None) as sandbox:
        summary = backfill.run(['--input', path, '--types', 'identify,track',
                                '--loops_base_url', sandbox.base_url,
                                '--loops_api_key_file', key_file, '--rate_limit', '1000',
                                '--dead_letter', str(tmp_path / 'dl') + '/'],
                               out=open(os.devnull, 'w'))

    delivery = set(DELIVERY_KEYS) | {name for name in summary if name.startswith('deliver/')}
    assert {name: n for name, n in without_failure_records(summary).items()
            if name not in delivery} == report['summary']


def test_with_a_sync_state_check_predicts_an_incremental_runs_figures(tmp_path, key_file):
    root = str(tmp_path / 'archive')
    write_archive(root, users=20, days=6, files_per_day=1, seed=9)
    days = sorted(path for path in glob.glob(os.path.join(root, 'segment-logs', '*', '*'))
                  if os.path.isdir(path))
    first_days = [os.path.join(day, '*.gz') for day in days[:-1]]
    all_days = os.path.join(root, 'segment-logs', '*', '*', '*.gz')
    state = str(tmp_path / 'state') + '/'
    sending = ['--types', 'identify,track', '--max_event_age', 'none', '--state', state]
    # A first run delivers all days but the last, and records them in the state.
    with LoopsSandbox(KEY, rate_limit=None) as sandbox:
        backfill.run([arg for pattern in first_days for arg in ('--input', pattern)] + sending + [
            '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file,
            '--dead_letter', str(tmp_path / 'dl1') + '/'], out=open(os.devnull, 'w'))

    _, _, report = run_check(tmp_path, key_file, [all_days], (), *sending)
    summary = backfill.run(['--input', all_days, *sending,
                            '--dry_run', str(tmp_path / 'out' / 'requests'),
                            '--dead_letter', str(tmp_path / 'dl2') + '/'],
                           out=open(os.devnull, 'w'))

    # A dry run knows no account: only check fits requests to it; and only
    # the run writes failure records.
    assert {name: n for name, n in report['summary'].items()
            if not name.startswith(('conform/', 'refused/'))
            or name == INVALID_EMAIL} == without_failure_records(summary)
    assert summary['contacts_unchanged'] > 0 and summary['events_already_sent'] > 0
    assert summary['contacts'] + summary['events'] > 0   # the last day's changes
    assert unaccounted(summary) == 0
