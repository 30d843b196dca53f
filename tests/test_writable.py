"""Every output is proven writable before the first request: an output
prefix that cannot be written (under a file, in a read-only folder) stops
the job with one line naming the option, the path and the error, and
nothing is sent (counted at the local Loops sandbox)."""
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from pipeline import cli
from pipeline.local.samples import write_archive
from tests.test_sync_state import KEY, ROOT, archive_glob, sandbox

NOBODY = 65534


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=5, days=1, seed=91)


def cli_run(*args) -> tuple:
    """(exit status, stderr) of `segment-loops ARGS` in this process."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return status, err.getvalue()


@pytest.mark.parametrize('option', ['--state', '--dead_letter', '--dry_run', '--contacts_csv'])
def test_an_output_under_a_file_stops_the_backfill_before_any_request(archive, tmp_path, option):
    (tmp_path / 'a-file').write_text('not a folder')
    blocked = str(tmp_path / 'a-file' / 'out') + '/'
    (tmp_path / 'key').write_text(KEY)
    outputs = {'--state': str(tmp_path / 'state'), '--dead_letter': str(tmp_path / 'dl') + '/',
               option: blocked}
    with sandbox() as loops:
        args = ['--input', archive_glob(archive), '--loops_base_url', loops.base_url,
                '--loops_api_key_file', str(tmp_path / 'key')]
        for name, path in outputs.items():
            args += [name, path]
        status, err = cli_run('backfill', *args)
        requests = loops.state()['requests']

    assert status == 2 and requests == []
    assert err.startswith(f'segment-loops backfill: error: {option} {blocked}: cannot write '
                          'there ([Errno 20] Not a directory: ')
    assert err.endswith('); nothing was sent\n') and err.count('\n') == 1
    assert not os.path.exists(tmp_path / 'state' / 'LEASE')


def test_a_stream_whose_dead_letter_is_under_a_file_stops_before_any_request(tmp_path):
    (tmp_path / 'a-file').write_text('not a folder')
    (tmp_path / 'key').write_text(KEY)
    with sandbox() as loops:
        status, err = cli_run('stream', '--subscription', 'projects/my-project/subscriptions/s',
                              '--dead_letter', str(tmp_path / 'a-file' / 'dl') + '/',
                              '--loops_base_url', loops.base_url,
                              '--loops_api_key_file', str(tmp_path / 'key'))
        requests = loops.state()['requests']

    assert status == 2 and requests == []
    assert '--dead_letter' in err and 'Not a directory' in err and err.count('\n') == 1


@pytest.fixture
def shared_dir():
    """A folder another user can reach (pytest's are private to this one)."""
    path = tempfile.mkdtemp(prefix='segment-loops-writable-')
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def as_another_user(command: list) -> list:
    """Run as nobody when this is root, whom no folder's mode stops."""
    if os.geteuid() != 0:
        return command
    return ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups', *command]


def test_a_read_only_state_folder_stops_the_backfill_with_one_line(shared_dir):
    archive = write_archive(os.path.join(shared_dir, 'archive'), users=5, days=1, seed=92)
    key_file = os.path.join(shared_dir, 'key')
    with open(key_file, 'w') as f:
        f.write(KEY)
    read_only, writable = (os.path.join(shared_dir, name) for name in ('read-only', 'writable'))
    os.mkdir(read_only, 0o555)
    os.mkdir(writable)
    os.chmod(writable, 0o777)
    os.chmod(read_only, 0o555)
    with sandbox() as loops:
        done = subprocess.run(as_another_user([
            sys.executable, '-m', 'pipeline', 'backfill', '--input', archive_glob(archive),
            '--state', read_only, '--dead_letter', os.path.join(writable, 'dl') + '/',
            '--loops_base_url', loops.base_url, '--loops_api_key_file', key_file]),
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, HOME=writable),
            capture_output=True, text=True, timeout=300)
        requests = loops.state()['requests']

    assert done.returncode == 2, done.stderr
    assert requests == []
    assert done.stderr.startswith(f'segment-loops backfill: error: --state {read_only}: cannot '
                                  'write there ([Errno 13] Permission denied: ')
    assert done.stderr.count('\n') == 1 and 'Traceback' not in done.stderr
    assert os.listdir(read_only) == []
