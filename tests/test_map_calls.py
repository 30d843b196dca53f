"""`segment-loops map` (pipeline/map_calls.py): what calls become under a mapping,
ours or a Segment destination's subscriptions, its exit status, and the
examples docs/mapping.md shows."""
import io
import json
import shlex
from pathlib import Path

import pytest

from pipeline import cli, map_calls
from transforms.core.records import idempotency_key_for

LIVE_SETUP = str(Path(__file__).parent / 'data' / 'segment' / 'subscriptions_live_setup.json')
SIGNED_UP = {'type': 'track', 'event': 'Signed Up', 'userId': 'u1', 'messageId': 'm1',
             'properties': {'email': 'ada@example.com', 'first_name': 'Ada', 'plan': 'pro'}}


def mapped(lines: list, *argv: str) -> list:
    """What map prints for the calls (JSON objects, or text as it is), line by line."""
    text = ''.join((json.dumps(line) if isinstance(line, dict) else line) + '\n'
                   for line in lines)
    out = io.StringIO()
    assert map_calls.main(list(argv), stdin=io.StringIO(text), out=out) == 0
    return out.getvalue().splitlines()


def request_line(method, path, body, key=None, fallback_email=None) -> str:
    headers = {'Content-Type': 'application/json'}
    if key:
        headers['Idempotency-Key'] = key
    request = {'body': body, 'headers': headers, 'method': method, 'path': path}
    if fallback_email:
        request['fallback_email'] = fallback_email
    return '  request ' + json.dumps(request, sort_keys=True, separators=(',', ':'))


def test_a_call_two_subscriptions_take_shows_both_routes_and_both_requests():
    assert mapped([SIGNED_UP], '--segment_subscriptions', LIVE_SETUP)[3:] == [
        'line 1: track "Signed Up" (messageId m1, userId u1)',
        "  route subscription 'Send Event' (id sub_track_event, sendEvent) [type = \"track\"]",
        "  route subscription 'Signed Up -> contact' (id sub_signed_up_contact, "
        'createOrUpdateContact) [type = "track" and event = "Signed Up"]',
        request_line('PUT', '/v1/contacts/update', {
            'email': 'ada@example.com', 'firstName': 'Ada', 'plan': 'pro',
            'source': 'Signed Up form', 'userGroup': 'pro plan', 'userId': 'u1'}),
        request_line('POST', '/v1/events/send', {
            'eventName': 'Signed Up', 'userId': 'u1', 'eventProperties': SIGNED_UP['properties']},
            idempotency_key_for('m1'), fallback_email='ada@example.com')]


def test_skipped_subscriptions_come_first():
    assert mapped([], '--segment_subscriptions', LIVE_SETUP) == [
        'Never applied (skipped):',
        "  - subscription 'Page viewed (retired)' (id sub_page_event, sendEvent): disabled",
        "  - subscription 'Company to audience (old destination)' (id sub_group_audience, "
        'syncAudience): disabled']


def test_failures_say_why_and_what_is_held_back_or_changed_is_counted():
    lines = mapped([{'type': 'identify', 'userId': 'u1',
                     'traits': {'email': 'a@b', 'address': {'city': 'Oslo'}, 'subscribed': 1}},
                    '{"type": "identify"',
                    {'type': 'page', 'userId': 'u1', 'name': 'Home'},
                    {'type': 'track', 'event': 'Paid', 'userId': 'u1',
                     'integrations': {'Loops (Actions)': False}}])
    assert lines == [
        'line 1: identify (userId u1)',
        '  route contact [type = "identify"]',
        request_line('PUT', '/v1/contacts/update',
                     {'addressCity': 'Oslo', 'source': 'Segment', 'userId': 'u1'}),
        "  failure conform/invalid_email: 'a@b' is not a valid email address; the rest of the "
        'event was sent',
        '  held back: subscribed: true (--resubscribe sends it)',
        '  counted: map/flattened 1',
        'line 2: not a Segment call',
        lines[7],
        'line 3: page (userId u1)',
        '  no request: no route of the mapping takes this page call',
        'line 4: track "Paid" (userId u1)',
        '  no request: its integrations turned Loops off (--ignore_integrations sends it)']
    assert lines[7].startswith('  failure parse/invalid_json: ')


