"""The Loops API key never shows, and emails in log lines are masked.

Every command runs with a distinctive known key (from the environment and
from a key file) against the local sandbox; its stdout, stderr, logs (every
logger, at DEBUG, for the in-process runs) and every file it writes
(summaries, dry-run requests, reports, failure records decoded from Avro) are
searched for the key. The objects that hold the key are checked too: their
repr/str, pickled copies, Beam display data and the pipeline proto.
"""
import gzip
import io
import json
import logging
import os
import pickle
import re
import time

import apache_beam as beam
import fastavro
import pytest

from pipeline import backfill, check, cli, lifecycle, stream
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from tests.pubsub_emulator import pull, runner_kept_pulling, wait_until
from tests.test_edges import segment_cli
from tests.test_replay import faults_once_sending
from transforms.core.redact import MaskEmails
from transforms.delivery.write import LoopsConnection, WriteToLoops, _WriteShard
from transforms.loops import credentials
from transforms.loops.client import AuthError, LoopsClient, LoopsError
from transforms.loops.credentials import ApiKey

KEY = 'sl-SECRET-7f3a9c41d2e8b6-do-not-print'
# Any address the sample archive holds, unmasked.
EMAIL = re.compile(r'[A-Za-z0-9._%+-]{2,}@example\.com')


def text_of(path: str) -> str:
    """A written file as text: Avro records decoded, gzip expanded, else its bytes."""
    with open(path, 'rb') as f:
        data = f.read()
    if path.endswith('.avro'):
        return json.dumps(list(fastavro.reader(io.BytesIO(data))), default=str)
    if path.endswith('.gz'):
        data = gzip.decompress(data)
    return data.decode('utf-8', errors='replace')


