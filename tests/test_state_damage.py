"""A sync state that knows its own files: a missing, short or corrupt file
(or manifest) is named before any request, `state verify` finds it,
`state repair` keeps what can be read and says what the next run sends
again, and a state from before manifests keeps working. Against the local
Loops sandbox over HTTP, with real backfills."""
import contextlib
import glob
import io
import json
import os
import shutil
import subprocess
import sys

import fastavro
import pytest

from pipeline import backfill, cli
from pipeline.local.samples import write_archive
from tests.test_sync_state import KEY, ROOT, archive_glob, argv, run, sandbox, writes
from transforms.core.sinks import read_failure_records
from transforms.state.files import SCHEMA, list_state, write_facts_file
from transforms.state.manifest import (MANIFEST_NAME, Entry, Manifest, parse_manifest,
                                       read_manifest)
from transforms.state.repair import repair_state


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    """(archive, a state after one full run, that run's summary with the
    requests Loops refused, by kind: 'failed_contacts', 'failed_events')."""
    root = tmp_path_factory.mktemp('made')
    archive = write_archive(str(root / 'archive'), users=30, days=2, seed=81)
    key_file = root / 'key'
    key_file.write_text(KEY)
    with sandbox() as loops:
        summary = run(loops, str(key_file), root, [archive_glob(archive)],
                      '--state', str(root / 'state'))
    failed = [json.loads(record['request'])['path'] for record in
              read_failure_records(str(root / 'dl') + '/') if record['stage'] == 'deliver']
    summary['failed_events'] = sum(path.endswith('/events/send') for path in failed)
    summary['failed_contacts'] = len(failed) - summary['failed_events']
    # The generated archive has a user whose every email is invalid: sent by
    # userId alone, Loops refuses its upsert and its events (no such contact).
    assert summary['failed_events'] > 0 and summary['failed_contacts'] > 0
    return archive, str(root / 'state'), summary


@pytest.fixture
def state(made, tmp_path):
    """A copy of the made state, to damage."""
    copy = str(tmp_path / 'state')
    shutil.copytree(made[1], copy)
    return copy


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'key'
    path.write_text(KEY)
    return str(path)


def snapshot(state: str, partition: str) -> str:
    """The path of the state's one snapshot of `partition` ('contacts', 'events')."""
    found = sorted(glob.glob(os.path.join(state, partition, *(['*'] if partition == 'events'
                                                               else []), 'snapshot-*.avro')))
    assert found, partition
    return found[0]


def relative(state: str, path: str) -> str:
    return os.path.relpath(path, state)


def cut_short(path):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])


def empty(path):
    open(path, 'wb').close()


def garbage(path):
    open(path, 'wb').write(b'garbage')


def flip_bytes(path):
    """Other bytes of the same size: only the checksum of a read tells."""
    data = bytearray(open(path, 'rb').read())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0x5A for b in data[middle:middle + 8])
    open(path, 'wb').write(bytes(data))


DAMAGES = {
    'contacts_deleted': ('contacts', os.remove, 'missing (the manifest lists it'),
    'events_cut_short': ('events', cut_short, 'cut short: '),
    'contacts_emptied': ('contacts', empty, 'empty (the manifest says'),
    'events_garbage': ('events', garbage, 'cut short: 7 bytes, the manifest says'),
    'contacts_corrupt': ('contacts', flip_bytes, 'its bytes are not those the manifest lists'),
}


