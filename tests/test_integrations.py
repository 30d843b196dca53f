"""A call's `integrations` object: what Segment would not have given to Loops is
left out (filter/integrations_off), unless --ignore_integrations."""
import collections
import glob
import io
import json

import pytest

from pipeline import backfill, check
from pipeline.local.samples import write_ndjson
from pipeline.local.sandbox import LoopsSandbox
from pipeline.summary import held_back_note, unaccounted
from transforms.core.records import RawEvent
from transforms.mapping.language import default_mapping
from transforms.mapping.processor import EventProcessor, Selection
from transforms.segment.integrations import gives_to_loops

TS = '2026-11-01T10:00:00.000Z'
KEY = 'integrations-test-key'


# The rule analytics.js applies to an Actions destination (analytics-next,
# remote-loader/index.ts, isPluginDisabled), with JavaScript's truthiness.
@pytest.mark.parametrize('integrations, given', [
    (None, True),
    ({}, True),
    ([], True),                                         # a deletion message's array
    ({'All': True}, True),
    ({'All': False}, False),
    ({'All': False, 'Loops (Actions)': True}, True),
    ({'All': False, 'Loops': True}, True),
    ({'Loops (Actions)': False}, False),
    ({'Loops': False}, False),
    ({'All': True, 'Loops (Actions)': False}, False),
    ({'Loops (Actions)': True, 'Loops': False}, False),  # either name off turns it off
    ({'All': False, 'Loops (Actions)': {'someOption': 1}}, True),   # options: on
    ({'All': False, 'Loops (Actions)': {}}, True),      # an empty object is truthy
    ({'All': False, 'Loops (Actions)': None}, False),   # null is not on
    ({'Loops (Actions)': None}, True),                  # ... nor off
    ({'All': False, 'Loops (Actions)': 0}, False),
    ({'Loops (Actions)': 0}, True),
    ({'All': False, 'Loops (Actions)': 'yes'}, True),
    ({'All': 'false'}, True),                           # text is not false
    ({'loops (actions)': False}, True),                 # names are case sensitive
    ({'All': False, 'loops': True}, False),
    ({'All': False, 'Amplitude': True}, False),
    ({'Salesforce': False}, True),
])
def test_whether_segment_gives_a_call_to_loops(integrations, given):
    assert gives_to_loops(integrations) is given


def identify(message_id, user_id, integrations=None, **traits):
    event = {'type': 'identify', 'messageId': message_id, 'userId': user_id, 'timestamp': TS,
             'receivedAt': TS, 'traits': traits}
    if integrations is not None:
        event['integrations'] = integrations
    return event


def track(message_id, user_id, name, integrations=None):
    event = {'type': 'track', 'messageId': message_id, 'userId': user_id, 'timestamp': TS,
             'receivedAt': TS, 'event': name, 'properties': {}}
    if integrations is not None:
        event['integrations'] = integrations
    return event


EVENTS = [
    identify('i1', 'u1', {}, plan='pro'),
    identify('i2', 'u2', {'All': False}, plan='free'),
    identify('i3', 'u3', {'All': False, 'Loops (Actions)': True}, plan='team'),
    identify('i4', 'u4', {'Loops': False}, plan='free'),
    track('t1', 'u1', 'Signed Up', {'Loops (Actions)': False}),
    track('t2', 'u3', 'Signed Up', {'Amplitude': False}),
    {'type': 'page', 'messageId': 'p1', 'userId': 'u1', 'integrations': {'All': False}},
]


def test_the_filter_leaves_out_calls_turned_off_for_loops_and_counts_them():
    counts = collections.Counter()
    processor = EventProcessor(Selection(('identify', 'track'), None, default_mapping()))
    sent = [request for n, event in enumerate(EVENTS, 1)
            for request in processor.process(RawEvent('f', n, json.dumps(event)), counts).requests]
    assert [r.body['userId'] for r in sent] == ['u1', 'u3', 'u3']
    # The page is not selected: counted as such, whatever its integrations say.
    assert (counts['filter/filtered_out'], counts['filter/integrations_off'],
            counts['filter/filtered_out_page'], counts['filter/kept']) == (4, 3, 1, 3)


def test_ignore_integrations_keeps_them():
    counts = collections.Counter()
    processor = EventProcessor(Selection(('identify', 'track'), None, default_mapping(),
                                         ignore_integrations=True))
    sent = [request for n, event in enumerate(EVENTS, 1)
            for request in processor.process(RawEvent('f', n, json.dumps(event)), counts).requests]
    assert len(sent) == 6
    assert counts['filter/integrations_off'] == 0


def run_backfill(tmp_path, *extra):
    path = str(tmp_path / 'events.jsonl')
    write_ndjson(path, EVENTS)
    out, text = tmp_path / 'out', io.StringIO()
    summary = backfill.run(['--input', path, '--types', 'identify,track', '--max_event_age',
                            'none', '--dry_run', str(out / 'requests'),
                            '--dead_letter', str(tmp_path / 'dl') + '/', *extra], out=text)
    requests = [json.loads(line) for p in glob.glob(str(out / 'requests*'))
                for line in open(p, encoding='utf-8')]
    return summary, requests, text.getvalue()


def test_a_backfill_sends_only_what_segment_gave_loops_and_says_how_to_send_the_rest(tmp_path):
    summary, requests, text = run_backfill(tmp_path)

    assert sorted((r['path'], r['body']['userId']) for r in requests) == [
        ('/v1/contacts/update', 'u1'), ('/v1/contacts/update', 'u3'),
        ('/v1/events/send', 'u3')]
    assert (summary['filtered_out'], summary['filter/integrations_off']) == (4, 3)
    assert unaccounted(summary) == 0
    assert ('Left out 3 calls whose "integrations" turned Loops off' in text
            and 'To send them: --ignore_integrations' in text)


def test_a_backfill_with_ignore_integrations_sends_them_all(tmp_path):
    summary, requests, text = run_backfill(tmp_path, '--ignore_integrations')

    assert len(requests) == 6
    assert (summary['filtered_out'], summary.get('filter/integrations_off', 0)) == (1, 0)
    assert unaccounted(summary) == 0
    assert '--ignore_integrations' not in text


def test_the_note_says_nothing_when_nothing_was_turned_off():
    assert held_back_note({'filter/integrations_off': 0}, '24h') == ''


@pytest.mark.parametrize('extra, turned_off', [((), 3), (('--ignore_integrations',), 0)])
def test_check_counts_what_a_backfill_would_leave_out(tmp_path, extra, turned_off):
    path = str(tmp_path / 'events.jsonl')
    write_ndjson(path, EVENTS)
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    report_path, out = tmp_path / 'report.json', io.StringIO()
    with LoopsSandbox(KEY, custom_properties=[{'key': 'plan', 'label': 'plan', 'type': 'string'}],
                      rate_limit=None) as sandbox:
        check.main(['--input', path, '--types', 'identify,track', '--max_event_age', 'none',
                    '--loops_api_key_file', str(key_file), '--report', str(report_path),
                    '--loops_base_url', sandbox.base_url, *extra], out=out)
    summary = json.loads(report_path.read_text(encoding='utf-8'))['summary']
    assert summary.get('filter/integrations_off', 0) == turned_off
    assert summary['contacts'] + summary['events'] == 6 - turned_off
    assert unaccounted(summary) == 0
    assert ('--ignore_integrations' in out.getvalue()) is bool(turned_off)
