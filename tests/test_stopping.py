"""Stopping a job with SIGINT or SIGTERM: the real command in a subprocess,
against the local Loops sandbox over HTTP (and the Pub/Sub emulator).

A backfill stopped halfway exits with 130 or 143 within seconds, prints one
line (what was done, what was not, the command that resumes it) and no
traceback, writes its summary so far and its failure records (nothing
half-written left in the dead letter), and leaves a sync state from which
that command sends at most what was in flight at the stop beyond what the
stopped run did not deliver; the account ends up as one uninterrupted run
leaves it. A replay stops the same way; a stream finishes the batch it is
sending and flushes what it delivered into its sync state.
"""
import glob
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import apache_beam as beam
import fastavro
import pytest

from pipeline import backfill
from pipeline.lifecycle import STOP_STATUS, Stopped, cancel_remote_job
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from schemas import load_schema
from tests.pubsub_emulator import runner_kept_pulling
from tests.test_sync_state import WORKER_PROCESSES, account, assert_same_account, writes
from transforms.core.records import NO_STAMP, contact_upsert, failure_record
from transforms.state.files import list_state, read_facts

KEY = 'stopping-test-key-5d21'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_FLIGHT = 6    # --max_in_flight: requests on their way at any moment, at most


def archive_glob(archive) -> str:
    return os.path.join(archive.root, 'segment-logs', '*', '*', '*.gz')


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=40, days=2, seed=43)


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'key'
    path.write_text(KEY)
    return str(path)


def backfill_args(base_url: str, key_file: str, tmp_path, archive, *extra) -> list:
    return ['--input', archive_glob(archive), '--types', 'identify,track',
            '--max_event_age', 'none', '--loops_base_url', base_url,
            '--loops_api_key_file', key_file, '--dead_letter', str(tmp_path / 'dl') + '/',
            *extra]


@pytest.fixture(scope='module')
def reference(archive, tmp_path_factory):
    """(account, write requests) of one uninterrupted run without a state."""
    tmp_path = tmp_path_factory.mktemp('reference')
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    with LoopsSandbox(KEY, rate_limit=None) as loops:
        backfill.run(backfill_args(loops.base_url, str(key_file), tmp_path, archive,
                                   '--rate_limit', '1000'), out=io.StringIO())
        return account(loops), len(writes(loops))


