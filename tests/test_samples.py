"""pipeline.local.samples writes the archives every other test relies on: check their
layout, counts and that every real-world oddity is really in them."""
import datetime
import gzip
import json
import os
import re
import tracemalloc
from collections import Counter

import fastavro
import pytest

from pipeline.local import archive as archive_module
from pipeline.local import samples as samples_module
from pipeline.local.archive import INVALID_KINDS, MAX_EVENT_BYTES
from pipeline.local.clock import iso_ms
from pipeline.local.hot_user import HOT_USER_EMAIL, HOT_USER_ID, PLAN_EVERY
from pipeline.local.samples import (generate_events, write_archive, write_avro,
                                    write_hot_user_archive, write_ndjson)
from pipeline.local.samples_cli import main
from schemas import load_schema
from transforms.segment.avro_events import from_avro_record
from transforms.segment.timestamps import DAY_MS

START_DAY_MS = 1_793_491_200_000    # 2026-11-01T00:00:00Z
UUID4 = r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}'
FILE_NAME = re.compile(rf'(\d{{13}})\.[0-9a-f]{{8}}\.[0-9a-f]{{8}}\.{UUID4}\.gz')
ISO_Z = re.compile(r'\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z')
AVRO_FIELDS = {field['name'] for field in load_schema('segment_event')['fields']}
SEGMENT_TYPES = {'identify', 'track', 'page', 'screen', 'group', 'alias'}


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=20, days=2, seed=7)


@pytest.fixture(scope='module')
def events(archive):
    return archive.events


def read_lines(path: str) -> list[str]:
    with gzip.open(path, 'rt', encoding='utf-8') as source:
        text = source.read()
    assert text.endswith('\n')
    return text[:-1].split('\n')


def invalid_kind(line: str):
    """The INVALID_KINDS entry a line is, or None for a valid event."""
    if not line:
        return 'empty'
    try:
        value = json.loads(line)
    except ValueError:
        return 'not json'
    if isinstance(value, list):
        return 'json array'
    if isinstance(value, str):
        return 'json string'
    if 'type' not in value:
        return 'no type'
    if value['type'] not in SEGMENT_TYPES:
        return 'unknown type'
    if len(line.encode('utf-8')) > MAX_EVENT_BYTES:
        return 'oversized'
    return None


def classify(files: list[str]) -> tuple[Counter, list[str], list[str]]:
    """(invalid kinds, distinct valid lines, verbatim repeats) over the files in order."""
    kinds, distinct, repeats, seen = Counter(), [], [], set()
    for path in files:
        for line in read_lines(path):
            kind = invalid_kind(line)
            if kind is not None:
                kinds[kind] += 1
            elif line in seen:
                repeats.append(line)
            else:
                seen.add(line)
                distinct.append(line)
    return kinds, distinct, repeats


def walk(value, key=None):
    """(key, value) for every value nested in a JSON value."""
    yield key, value
    if isinstance(value, dict):
        for inner_key, inner in value.items():
            yield from walk(inner, inner_key)
    elif isinstance(value, list):
        for inner in value:
            yield from walk(inner, key)


def free_form(event: dict):
    """(key, value) pairs of the free-form parts of an event."""
    for part in ('traits', 'properties'):
        if isinstance(event.get(part), dict):
            yield from walk(event[part])