def written_files(root: str, skip: tuple = ()) -> dict:
    """Every file under `root` (but `skip`) -> its text."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if path not in skip:
                files[path] = text_of(path)
    return files


def assert_key_absent(**texts) -> None:
    for where, text in texts.items():
        assert KEY not in text, f'the API key is in {where}'
        assert KEY[3:-3] not in text, f'part of the API key is in {where}'


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp('archive')
    manifest = write_archive(str(root), users=6, days=1, seed=13)
    return os.path.join(manifest.root, 'segment-logs', '*', '*', '*')


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'loops-key'
    path.write_text(KEY + '\n')
    return str(path)


@pytest.fixture
def sandbox():
    """A sandbox; the tests that need delivery failures (with Loops' answers in
    them) turn faults on once the job sends."""
    with LoopsSandbox(KEY, rate_limit=100, seed=2) as running:
        yield running


# ----------------------------------------------------------------- the commands

def test_backfill_dry_run(archive, tmp_path):
    result = segment_cli('backfill', '--input', archive, '--types', 'identify,track',
                         '--dry_run', str(tmp_path / 'out' / 'requests'),
                         '--dead_letter', str(tmp_path / 'out' / 'dl') + '/',
                         '--summary', str(tmp_path / 'out' / 'summary.json'),
                         env={'LOOPS_API_KEY': KEY})
    assert result.returncode == 0, result.stderr
    files = written_files(str(tmp_path / 'out'))
    assert any('requests' in path for path in files)
    assert_key_absent(stdout=result.stdout, stderr=result.stderr, **files)
    assert not EMAIL.search(result.stderr)


@pytest.mark.parametrize('key_from', ['env', 'file'])
def test_backfill_against_loops_with_delivery_failures(archive, tmp_path, key_file, sandbox,
                                                       key_from):
    key_args = ['--loops_api_key_file', key_file] if key_from == 'file' else []
    faults_once_sending(sandbox, fail_after=0.2, fail_before=0.1)
    result = segment_cli('backfill', '--input', archive, '--types', 'identify,track',
                         '--loops_base_url', sandbox.base_url, '--rate_limit', '100',
                         '--max_attempts', '1', '--dead_letter', str(tmp_path / 'out' / 'dl') + '/',
                         '--summary', str(tmp_path / 'out' / 'summary.json'), *key_args,
                         env={'LOOPS_API_KEY': KEY} if key_from == 'env' else {})
    # Completed with failures, reported with the command that replays them.
    assert result.returncode == lifecycle.EXIT_FAILURES, result.stderr
    assert 'segment-loops replay --dead_letter' in result.stdout
    files = written_files(str(tmp_path / 'out'))
    failures = ''.join(text for path, text in files.items() if path.endswith('.avro'))
    assert 'retries_exhausted' in failures and '"response_body"' in failures
    assert_key_absent(stdout=result.stdout, stderr=result.stderr, **files)
    assert not EMAIL.search(result.stderr)


def test_a_rejected_key_is_not_repeated_back(archive, tmp_path):
    with LoopsSandbox('another-key') as other:
        result = segment_cli('backfill', '--input', archive, '--loops_base_url', other.base_url,
                             '--dead_letter', str(tmp_path / 'out' / 'dl') + '/',
                             env={'LOOPS_API_KEY': KEY})
    assert result.returncode == cli.EXIT_AUTH
    assert_key_absent(stdout=result.stdout, stderr=result.stderr,
                      **written_files(str(tmp_path)))


def test_loops_out_of_reach(archive, tmp_path):
    result = segment_cli('backfill', '--input', archive, '--max_attempts', '1',
                         '--loops_base_url', 'http://127.0.0.1:9/api', env={'LOOPS_API_KEY': KEY})
    assert result.returncode == cli.EXIT_FAILED
    assert_key_absent(stdout=result.stdout, stderr=result.stderr)


def test_check(archive, tmp_path, key_file, sandbox):
    result = segment_cli('check', '--input', archive, '--types', 'identify,track',
                         '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file,
                         '--report', str(tmp_path / 'out' / 'report.json'), '--warn_only')
    assert result.returncode == 0, result.stderr
    assert_key_absent(stdout=result.stdout, stderr=result.stderr,
                      **written_files(str(tmp_path / 'out')))
    assert not EMAIL.search(result.stderr)


def test_replay(archive, tmp_path, key_file, sandbox):
    faults_once_sending(sandbox, fail_after=0.2, fail_before=0.1)
    summary = backfill.run([
        '--input', archive, '--types', 'identify,track', '--max_event_age', 'none',
        '--loops_base_url', sandbox.base_url,
        '--loops_api_key_file', key_file, '--max_attempts', '1', '--rate_limit', '100',
        '--dead_letter', str(tmp_path / 'dl') + '/'], out=open(os.devnull, 'w'))
    assert summary['delivery_failed'] > 0
    # All but the first fail again, into the new dead letter (the replay's
    # key check goes through).
    sandbox.configure(fail_after=0, fail_before=0)
    faults_once_sending(sandbox, fail_before=1.0)
    argv = ['--dead_letter', str(tmp_path / 'dl') + '/', '--max_attempts', '1',
            '--replay_dead_letter', str(tmp_path / 'out' / 'again') + '/',
            '--summary', str(tmp_path / 'out' / 'summary.json'),
            '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file]
    result = segment_cli('replay', *argv)
    assert result.returncode == lifecycle.EXIT_FAILURES, result.stderr
    assert 'To replay what failed again: segment-loops replay' in result.stdout
    stdout, stderr = result.stdout, result.stderr
    files = written_files(str(tmp_path / 'out'))
    assert any(path.endswith('.avro') and 'deliver' in text for path, text in files.items())
    assert_key_absent(stdout=stdout, stderr=stderr, **files)


# ------------------------------------------------- in-process, every log at DEBUG

class captured_logs:
    """Every record of every logger, at DEBUG, formatted through a handler
    with the CLI's email mask, into a StringIO."""

    def __enter__(self) -> io.StringIO:
        self.text = io.StringIO()
        self.handler = logging.StreamHandler(self.text)
        self.handler.addFilter(MaskEmails())
        root = logging.getLogger()
        self.level = root.level
        root.addHandler(self.handler)
        root.setLevel(logging.DEBUG)
        return self.text

    def __exit__(self, *exc_info):
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)


def test_backfill_logs_at_debug(archive, tmp_path, key_file, sandbox):
    out = io.StringIO()
    faults_once_sending(sandbox, fail_after=0.2, fail_before=0.1)
    with captured_logs() as logs:
        backfill.run(['--input', archive, '--types', 'identify,track',
                      '--loops_base_url', sandbox.base_url, '--loops_api_key_file', key_file,
                      '--max_attempts', '2', '--rate_limit', '100',
                      '--dead_letter', str(tmp_path / 'out' / 'dl') + '/'], out=out)
    text = logs.getvalue()
    assert 'segment_loops' in text or 'sent' in text  # the capture did capture
    assert_key_absent(logs=text, stdout=out.getvalue(), **written_files(str(tmp_path / 'out')))
    assert not EMAIL.search(text)


def test_check_logs_at_debug(archive, key_file, sandbox):
    out = io.StringIO()
    with captured_logs() as logs:
        check.main(['--input', archive, '--loops_base_url', sandbox.base_url,
                    '--loops_api_key_file', key_file, '--warn_only'], out=out)
    assert_key_absent(logs=logs.getvalue(), stdout=out.getvalue())
    assert not EMAIL.search(logs.getvalue())


