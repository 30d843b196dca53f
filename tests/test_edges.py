"""Bad input at the edges, through the real command in a subprocess: each is a
failure record with its reason, or a clear one-line message and an exit
status, never a traceback."""
import gzip
import json
import os
import subprocess
import sys

import pytest

from pipeline import cli, lifecycle
from pipeline.local.sandbox import LoopsSandbox
from transforms.core.sinks import read_failure_records

TEN_MB = 10 * 1024 * 1024


def segment_cli(*argv, env=None, cwd=None):
    """`python -m pipeline ARGV` with LOOPS_API_KEY unset unless `env` sets it."""
    environment = {k: v for k, v in os.environ.items() if k != 'LOOPS_API_KEY'}
    environment.update(env or {})
    return subprocess.run([sys.executable, '-m', 'pipeline', *argv], capture_output=True,
                          text=True, timeout=300, env=environment, cwd=cwd)


def identify_line(n: int) -> bytes:
    return json.dumps({'type': 'identify', 'messageId': f'm{n}', 'userId': f'u{n}',
                       'traits': {'email': f'u{n}@example.com', 'note': 'x' * 40}}).encode()


def gzip_of_lines(count: int) -> bytes:
    return gzip.compress(b''.join(identify_line(n) + b'\n' for n in range(count)))


# name -> (file name, its bytes, expected summary figures, expected failure (stage, reason) list)
ARCHIVE_EDGES = {
    'empty gzip': ('empty.gz', gzip.compress(b''), {'read': 0, 'files': 1}, []),
    'zero-byte file': ('zero.gz', b'', {'read': 0, 'files': 1}, []),
    'unreadable gzip': ('garbage.gz', b'this is not gzip at all' * 10,
                        {'read': 0, 'files_unreadable': 1}, [('read', 'unreadable_file')]),
    'truncated gzip': ('cut.gz', gzip_of_lines(300)[:2000], {'files_unreadable': 1},
                       [('read', 'truncated_file')]),
    'a 10 MB line': ('big.jsonl', json.dumps({'type': 'identify', 'userId': 'big', 'traits': {
        'blob': 'y' * TEN_MB}}).encode() + b'\n' + identify_line(1) + b'\n',
                     {'read': 2, 'parse_failed': 1, 'contacts': 1}, [('parse', 'too_large')]),
    'bytes that are not UTF-8': ('latin1.jsonl', b'{"type": "identify", "userId": "J\xf6rg"}\n',
                                 {'read': 1, 'parse_failed': 1}, [('parse', 'invalid_json')]),
    'a foreign Avro file': ('other.avro', None, {'files_unreadable': 1},
                            [('read', 'unreadable_file')]),
}


def foreign_avro() -> bytes:
    import io

    import fastavro
    out = io.BytesIO()
    fastavro.writer(out, {'type': 'record', 'name': 'Other', 'fields': [
        {'name': 'x', 'type': 'int'}]}, [{'x': 1}])
    return out.getvalue()


@pytest.mark.parametrize('edge', ARCHIVE_EDGES)
def test_a_bad_archive_file_becomes_a_failure_record(edge, tmp_path):
    name, data, figures, failures = ARCHIVE_EDGES[edge]
    (tmp_path / 'archive').mkdir()
    (tmp_path / 'archive' / name).write_bytes(data if data is not None else foreign_avro())

    result = segment_cli('backfill', '--input', str(tmp_path / 'archive' / '*'),
                         '--dry_run', str(tmp_path / 'requests'),
                         '--dead_letter', str(tmp_path / 'dl') + '/',
                         '--summary', str(tmp_path / 'summary.json'))

    # A file that could not be read needs someone's action (exit status 5);
    # an event that cannot be sent as it is does not (pipeline/lifecycle.py).
    unreadable = any(stage == 'read' for stage, _ in failures)
    assert result.returncode == (lifecycle.EXIT_FAILURES if unreadable else 0), result.stderr
    assert 'Traceback' not in result.stderr
    summary = json.load(open(tmp_path / 'summary.json'))
    assert {key: summary[key] for key in figures} == figures
    records = read_failure_records(str(tmp_path / 'dl') + '/')
    assert sorted((r['stage'], r['reason']) for r in records) == failures
    for record in records:
        assert record['message'] and record['source'].startswith(str(tmp_path / 'archive'))
        if record['stage'] == 'parse':
            assert len(record['event']) >= len(data.splitlines()[0]) // 2  # the data is kept