def test_layout_is_segment_s3(archive):
    source_root = os.path.join(archive.root, 'segment-logs', 'source1')
    assert archive.days == [START_DAY_MS, START_DAY_MS + DAY_MS]
    per_day = Counter()
    name_days = set()
    for path in archive.files:
        folder, name = os.path.split(path)
        assert os.path.dirname(folder) == source_root
        day = int(os.path.basename(folder))
        assert day % DAY_MS == 0 and day in archive.days
        match = FILE_NAME.fullmatch(name)
        assert match, name
        per_day[day] += 1
        name_days.add(int(match.group(1)) // DAY_MS * DAY_MS != day)
    assert per_day == {day: 3 for day in archive.days}
    assert True in name_days, 'some file name time should fall outside its folder day'
    on_disk = {os.path.join(folder, name)
               for folder, _, names in os.walk(archive.root) for name in names}
    assert on_disk == set(archive.files) | set(archive.other_files)
    assert os.path.join(archive.root, 'segment-logs', 'dummy-object.txt') in archive.other_files
    assert any(os.path.dirname(os.path.dirname(path)) == source_root
               and not path.endswith('.gz') for path in archive.other_files)


def test_manifest_counts_match_the_files(archive):
    kinds, distinct, repeats = classify(archive.files)
    assert archive.lines == sum(len(read_lines(path)) for path in archive.files)
    assert archive.invalid_lines == sum(kinds.values())
    assert archive.duplicate_lines == len(repeats)
    assert [json.loads(line) for line in distinct] == archive.events
    assert archive.lines == archive.invalid_lines + archive.duplicate_lines + len(archive.events)


def test_every_invalid_kind_and_duplicates_are_present(archive):
    kinds, _, repeats = classify(archive.files)
    assert set(kinds) == set(INVALID_KINDS)
    assert repeats
    repeated_ids = {json.loads(line)['messageId'] for line in repeats}
    for message_id in repeated_ids:
        holding = [path for path in archive.files
                   if any(message_id in line for line in read_lines(path))]
        assert len(holding) >= 2, 'a duplicate belongs in another file'


def test_events_have_unique_message_ids_and_arrive_in_day_order(archive, events):
    assert len({event['messageId'] for event in events}) == len(events)
    assert events == list(generate_events(users=20, days=2, seed=7))
    received = [event['receivedAt'] for event in events]
    assert received == sorted(received)
    seen = set()
    for path in archive.files:
        day = int(os.path.basename(os.path.dirname(path)))
        for line in read_lines(path):
            # A duplicate may sit in a later day's folder, as replays do.
            if invalid_kind(line) is None and line not in seen:
                seen.add(line)
                received = datetime.datetime.fromisoformat(json.loads(line)['receivedAt'])
                assert int(received.timestamp() * 1000) // DAY_MS * DAY_MS == day


def test_same_seed_same_bytes_other_seed_other_content(tmp_path):
    def contents(root, seed):
        manifest = write_archive(str(root), users=4, days=2, seed=seed)
        return {os.path.relpath(path, root): open(path, 'rb').read() for path in manifest.files}

    first = contents(tmp_path / 'a', 11)
    assert first == contents(tmp_path / 'b', 11)
    assert first != contents(tmp_path / 'c', 12)


def timestamp_form(event: dict) -> str:
    if 'timestamp' not in event:
        return 'missing'
    value = event['timestamp']
    if value is None:
        return 'null'
    if isinstance(value, int):
        return 'epoch ms'
    for form, pattern in [('Z', ISO_Z),
                          ('+00:00', r'.+T.+\+00:00'),
                          ('+0530', r'.+T.+\+0530'),
                          ('no zone', r'\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}'),
                          ('year only', r'\d{4}'),
                          ('unpadded month', r'\d{4}-\d-\d{2}')]:
        if re.fullmatch(pattern, value):
            return form
    return 'unknown'


def traits_of(event: dict) -> dict:
    return event.get('traits') if isinstance(event.get('traits'), dict) else {}


def mailing_lists(event: dict):
    return traits_of(event).get('mailingLists')


ODD_FORMS = {
    'uuid messageId': lambda e: re.fullmatch(UUID4, e['messageId']),
    'ajs-next messageId': lambda e: re.fullmatch(rf'ajs-next-\d{{13}}-{UUID4}', e['messageId']),
    'personas messageId': lambda e: e['messageId'].startswith('personas_'),
    'arbitrary text messageId': lambda e: ' ' in e['messageId'],
    'numeric userId': lambda e: type(e.get('userId')) is int,
    'anonymous identify': lambda e: (e['type'] == 'identify' and 'userId' in e
                                     and e['userId'] is None and e.get('anonymousId')),
    'snake_case names only': lambda e: 'first_name' in traits_of(e)
                                       and 'firstName' not in traits_of(e),
    'both name spellings': lambda e: {'first_name', 'firstName'} <= set(traits_of(e)),
    'nested address': lambda e: isinstance(traits_of(e).get('address'), dict),
    'nested company': lambda e: isinstance(traits_of(e).get('company'), dict),
    'array of strings': lambda e: any(isinstance(v, list) and v and
                                      all(isinstance(x, str) for x in v)
                                      for _, v in free_form(e)),
    'array of objects': lambda e: any(k != 'mailingLists' and isinstance(v, list) and v
                                      and all(isinstance(x, dict) for x in v)
                                      for k, v in free_form(e)),
    'string over 500 chars': lambda e: any(isinstance(v, str) and len(v) > 500
                                           for _, v in free_form(e)),
    'key with a space': lambda e: any(k and ' ' in k for k, _ in free_form(e)),
    'key with ?': lambda e: any(k and '?' in k for k, _ in free_form(e)),
    'key with $': lambda e: any(k and '$' in k for k, _ in free_form(e)),
    'key with a dot': lambda e: any(k and '.' in k for k, _ in free_form(e)),
    'unicode key': lambda e: any(k and not k.isascii() for k, _ in free_form(e)),
    'number as a string': lambda e: any(isinstance(v, str) and re.fullmatch(r'\d+(\.\d+)?', v)
                                        for _, v in free_form(e)),
    'mailingLists object form': lambda e: mailing_lists(e) == {'list_news': True},
    'mailingLists string form': lambda e: isinstance(mailing_lists(e), dict)
                                          and mailing_lists(e).get('list_product') == 'false',
    'mailingLists array form': lambda e: isinstance(mailing_lists(e), list)
                                         and {'listId': 'list_news', 'subscribed': True}
                                         in mailing_lists(e),
    'subscribed true': lambda e: traits_of(e).get('subscribed') is True,
    'subscribed false': lambda e: traits_of(e).get('subscribed') is False,
    'subscribed yes': lambda e: traits_of(e).get('subscribed') == 'yes',
    'invalid email': lambda e: '@' not in traits_of(e).get('email', '@'),
    'context.traits.email on track': lambda e: e['type'] == 'track'
                                               and 'email' in e['context'].get('traits', {}),
    'properties.email on track': lambda e: e['type'] == 'track' and 'email' in e['properties'],
    'version 2': lambda e: e.get('version') == 2,
    'version 1.1': lambda e: e.get('version') == '1.1',
    'channel client': lambda e: e.get('channel') == 'client',
    'integrations booleans and objects': lambda e: (
        any(v is False for v in e.get('integrations', {}).values())
        and any(isinstance(v, dict) for v in e.get('integrations', {}).values())),
    'createdAt trait': lambda e: 'createdAt' in traits_of(e),
    'page call': lambda e: e['type'] == 'page',
    'group call': lambda e: e['type'] == 'group',
    **{f'track {name}': (lambda name: lambda e: e.get('event') == name)(name)
       for name in ('Signed Up', 'Order Completed', 'Plan Upgraded', 'Viewed Pricing')},
    **{f'timestamp {form}': (lambda form: lambda e: timestamp_form(e) == form)(form)
       for form in ('Z', '+00:00', '+0530', 'no zone', 'year only', 'unpadded month',
                    'epoch ms', 'null', 'missing')},
}


@pytest.mark.parametrize('form', ODD_FORMS.values(), ids=ODD_FORMS.keys())
def test_small_archive_holds_every_odd_form(events, form):
    assert any(form(event) for event in events)


def test_odd_timestamps_are_a_minority_and_identify_is_the_commonest_call(events):
    forms = Counter(timestamp_form(event) for event in events)
    assert forms['unknown'] == 0
    assert forms['Z'] > 0.7 * len(events)
    types = Counter(event['type'] for event in events)
    assert types.most_common(1)[0][0] == 'identify'


def test_each_users_identifies_change_traits_over_time(events):
    identifies: dict = {}
    for event in events:
        if event['type'] == 'identify' and event.get('userId') is not None:
            identifies.setdefault(event['userId'], []).append(event['traits'])
    assert len(identifies) == 20
    changes = Counter()
    for history in identifies.values():
        assert len(history) >= 3
        merged = {}
        for traits in history:
            merged.update(traits)
        assert all(merged != traits for traits in history)
        assert [traits['logins'] for traits in history] == list(range(1, len(history) + 1))
        changes['plan'] += len({traits['plan'] for traits in history if 'plan' in traits}) > 1
        changes['trait set to null'] += any(traits.get('phone', '') is None
                                            for traits in history[1:])
        last_names = {traits.get('lastName', traits.get('last_name')) for traits in history}
        changes['name'] += len(last_names - {None}) > 1
    assert all(changes[kind] > 0 for kind in ('plan', 'trait set to null', 'name'))


def test_switches_leave_out_invalid_lines_duplicates_and_events(tmp_path):
    manifest = write_archive(str(tmp_path), users=5, days=1, seed=2, invalid=False,
                             duplicates=False, keep_events=False, files_per_day=2)
    kinds, distinct, repeats = classify(manifest.files)
    assert manifest.events is None
    assert (manifest.invalid_lines, manifest.duplicate_lines) == (0, 0)
    assert not kinds and not repeats
    assert manifest.lines == len(distinct) == len(list(generate_events(users=5, days=1, seed=2)))
    assert len(manifest.files) == 2


def test_ndjson_and_avro_files_hold_the_events(tmp_path):
    events = list(generate_events(users=3, days=1, seed=5))
    write_ndjson(str(tmp_path / 'events.ndjson'), events)
    with open(tmp_path / 'events.ndjson', encoding='utf-8') as source:
        assert [json.loads(line) for line in source] == events
    write_avro(str(tmp_path / 'events.avro'), events)
    with open(tmp_path / 'events.avro', 'rb') as source:
        read_back = [from_avro_record(record) for record in fastavro.reader(source)]
    # A null in a field of its own reads back as absent, by the schema's design.
    assert read_back == [{key: value for key, value in event.items()
                          if value is not None or key not in AVRO_FIELDS}
                         for event in events]


def test_command_line_writes_an_archive_and_prints_one_line(tmp_path, capsys):
    assert main(['--output', str(tmp_path), '--users', '3', '--days', '1', '--seed', '9',
                 '--no_invalid', '--no_duplicates']) == 0
    output = capsys.readouterr().out
    assert output.count('\n') == 1 and '0 invalid' in output and '0 duplicates' in output
    assert os.path.isfile(tmp_path / 'segment-logs' / 'dummy-object.txt')
    day_folder = tmp_path / 'segment-logs' / 'source1' / str(START_DAY_MS)
    assert len([name for name in os.listdir(day_folder) if name.endswith('.gz')]) == 3


# ---------------------------------------------------------------- hot user

HOT_EVENTS = 2 * PLAN_EVERY + 402     # enough identifies for a change of plan


@pytest.fixture(scope='module')
def hot_archive(tmp_path_factory):
    return write_hot_user_archive(str(tmp_path_factory.mktemp('hot')), HOT_EVENTS,
                                  users=30, days=3, seed=7)


def test_hot_user_archive_counts_and_ordinary_users(hot_archive):
    kinds, distinct, repeats = classify(hot_archive.files)
    events = [json.loads(line) for line in distinct]
    hot = [event for event in events if event['userId'] == HOT_USER_ID]
    others = [event for event in events if event['userId'] != HOT_USER_ID]
    assert hot_archive.events is None
    assert hot_archive.lines == sum(len(read_lines(path)) for path in hot_archive.files)
    assert (hot_archive.invalid_lines, hot_archive.duplicate_lines) == (
        sum(kinds.values()), len(repeats))
    assert set(kinds) == set(INVALID_KINDS) and repeats
    assert len(hot) == HOT_EVENTS
    # The ordinary users are write_archive's, event for event.
    assert others == list(generate_events(users=30, days=3, seed=7))
    assert len({event['messageId'] for event in events}) == len(events)


def test_hot_user_calls_are_spread_evenly_over_the_days_in_received_order(hot_archive):
    _, distinct, _ = classify(hot_archive.files)
    events = [json.loads(line) for line in distinct]
    received = [event['receivedAt'] for event in events]
    assert received == sorted(received)
    per_day = Counter(event['receivedAt'][:10] for event in events
                      if event['userId'] == HOT_USER_ID)
    assert sorted(per_day) == ['2026-11-01', '2026-11-02', '2026-11-03']
    assert max(per_day.values()) - min(per_day.values()) <= 1


def test_hot_user_identifies_change_over_time_and_tracks_are_server_calls(hot_archive):
    _, distinct, _ = classify(hot_archive.files)
    hot = [json.loads(line) for line in distinct if f'"userId":"{HOT_USER_ID}"' in line]
    identifies = [event for event in hot if event['type'] == 'identify']
    tracks = [event for event in hot if event['type'] == 'track']
    assert len(identifies) == len(tracks) == HOT_EVENTS // 2
    traits = [event['traits'] for event in identifies]
    assert [t['checkIns'] for t in traits] == list(range(1, len(traits) + 1))
    assert [t['plan'] for t in traits[PLAN_EVERY - 1:PLAN_EVERY + 1]] == ['free', 'pro']
    assert {t['plan'] for t in traits} == {'free', 'pro'}
    last_seen = [t['lastSeenAt'] for t in traits]
    assert last_seen == sorted(last_seen) and len(set(last_seen)) > len(last_seen) // 2
    assert all(t['email'] == HOT_USER_EMAIL for t in traits)
    names = Counter(event['event'] for event in tracks)
    assert set(names) == {'Heartbeat', 'Job Finished'}
    assert names['Job Finished'] == len(tracks) // 4
    assert all('anonymousId' not in event and event['channel'] == 'server' for event in hot)


def test_hot_user_archive_memory_does_not_grow_with_its_events(tmp_path, monkeypatch):
    # Small batches and files, so that what stays in memory per file is small
    # and anything kept per event would show.
    monkeypatch.setattr(archive_module, 'WRITE_BATCH', 64)
    monkeypatch.setattr(samples_module, 'HOT_LINES_PER_FILE', 500)
    iso_ms(0)   # builds the time-text caches outside the measurement

    def peak(hot_events: int) -> int:
        tracemalloc.start()
        try:
            manifest = write_hot_user_archive(str(tmp_path / str(hot_events)), hot_events,
                                              users=3, days=1)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert manifest.lines > hot_events
            # A busy day is cut into more files.
            assert len(manifest.files) == max(3, -(-manifest.lines // 500))

    small, large = peak(500), peak(4500)
    assert large - small < 40_000, (small, large)


def test_command_line_adds_a_hot_user(tmp_path, capsys):
    assert main(['--output', str(tmp_path), '--users', '3', '--days', '2',
                 '--hot_user_events', '101', '--no_invalid', '--no_duplicates']) == 0
    ordinary = len(list(generate_events(users=3, days=2, seed=7)))
    assert f'({ordinary + 101} events, 0 invalid, 0 duplicates)' in capsys.readouterr().out
    lines = [line for folder, _, names in os.walk(tmp_path) for name in names
             if name.endswith('.gz') for line in read_lines(os.path.join(folder, name))]
    assert sum(f'"userId":"{HOT_USER_ID}"' in line for line in lines) == 101
    with pytest.raises(SystemExit):
        main(['--output', str(tmp_path), '--hot_user_events', '-1'])