def cli_run(*args) -> tuple:
    """(exit status, what it printed on stdout and stderr) of `segment-loops ARGS`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_a_damaged_state_file_is_named_before_any_request(made, state, key_file, tmp_path,
                                                          damage, capfd):
    archive, _, _ = made
    partition, spoil, problem = DAMAGES[damage]
    path = snapshot(state, partition)
    spoil(path)
    with sandbox() as loops:
        status, _, err = cli_run('backfill', *argv(loops.base_url, key_file, tmp_path,
                                                   [archive_glob(archive)], '--state', state))
        sent = writes(loops)
    logged = capfd.readouterr().err

    assert status == 2 and sent == []
    assert f'The sync state {state} is damaged:' in err
    assert f'  {relative(state, path)}: {problem}' in err
    assert f'segment-loops state repair --state {state}' in err
    assert 'Traceback' not in err + logged and 'EOFError' not in err + logged
    assert os.path.exists(path) == (spoil is not os.remove)   # left as it was found
    assert not os.path.exists(os.path.join(state, 'LEASE'))


def test_a_file_found_corrupt_while_read_stops_the_job_with_one_message(made, state, key_file,
                                                                      tmp_path):
    path = snapshot(state, 'contacts')
    flip_bytes(path)
    with sandbox() as loops:
        done = subprocess.run(
            [sys.executable, '-m', 'pipeline', 'backfill',
             *argv(loops.base_url, key_file, tmp_path, [archive_glob(made[0])], '--state', state)],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
            timeout=300)
        sent = writes(loops)

    assert done.returncode == 2 and sent == []
    assert done.stderr.startswith(f'segment-loops backfill: error: The sync state {state} is '
                                  f'damaged:\n  {relative(state, path)}: its bytes are not'), \
        done.stderr
    assert 'Traceback' not in done.stderr


@pytest.mark.parametrize('spoil, problem', [
    (lambda path: open(path, 'w').write('{"files": '), 'not JSON'),
    (os.remove, 'missing (the snapshots were written with one)'),
], ids=['garbage', 'deleted'])
def test_a_damaged_manifest_is_named_before_any_request(made, state, key_file, tmp_path, spoil,
                                                        problem):
    spoil(os.path.join(state, MANIFEST_NAME))
    with sandbox() as loops:
        status, _, err = cli_run('backfill', *argv(loops.base_url, key_file, tmp_path,
                                                   [archive_glob(made[0])], '--state', state))
        assert writes(loops) == []

    assert status == 2 and f'  {MANIFEST_NAME}: {problem}' in err


def test_verify_names_every_damaged_file_and_exits_1(state):
    contacts, events = snapshot(state, 'contacts'), snapshot(state, 'events')
    status, clean, _ = cli_run('state', 'verify', '--state', state)
    os.remove(contacts)
    flip_bytes(events)
    damaged_status, report, _ = cli_run('state', 'verify', '--state', state)

    assert status == 0 and 'Every file is as the manifest lists it' in clean
    assert damaged_status == 1
    assert f'{relative(state, contacts)}: missing (the manifest lists it' in report
    assert f'{relative(state, events)}: its bytes are not those the manifest lists' in report
    assert f'segment-loops state repair --state {state}' in report


def test_repair_says_what_is_lost_and_the_next_run_sends_exactly_that(made, state, key_file,
                                                                      tmp_path):
    archive, _, first = made
    contacts = snapshot(state, 'contacts')
    os.remove(contacts)
    status, report, _ = cli_run('state', 'repair', '--state', state)
    with sandbox() as loops:
        after = run(loops, key_file, tmp_path, [archive_glob(archive)], '--state', state)

    assert status == 0
    assert f'  {relative(state, contacts)}: missing' in report
    assert ("contacts of shard 0 of the snapshot: the next run sends their properties again"
            in report)
    # Every contact again (the one contact snapshot is lost); of the events,
    # only those Loops refused the first time.
    assert after['contacts'] == first['contacts'] and after['contacts_unchanged'] == 0
    assert after['events'] == first['failed_events']
    assert after['events_already_sent'] == first['events'] - first['failed_events']
    assert cli_run('state', 'verify', '--state', state)[0] == 0


def test_repair_keeps_the_blocks_before_the_cut_of_a_file_cut_short(tmp_path):
    state = str(tmp_path / 'state')
    path = os.path.join(state, 'contacts', 'snapshot-20261201T000000Z-0a0b0c0d-00000.avro')
    records = [{'contact': i.to_bytes(16, 'big'), 'stamps': [], 'properties': [],
                'events': []} for i in range(5000)]
    written = write_facts_file(path, records)
    manifest = Manifest({'contacts/' + os.path.basename(path): Entry(written.size,
                                                                     written.sha256)})
    open(os.path.join(state, MANIFEST_NAME), 'wb').write(manifest.to_bytes())
    cut_short(path)

    report, losses = repair_state(state, 'repair-run')

    assert [loss.damage.problem[:10] for loss in losses] == ['cut short:']
    kept = losses[0].kept_records
    assert 0 < kept < len(records)
    salvaged = [f.path for f in list_state(state).contacts]
    assert len(salvaged) == 1 and 'salvaged' in salvaged[0]
    with open(salvaged[0], 'rb') as f:
        assert [r['contact'] for r in fastavro.reader(f)] == [r['contact']
                                                              for r in records[:kept]]
    assert os.path.exists(losses[0].moved_to) and not os.path.exists(path)
    assert set(read_manifest(state).files) == {relative(state, salvaged[0])}


def without_manifest(state: str) -> None:
    """The state as the versions before the manifest wrote it."""
    os.remove(os.path.join(state, MANIFEST_NAME))
    for path in glob.glob(os.path.join(state, '**', '*.avro'), recursive=True):
        with open(path, 'rb') as f:
            records = list(fastavro.reader(f))
        with open(path, 'wb') as f:
            fastavro.writer(f, SCHEMA, records, codec='deflate')


def test_a_state_from_before_the_manifest_keeps_working_and_gets_one(made, state, key_file,
                                                                     tmp_path):
    archive, _, first = made
    without_manifest(state)
    out = io.StringIO()
    with sandbox() as loops:
        after = backfill.run(argv(loops.base_url, key_file, tmp_path, [archive_glob(archive)],
                                  '--state', state), out=out)

    assert 'has no manifest yet' in out.getvalue()
    assert after['events'] == first['failed_events']
    assert after['contacts'] == first['failed_contacts']
    manifest = read_manifest(state)
    assert set(manifest.files) == {relative(state, f.path) for f in list_state(state).files}
    assert cli_run('state', 'verify', '--state', state)[0] == 0


def test_a_manifest_reads_back_as_written_and_names_what_is_wrong():
    manifest = Manifest({'contacts/a.avro': Entry(10, 'ab' * 32),
                         'events/2026-11-01/b.avro': Entry(3, None)}, 'run1', '2026-12-01T00:00:00Z')
    assert parse_manifest(manifest.to_bytes()) == manifest
    with pytest.raises(ValueError, match='not JSON'):
        parse_manifest(b'{"files": ')
    with pytest.raises(ValueError, match='format 2'):
        parse_manifest(json.dumps({'format': 2, 'files': {}}).encode())
    with pytest.raises(ValueError, match='the entry of contacts/a.avro'):
        parse_manifest(json.dumps({'format': 1, 'files': {'contacts/a.avro': {}}}).encode())


def test_check_names_a_damaged_state_it_would_compare_against(made, state, key_file):
    path = snapshot(state, 'events')
    cut_short(path)
    status, _, err = cli_run('check', '--input', archive_glob(made[0]), '--state', state,
                             '--types', 'identify,track', '--max_event_age', 'none',
                             '--loops_base_url', 'http://127.0.0.1:9/api',
                             '--loops_api_key_file', key_file)

    assert status == 2 and f'  {relative(state, path)}: cut short: ' in err