def one_line_error(result, status: int, *phrases: str) -> None:
    """The command failed with `status` and said why in one line, no traceback."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert 'Traceback' not in result.stderr and 'Traceback' not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture
def archive(tmp_path):
    (tmp_path / 'archive').mkdir()
    (tmp_path / 'archive' / 'events.gz').write_bytes(gzip_of_lines(3))
    (tmp_path / 'empty').mkdir()
    return str(tmp_path / 'archive' / '*.gz')


def test_a_directory_with_no_matching_files(archive, tmp_path):
    pattern = str(tmp_path / 'empty' / '*.gz')
    one_line_error(segment_cli('backfill', '--input', pattern, '--dry_run', str(tmp_path / 'o')),
                   2, pattern, 'no files match')


@pytest.mark.parametrize('text, phrases', [
    ('contact:\n  email: traits.email\n', ['bad.yaml', 'contact.email']),
    ('contact: [unclosed\n', ['bad.yaml', 'not valid YAML', 'line 2']),
    ('nonsense: {}\n', ['bad.yaml', 'nonsense']),
])
def test_a_bad_mapping_file(archive, tmp_path, text, phrases):
    (tmp_path / 'bad.yaml').write_text(text)
    one_line_error(segment_cli('backfill', '--input', archive, '--mapping',
                               str(tmp_path / 'bad.yaml'), '--dry_run', str(tmp_path / 'o')),
                   2, '--mapping', *phrases)


def test_a_mapping_file_that_does_not_exist(archive, tmp_path):
    one_line_error(segment_cli('backfill', '--input', archive, '--mapping',
                               str(tmp_path / 'none.yaml'), '--dry_run', str(tmp_path / 'o')),
                   2, 'none.yaml', 'cannot read')


def test_no_api_key(archive):
    one_line_error(segment_cli('backfill', '--input', archive), 2, 'no Loops API key',
                   'LOOPS_API_KEY', '--dry_run')


def test_an_api_key_file_that_does_not_exist(archive, tmp_path):
    one_line_error(segment_cli('backfill', '--input', archive, '--loops_api_key_file',
                               str(tmp_path / 'missing-key')),
                   2, '--loops_api_key_file', 'cannot read')


def test_an_empty_api_key_file(archive, tmp_path):
    (tmp_path / 'key').write_text('\n')
    one_line_error(segment_cli('backfill', '--input', archive, '--loops_api_key_file',
                               str(tmp_path / 'key')), 2, 'empty')


def test_a_wrong_api_key_stops_before_anything_is_read(archive, tmp_path):
    with LoopsSandbox('the-right-key') as sandbox:
        result = segment_cli('backfill', '--input', archive, '--loops_base_url', sandbox.base_url,
                             env={'LOOPS_API_KEY': 'a-wrong-key'})
        requests_seen = [r['path'] for r in sandbox.state()['requests']]
    one_line_error(result, cli.EXIT_AUTH, '401')
    assert requests_seen == ['/v1/api-key']
    assert 'a-wrong-key' not in result.stderr + result.stdout


def test_loops_that_cannot_be_reached(archive):
    result = segment_cli('backfill', '--input', archive, '--loops_base_url',
                         'http://127.0.0.1:9/api', '--max_attempts', '1',
                         env={'LOOPS_API_KEY': 'some-key'})
    one_line_error(result, cli.EXIT_FAILED, '/v1/api-key', 'no answer from Loops')


def test_plain_http_to_another_host_is_refused(archive):
    one_line_error(segment_cli('backfill', '--input', archive, '--loops_base_url',
                               'http://loops.example.com/api', env={'LOOPS_API_KEY': 'k'}),
                   2, 'https')


def test_replay_with_no_failure_files(tmp_path):
    one_line_error(segment_cli('replay', '--dead_letter', str(tmp_path / 'nothing') + '/',
                               env={'LOOPS_API_KEY': 'k'}),
                   2, 'nothing', 'no failure files match')


def test_replay_into_its_own_input_is_refused(tmp_path):
    one_line_error(segment_cli('replay', '--dead_letter', 'dl/', '--replay_dead_letter', 'dl/',
                               env={'LOOPS_API_KEY': 'k'}, cwd=tmp_path),
                   2, 'would match --dead_letter')
