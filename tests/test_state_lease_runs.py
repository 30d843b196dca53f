"""One writer per sync state, with real backfills against the local Loops
sandbox over HTTP: a second run on a state in use is refused before it
sends anything (over the same days or others), a killed run's lease is
taken over with --break_lease or once it expired, a run whose lease
another run took over stops sending and does not fold the state, and a
launcher that does not wait (a Flex Template's) hands the lease to the
job, which renews and releases it."""
import contextlib
import datetime
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import backfill, cli
from pipeline.local.samples import write_archive
from pipeline.options import UsageError
from pipeline.state import describe_run
from tests.test_sync_state import (KEY, ROOT, account, archive_glob, argv, assert_same_account,
                                   key_file, kill_when, run, sandbox, start_cli, writes)
from transforms.state.files import list_state
from transforms.state.lease import (HANDED_OVER_TTL_SECONDS, HandedOverLease, LeaseCheck,
                                    LeaseLost, acquire)
from transforms.state.manifest import read_manifest

__all__ = ['key_file']   # a fixture used here
FOUR_DAYS = ('2026-11-01', '2026-11-02', '2026-11-03', '2026-11-04')


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    """Four received days whose delivery lasts several seconds at 40 requests/s."""
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=60, days=4, seed=71)


def wait_for(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.05)