def segment_loops(argv: list, log_path) -> subprocess.Popen:
    """`segment-loops ARGV` (python -m pipeline) in its own process group,
    stdout and stderr into `log_path`."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(log_path, 'w') as log:
        return subprocess.Popen([sys.executable, '-m', 'pipeline', *argv], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def signal_when(process, loops, condition, number: int, timeout: float = 120) -> float:
    """Sends signal `number` to the process once `condition(write requests
    seen)` holds; -> when (time.monotonic)."""
    deadline = time.monotonic() + timeout
    while not condition(len(writes(loops))):
        assert process.poll() is None, 'the run ended before it could be stopped'
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, number)
    return time.monotonic()


def resume_argv(line: str) -> list:
    """The command a stop line ends with, as arguments after `segment-loops`."""
    command = line.split(': segment-loops ', 1)[1]
    return shlex.split(command)


def stop_line_of(output: str, command: str, name: str) -> str:
    """The one line a stopped command printed; fails on a traceback or more lines."""
    assert 'Traceback' not in output and 'Error' not in output, output
    lines = [line for line in output.splitlines() if 'stopped by' in line]
    assert len(lines) == 1, output
    assert lines[0].startswith(f'segment-loops {command}: stopped by {name}: ')
    return lines[0]


@pytest.mark.parametrize('number, fraction, runner', [
    (signal.SIGINT, 0.2, []), (signal.SIGTERM, 0.6, []),
    # The launcher alone gets the signal (kill PID); its workers see the stop file.
    (signal.SIGTERM, 0.4, WORKER_PROCESSES)], ids=['SIGINT', 'SIGTERM', 'SIGTERM-workers'])
def test_a_stopped_backfill_ends_cleanly_and_resumes_with_at_most_what_was_in_flight(
        number, fraction, runner, archive, reference, key_file, tmp_path):
    expected, one_run = reference
    name = signal.Signals(number).name
    summary_path = tmp_path / 'summary.json'
    args = backfill_args(
        'URL', key_file, tmp_path, archive, '--state', str(tmp_path / 'state'),
        '--summary', str(summary_path), '--rate_limit', '40', '--max_in_flight', str(IN_FLIGHT),
        '--failures_ok', 'http_400', *runner)
    with LoopsSandbox(KEY, rate_limit=None, latency=(0.05, 0.15)) as loops:
        args[args.index('URL')] = loops.base_url
        process = segment_loops(['backfill', *args], tmp_path / 'stopped.log')
        signalled = signal_when(process, loops, lambda seen: seen >= one_run * fraction, number)
        at_signal = len(writes(loops))
        status = process.wait(timeout=60)
        took = time.monotonic() - signalled
        at_exit = writes(loops)
        line = stop_line_of((tmp_path / 'stopped.log').read_text(), 'backfill', name)
        stopped = json.loads(summary_path.read_text())

        resumed = segment_loops(resume_argv(line), tmp_path / 'resumed.log')
        assert resumed.wait(timeout=120) == 0, (tmp_path / 'resumed.log').read_text()
        resume = json.loads(summary_path.read_text())
        sent = writes(loops)
        assert_same_account(account(loops), expected)

    assert status == STOP_STATUS[number]
    assert ' requests delivered' in line and 'not sent; to resume' in line
    assert took < 15
    # No request started after the stop but those already on their way.
    assert len(at_exit) - at_signal <= IN_FLIGHT
    # The summary so far accounts for every request.
    assert stopped['delivered'] > 0 and stopped['not_sent'] > 0
    assert (stopped['delivered'] + stopped['already_delivered'] + stopped['delivery_failed']
            + stopped['not_sent']) == stopped['contacts'] + stopped['events']
    assert not glob.glob(str(tmp_path / 'dl' / 'beam-temp-*'))
    assert glob.glob(str(tmp_path / 'dl' / 'failures-*.avro'))
    # The resume sends what the stopped run did not deliver, and at most
    # what was in flight at the stop besides.
    not_delivered = stopped['not_sent'] + stopped['delivery_failed']
    assert resume['contacts'] + resume['events'] <= not_delivered + IN_FLIGHT
    assert len(sent) <= one_run + stopped['delivery_failed'] + IN_FLIGHT
    assert sum(r['status'] == 409 for r in sent) <= IN_FLIGHT


def upserts(count: int) -> list:
    return [contact_upsert({'email': f'u{n}@example.com', 'userId': f'u{n}'}, f'user:u{n}',
                           NO_STAMP, 'test') for n in range(count)]


def test_a_stopped_replay_ends_cleanly_and_running_it_again_finishes_it(key_file, tmp_path):
    dead_letter = tmp_path / 'dl'
    dead_letter.mkdir()
    with open(dead_letter / 'failures-00000-of-00001.avro', 'wb') as f:
        fastavro.writer(f, load_schema('failure'), [
            failure_record('deliver', 'retries_exhausted', 'no answer', request=request,
                           attempts=6) for request in upserts(60)])
    summary_path = tmp_path / 'summary.json'
    args = ['replay', '--dead_letter', str(dead_letter) + '/', '--loops_api_key_file', key_file,
            '--replay_dead_letter', str(tmp_path / 'again') + '/', '--summary',
            str(summary_path), '--rate_limit', '20', '--max_in_flight', str(IN_FLIGHT)]
    with LoopsSandbox(KEY, rate_limit=None, latency=(0.05, 0.1)) as loops:
        args += ['--loops_base_url', loops.base_url]
        process = segment_loops(args, tmp_path / 'stopped.log')
        signal_when(process, loops, lambda seen: seen >= 10, signal.SIGINT)
        at_signal = len(writes(loops))
        status = process.wait(timeout=60)
        at_exit = len(writes(loops))
        line = stop_line_of((tmp_path / 'stopped.log').read_text(), 'replay', 'SIGINT')
        stopped = json.loads(summary_path.read_text())

        again = segment_loops(resume_argv(line), tmp_path / 'again.log')
        assert again.wait(timeout=60) == 0, (tmp_path / 'again.log').read_text()
        contacts = {contact['userId'] for contact in loops.state()['contacts']}

    assert status == STOP_STATUS[signal.SIGINT]
    assert at_exit - at_signal <= IN_FLIGHT
    assert 'requests delivered' in line and 'not sent; run it again to finish' in line
    assert stopped['replayed'] == 60 and stopped['not_sent'] > 0
    assert stopped['recovered'] + stopped['delivery_failed'] + stopped['not_sent'] == 60
    assert contacts == {f'u{n}' for n in range(60)}


def test_a_stopped_delete_ends_cleanly_and_running_it_again_finishes_it(key_file, tmp_path):
    ids = tmp_path / 'ids.txt'
    ids.write_text(''.join(f'u{n}\n' for n in range(60)))
    contacts = [{'userId': f'u{n}', 'email': f'u{n}@example.com'} for n in range(60)]
    args = ['delete', '--input', str(ids), '--loops_api_key_file', key_file,
            '--dead_letter', str(tmp_path / 'dl') + '/', '--summary', str(tmp_path / 's.json'),
            '--rate_limit', '20', '--max_in_flight', str(IN_FLIGHT)]
    with LoopsSandbox(KEY, rate_limit=None, latency=(0.05, 0.1), contacts=contacts) as loops:
        args += ['--loops_base_url', loops.base_url]
        process = segment_loops(args, tmp_path / 'stopped.log')
        signal_when(process, loops, lambda seen: seen >= 10, signal.SIGTERM)
        at_signal = len(writes(loops))
        status = process.wait(timeout=60)
        at_exit = len(writes(loops))
        line = stop_line_of((tmp_path / 'stopped.log').read_text(), 'delete', 'SIGTERM')
        stopped = json.loads((tmp_path / 's.json').read_text())

        again = segment_loops(resume_argv(line), tmp_path / 'again.log')
        assert again.wait(timeout=60) == 0, (tmp_path / 'again.log').read_text()
        left = loops.state()['contacts']

    assert status == STOP_STATUS[signal.SIGTERM]
    assert at_exit - at_signal <= IN_FLIGHT
    assert 'deletions done; run it again to finish' in line
    assert 0 < stopped['deleted'] < 60 and stopped['deletions'] == 60
    assert left == []


def test_a_stopped_stream_flushes_what_it_delivered_into_the_state(pubsub_emulator, key_file,
                                                                   tmp_path):
    from google.cloud import pubsub_v1
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    suffix = str(int(time.time() * 1000))
    topic = publisher.topic_path('segment-loops-test', f'stopping-{suffix}')
    subscription = subscriber.subscription_path('segment-loops-test', f'stopping-{suffix}')
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    state = str(tmp_path / 'state')
    with LoopsSandbox(KEY, rate_limit=None, latency=(0.05, 0.1)) as loops:
        # The state's own flush comes after a minute: only the stop can write it.
        process = segment_loops(
            ['stream', '--subscription', subscription, '--loops_base_url', loops.base_url,
             '--loops_api_key_file', key_file, '--rate_limit', '20', '--max_buffering_seconds',
             '0.5', '--dead_letter', str(tmp_path / 'dl') + '/', '--state', state,
             '--state_flush_seconds', '60'], tmp_path / 'stream.log')
        with runner_kept_pulling(publisher, topic):
            for request in upserts(100):
                publisher.publish(topic, json.dumps({
                    'type': 'identify', 'messageId': request.body['userId'],
                    'userId': request.body['userId'],
                    'traits': {'email': request.body['email']}}).encode())
            signalled = signal_when(process, loops, lambda seen: seen >= 25, signal.SIGTERM)
            status = process.wait(timeout=60)
            took = time.monotonic() - signalled
        accepted = [r for r in writes(loops) if r['status'] == 200]
    subscriber.close()

    output = (tmp_path / 'stream.log').read_text()
    line = stop_line_of(output, 'stream', 'SIGTERM')
    assert status == STOP_STATUS[signal.SIGTERM]
    assert took < 10
    assert 'the batch being sent was finished, what was delivered is in the sync state' in line
    assert line.endswith(f'--state {state} --state_flush_seconds 60')
    assert len(read_facts(list_state(state))) == len(accepted) >= 25


def test_a_job_on_a_runner_elsewhere_is_cancelled_when_its_launcher_is_stopped():
    """The launcher of a Dataflow job only waits for it, and gives up the sync
    state's lease as it ends: a stop cancels the job (Beam's results of its
    local runners stand in for Dataflow's: one cancels, one cannot)."""
    stopped = Stopped(signal.SIGTERM, 'stopped by SIGTERM; a job already submitted ...')
    pipeline = beam.Pipeline('BundleBasedDirectRunner')
    _ = pipeline | beam.Create([1])
    cancellable = pipeline.run()
    cancellable.wait_until_finish()
    pipeline = beam.Pipeline('FnApiRunner')
    _ = pipeline | beam.Create([1])

    cancelled = cancel_remote_job(cancellable, stopped, 'segment-loops backfill --x')
    not_cancelled = cancel_remote_job(pipeline.run(), stopped, 'segment-loops backfill --x')

    assert cancellable.state == 'CANCELLED' and cancelled.status == 143
    assert cancelled.line == (
        "stopped by SIGTERM: the job was cancelled on its runner; its sync state has what it "
        "delivered up to its writers' last flush (--state_flush_seconds); to resume: "
        "segment-loops backfill --x")
    assert not_cancelled.line.startswith('stopped by SIGTERM, but the job could not be '
                                         'cancelled (')
    assert 'before running it again' in not_cancelled.line