def test_the_options_of_a_run_apply(tmp_path):
    old = {**SIGNED_UP, 'timestamp': '2020-01-01T00:00:00Z', 'userId': None}
    assert mapped([old], '--max_event_age', '24h', '--identity', 'user_id')[1:] == [
        '  route event [type = "track"]',
        '  failure map/missing_user_id: track has no userId (--identity user_id sends only '
        'events with one)']
    assert mapped([old], '--max_event_age', '24h')[2:] == [
        '  held back: an event send older than --max_event_age']
    assert mapped([SIGNED_UP], '--events', 'Paid')[1:] == [
        '  no request: not selected (--types, --events)']


def test_a_file_gives_what_stdin_gives(tmp_path):
    path = tmp_path / 'calls.jsonl'
    path.write_text(json.dumps(SIGNED_UP) + '\n\n', encoding='utf-8')
    out = io.StringIO()
    assert map_calls.main(['--input', str(path)], out=out) == 0
    assert out.getvalue().splitlines() == mapped([SIGNED_UP])


@pytest.mark.parametrize('argv, says', [
    (['--mapping', 'MAPPING'], '--mapping: MAPPING: contact.email: '),
    (['--segment_subscriptions', 'SUBSCRIPTIONS'], "SUBSCRIPTIONS: subscription 'Contacts' "
                                                   '(id s1): trigger: '),
    (['--mapping', 'MAPPING', '--segment_subscriptions', LIVE_SETUP],
     '--mapping and --segment_subscriptions are two ways to write the mapping'),
    (['--input', '/nonexistent.jsonl'], '--input /nonexistent.jsonl: No such file'),
    (['--segment_subscriptions', 'NOTHING'], 'no route of the mapping takes any call'),
])
def test_a_mapping_that_cannot_be_used_exits_2_saying_why(tmp_path, capsys, argv, says):
    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text('contact:\n  email: traits.email\n')
    subscriptions = tmp_path / 'subscriptions.json'
    subscriptions.write_text(json.dumps([{'id': 's1', 'name': 'Contacts', 'enabled': True,
                                          'actionSlug': 'createOrUpdateContact',
                                          'trigger': 'type = "track', 'settings': {}}]))
    nothing = tmp_path / 'nothing.json'   # one subscription, disabled
    nothing.write_text(json.dumps([{'id': 's2', 'name': 'Old', 'enabled': False}]))
    files = {'MAPPING': mapping, 'SUBSCRIPTIONS': subscriptions, 'NOTHING': nothing}
    argv = [str(files.get(arg, arg)) for arg in argv]
    assert cli.main(['map', *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith('segment-loops map: error: ') and 'Traceback' not in error
    assert says.replace('MAPPING', str(mapping)).replace(
        'SUBSCRIPTIONS', str(subscriptions)) in error


# --- the examples of docs/mapping.md print what the page shows

REPO = Path(__file__).parent.parent
MAPPING_PAGE = (REPO / 'docs' / 'mapping.md').read_text(encoding='utf-8')


def console_examples(text: str) -> list:
    """(command, the lines it prints) of every `$ segment-loops map` in the
    page's console blocks."""
    examples, block = [], None
    for line in text.splitlines():
        if line.startswith('```'):
            block = [] if line == '```console' and block is None else None
            continue
        if block is None:
            continue
        if line.startswith('$ '):
            examples.append((line[2:], []))
        elif examples:
            examples[-1][1].append(line)
    return examples


def test_the_pages_examples_are_what_map_prints(monkeypatch):
    monkeypatch.chdir(REPO)
    examples = console_examples(MAPPING_PAGE)
    assert [command.split(' --input')[0] for command, _ in examples] == [
        'segment-loops map', 'segment-loops map --mapping docs/examples/rules.yaml',
        'segment-loops map --segment_subscriptions '
        'tests/data/segment/subscriptions_live_setup.json']
    for command, shown in examples:
        words = shlex.split(command)
        assert words[:2] == ['segment-loops', 'map']
        out = io.StringIO()
        assert map_calls.main(words[2:], out=out) == 0
        assert out.getvalue().splitlines() == shown, command


def test_the_rules_file_is_the_one_the_page_shows():
    rules = (REPO / 'docs' / 'examples' / 'rules.yaml').read_text(encoding='utf-8')
    assert f'```yaml\n{rules}```' in MAPPING_PAGE