def cli_backfill(args) -> tuple:
    """(exit status, stderr) of `segment-loops backfill ARGS` in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main(['backfill', *args])
    return status, err.getvalue()


def reference_writes(tmp_path, inputs, *extra) -> tuple:
    """(account, write requests) of one run alone, on a fresh state."""
    tmp_path.mkdir()
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    with sandbox() as loops:
        run(loops, str(key_file), tmp_path, inputs, '--state', str(tmp_path / 'state'), *extra)
        return account(loops), len(writes(loops))


@pytest.mark.parametrize('first, second', [
    ([], []),
    # The race that left older values in Loops for good: days 3-4 started
    # first, days 1-2 a moment later, on the same state.
    (['--since', FOUR_DAYS[2]], ['--until', FOUR_DAYS[1]]),
], ids=['same_days', 'days_3_4_then_days_1_2'])
def test_a_second_backfill_on_a_state_in_use_is_refused_and_sends_nothing(
        archive, key_file, tmp_path, first, second):
    state = str(tmp_path / 'state')
    expected, one_run = reference_writes(tmp_path / 'reference', [archive_glob(archive)], *first)
    with sandbox() as loops:
        # --failures_ok http_400: Loops refuses a few of the archive's contacts.
        running = start_cli(argv(loops.base_url, key_file, tmp_path, [archive_glob(archive)],
                                 '--state', state, *first, '--failures_ok', 'http_400', rate=40),
                            tmp_path / 'first.log')
        wait_for(lambda: os.path.exists(os.path.join(state, 'LEASE')))
        status, err = cli_backfill(argv(loops.base_url, key_file, tmp_path,
                                        [archive_glob(archive)], '--state', state, *second))
        assert running.poll() is None, 'the first run ended before the second started'
        assert running.wait(timeout=300) == 0, (tmp_path / 'first.log').read_text()
        assert_same_account(account(loops), expected)
        sent = len(writes(loops))

    assert status == 2
    assert 'is in use by another run' in err and f'(pid {running.pid}, ' in err
    assert '--break_lease' in err and 'Traceback' not in err
    for word in first:
        assert word in err   # what the holder runs
    assert sent == one_run   # nothing from the second run
    assert not os.path.exists(os.path.join(state, 'LEASE'))   # released at the end


def test_a_killed_runs_lease_is_refused_until_broken_with_break_lease(
        archive, key_file, tmp_path):
    state = str(tmp_path / 'state')
    expected, one_run = reference_writes(tmp_path / 'reference', [archive_glob(archive)])
    with sandbox() as loops:
        args = argv(loops.base_url, key_file, tmp_path, [archive_glob(archive)], '--state',
                    state, '--state_flush_seconds', '0.5', rate=40)
        killed = start_cli(args, tmp_path / 'killed.log')
        kill_when(killed, loops, lambda seen: seen >= 40)
        at_kill = len(writes(loops))
        with pytest.raises(UsageError, match='is in use by another run'):
            backfill.run(args, out=io.StringIO())
        assert len(writes(loops)) == at_kill
        out = io.StringIO()
        backfill.run([*args, '--break_lease'], out=out)
        assert_same_account(account(loops), expected)
        total = len(writes(loops))

    assert f'Broke the lease of the sync state {state} held by' in out.getvalue()
    assert f'(pid {killed.pid}, ' in out.getvalue()
    assert total <= one_run * 1.10, (total, one_run)


HOLD_LEASE = '''
import sys, time
from transforms.state.lease import acquire
lease = acquire(sys.argv[1], 'backfill (to be killed)', ttl_seconds=float(sys.argv[2]))
lease.start_renewing()
print('held', flush=True)
time.sleep(600)
'''


def test_a_lease_left_by_a_killed_run_is_taken_over_once_it_expired(
        archive, key_file, tmp_path):
    state = str(tmp_path / 'state')
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LEASE, state, '3'], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == 'held'
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with sandbox() as loops:
        args = argv(loops.base_url, key_file, tmp_path, [archive_glob(archive)], '--state',
                    state, '--until', FOUR_DAYS[0])
        with pytest.raises(UsageError, match='the lease expires at'):
            backfill.run(args, out=io.StringIO())
        assert writes(loops) == []
        time.sleep(3.5)
        out = io.StringIO()
        summary = backfill.run(args, out=out)

    assert 'Took over the lease of the sync state' in out.getvalue()
    assert f'(pid {holder.pid}, ' in out.getvalue() and 'expired at' in out.getvalue()
    assert summary['delivered'] > 0


def test_a_run_whose_lease_is_taken_over_stops_sending_and_does_not_fold(
        archive, key_file, tmp_path):
    state = str(tmp_path / 'state')
    with sandbox() as loops:
        running = start_cli(argv(loops.base_url, key_file, tmp_path, [archive_glob(archive)],
                                 '--state', state, '--state_flush_seconds', '0.5', rate=40),
                            tmp_path / 'taken.log')
        wait_for(lambda: len(writes(loops)) >= 40)
        with acquire(state, 'backfill (the operator\'s)', break_lease=True):
            at_break = len(writes(loops))
            status = running.wait(timeout=60)
            after = len(writes(loops))
    log = (tmp_path / 'taken.log').read_text()

    assert status == 1, log
    assert 'LeaseLost: The lease of the sync state' in log and 'Traceback' not in log
    assert "taken over by" in log and "running \"backfill (the operator's)\"" in log
    # Half a second of checks at 40 requests/s, and what was in flight.
    assert after - at_break <= 40, (at_break, after)
    files = list_state(state).files
    assert files and all('/log-' in f.path for f in files)   # recorded, not folded
    assert not os.path.exists(os.path.join(state, 'MANIFEST.json'))


def test_a_launcher_that_does_not_wait_hands_the_lease_to_the_job(archive, key_file, tmp_path):
    state = str(tmp_path / 'state')
    with sandbox() as loops:
        # The local runner stands in for Dataflow: the job runs inside start().
        result, job = backfill.start(argv(loops.base_url, key_file, tmp_path,
                                          [archive_glob(archive)], '--state', state,
                                          '--until', FOUR_DAYS[0]),
                                     out=io.StringIO(), hand_over_lease=True)
        result.wait_until_finish()

    assert job.state.lease.record.ttl_seconds == HANDED_OVER_TTL_SECONDS
    assert not any(thread.name.startswith('lease-renewal-') for thread in threading.enumerate())
    # The job's last step released it, after the fold.
    assert not os.path.exists(os.path.join(state, 'LEASE'))
    assert read_manifest(state) is not None


def test_a_handed_over_lease_is_renewed_by_the_job_and_released_only_if_still_its(tmp_path):
    state = str(tmp_path / 'state')
    lease = acquire(state, 'backfill (handed over)', ttl_seconds=0.9)
    handed = HandedOverLease(state, lease.record.token, 1.0, PipelineOptions([]))
    handed.check()
    assert expires_at(state) == lease.record.expires_at   # not due yet
    time.sleep(0.4)   # a third of the TTL and more
    handed.check()
    assert expires_at(state) > lease.record.expires_at
    assert stored(state)['token'] == lease.record.token

    with acquire(state, 'backfill (the operator\'s)', break_lease=True) as other:
        with pytest.raises(LeaseLost, match="taken over by .* running \"backfill \\(the "
                                            "operator's\\)\""):
            handed.check()
        with pytest.raises(LeaseLost):
            LeaseCheck(state, lease.record.token, 1.0).check()
        LeaseCheck(state, other.record.token, 1.0).check()
        assert handed.release() is False and stored(state)['token'] == other.record.token
    lease = acquire(state, 'backfill (handed over)', ttl_seconds=60)
    assert HandedOverLease(state, lease.record.token, 1.0, PipelineOptions([])).release()
    assert not os.path.exists(os.path.join(state, 'LEASE'))
    with pytest.raises(LeaseLost, match='was deleted by someone else'):
        LeaseCheck(state, lease.record.token, 1.0).check()


def stored(state: str) -> dict:
    with open(os.path.join(state, 'LEASE'), encoding='utf-8') as f:
        return json.load(f)


def expires_at(state: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stored(state)['expires_at'])


def test_a_lease_names_what_the_run_reads_and_never_a_secret():
    args, _ = backfill.backfill_parser().parse_known_args([
        '--input', 's3://b/segment-logs/*/*/*.gz', '--since', '2026-11-03', '--state', 's3://b/s',
        '--s3_secret_access_key', 'SECRET', '--loops_api_key_file', '/etc/key'])

    assert describe_run('backfill', args) == \
        "backfill --input 's3://b/segment-logs/*/*/*.gz' --since 2026-11-03"


def test_a_deletion_is_refused_while_another_run_holds_the_state(tmp_path, key_file):
    state = str(tmp_path / 'state')
    (tmp_path / 'deletions.txt').write_text('usr_000001\n')
    with acquire(state, 'backfill (running)'):
        with sandbox() as loops:
            status, err = cli_run_delete(loops, key_file, tmp_path, '--state', state)
            requests = loops.state()['requests']

    assert status == 2 and requests == []
    assert 'is in use by another run' in err and 'running "backfill (running)"' in err


def cli_run_delete(loops, key_file, tmp_path, *extra) -> tuple:
    """(exit status, stderr) of `segment-loops delete` in this process."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main(['delete', '--input', str(tmp_path / 'deletions.txt'),
                           '--loops_base_url', loops.base_url, '--loops_api_key_file', key_file,
                           '--dead_letter', str(tmp_path / 'dl') + '/', *extra])
    return status, err.getvalue()