def test_stream_briefly(pubsub_emulator, tmp_path, key_file, sandbox):
    from google.cloud import pubsub_v1
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    suffix = str(int(time.time() * 1000))
    topic = publisher.topic_path('segment-loops-secrets', f'events-{suffix}')
    subscription = subscriber.subscription_path('segment-loops-secrets', f'loops-{suffix}')
    failures = publisher.topic_path('segment-loops-secrets', f'failures-{suffix}')
    failures_sub = subscriber.subscription_path('segment-loops-secrets', f'failures-{suffix}')
    publisher.create_topic(name=topic)
    publisher.create_topic(name=failures)
    subscriber.create_subscription(name=subscription, topic=topic)
    subscriber.create_subscription(name=failures_sub, topic=failures)
    events = [{'type': 'identify', 'messageId': f'm{n}', 'userId': f'u{n}',
               'traits': {'email': f'person{n}@example.com'}} for n in range(5)]
    for payload in [json.dumps(e).encode() for e in events] + [b'{"broken"']:
        publisher.publish(topic, payload).result(timeout=30)
    out = io.StringIO()
    with captured_logs() as logs:
        result = stream.start(['--subscription', subscription, '--dead_letter_topic', failures,
                               '--loops_base_url', sandbox.base_url,
                               '--loops_api_key_file', key_file, '--max_buffering_seconds', '0.5'],
                              out=out)
        try:
            with runner_kept_pulling(publisher, topic):
                wait_until(lambda: len(sandbox.state()['contacts']) == len(events), 60)
                published = [m.data.decode() for m in pull(subscriber, failures_sub, 1)]
        finally:
            result.cancel()
            subscriber.close()
    assert len(sandbox.state()['contacts']) == len(events)
    assert published and 'invalid_json' in published[0]
    assert_key_absent(logs=logs.getvalue(), stdout=out.getvalue(), failures=''.join(published))
    assert not EMAIL.search(logs.getvalue())


# ------------------------------------------------------- the objects holding the key

def connection(api_key=None) -> LoopsConnection:
    return LoopsConnection('http://127.0.0.1:9/api', api_key or ApiKey(KEY))


def test_reprs_and_strings():
    conn = connection()
    client = conn.client()
    texts = {
        'ApiKey': repr(conn.api_key) + str(conn.api_key),
        'LoopsConnection': repr(conn) + str(conn),
        'LoopsClient': repr(client) + str(client),
        'pickled LoopsConnection': repr(pickle.loads(pickle.dumps(conn))),
        'pickled LoopsClient': repr(pickle.loads(pickle.dumps(client))),
        'DoFn': str(_WriteShard(conn, 'x')) + repr(vars(_WriteShard(conn, 'x'))),
        'pickled DoFn': str(pickle.loads(pickle.dumps(_WriteShard(conn, 'x'))).__dict__),
    }
    assert_key_absent(**texts)


def test_the_pipeline_as_a_runner_sees_it():
    p = beam.Pipeline()
    p | beam.Create([]) | WriteToLoops(connection())
    proto = p.to_runner_api()
    display = [str(item) for transform in proto.components.transforms.values()
               for item in transform.display_data]
    assert_key_absent(proto=str(proto), serialized=proto.SerializeToString().decode('latin-1'),
                      display_data=''.join(display))


def test_errors_do_not_carry_the_key():
    client = LoopsClient('http://127.0.0.1:9/api', KEY, max_attempts=1)
    with pytest.raises(LoopsError) as unreachable:
        client.check_key()
    with LoopsSandbox('another-key') as other:
        with pytest.raises(AuthError) as rejected:
            LoopsClient(other.base_url, KEY, max_attempts=1).check_key()
    assert_key_absent(unreachable=str(unreachable.value) + repr(unreachable.value),
                      rejected=str(rejected.value) + repr(rejected.value))


def test_a_secret_manager_key_is_not_shipped_with_the_job(monkeypatch):
    # No Secret Manager here: the fetch itself is replaced, the rest is real.
    monkeypatch.setattr(credentials, 'read_secret_version', lambda name: KEY)
    key = ApiKey(secret_version='projects/p/secrets/loops/versions/1')
    assert key.get() == KEY
    conn = connection(key)
    assert KEY.encode() not in pickle.dumps(conn)
    assert_key_absent(repr=repr(key) + repr(conn))
    assert 'projects/p/secrets/loops/versions/1' in repr(key)
