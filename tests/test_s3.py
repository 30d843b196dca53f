"""The backfill reading a Segment archive from S3 (a real local S3: moto's
server) gives exactly what it gives from the same files on local disk."""
import glob
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import boto3
import pytest
import requests as http

from pipeline import backfill
from pipeline.local.samples import write_archive
from pipeline.options import UsageError
from tests.test_portability import WorkerProcesses
from transforms.core.sinks import read_failure_records

BUCKET = 'segment-archive'
REGION = 'us-east-1'
ACCESS_KEY, SECRET_KEY = 'test-access-key', 'test-secret-key'
ARCHIVE_GLOB = 'segment-logs/*/*/*.gz'
# Beam's portable runner with an in-process job service and SDK workers in
# subprocesses: like Dataflow, it hands the workers the pipeline options over
# the provisioning API, so the --s3_* options reach them. (The FnApiRunner's
# --direct_running_mode=multi_processing starts its workers without the
# options: they would read from AWS itself.)
PORTABLE_SUBPROCESS_WORKERS = [
    '--runner=PortableRunner', '--job_endpoint=embed',
    '--environment_type=beam:env:harness_subprocess_python:v1',
    f'--environment_config={sys.executable} -m apache_beam.runners.worker.sdk_worker_main',
    '--sdk_worker_parallelism=2']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def moto_server_command() -> str:
    beside_python = os.path.join(os.path.dirname(sys.executable), 'moto_server')
    return beside_python if os.path.exists(beside_python) else shutil.which('moto_server')


@pytest.fixture(scope='module')
def s3_endpoint(tmp_path_factory):
    """http://127.0.0.1:PORT of a moto S3 server, for this module's tests."""
    port = free_port()
    log = open(tmp_path_factory.mktemp('moto') / 'moto.log', 'w')
    server = subprocess.Popen([moto_server_command(), '-H', '127.0.0.1', '-p', str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http.get(endpoint, timeout=1)
                break
            except http.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'moto_server did not start (see {log.name})')
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(autouse=True)
def no_ambient_aws_credentials(monkeypatch, tmp_path):
    # Only the credentials a test gives may reach boto3 (not a developer's ~/.aws).
    for name in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN',
                 'AWS_PROFILE', 'AWS_DEFAULT_REGION', 'AWS_REGION'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', str(tmp_path / 'no-credentials'))
    monkeypatch.setenv('AWS_CONFIG_FILE', str(tmp_path / 'no-config'))
    monkeypatch.setenv('AWS_EC2_METADATA_DISABLED', 'true')


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=10, days=2, seed=31)


@pytest.fixture(scope='module')
def bucket(s3_endpoint, archive):
    """The archive uploaded under the same keys as its local paths (also the
    non-archive objects Segment leaves there)."""
    s3 = boto3.client('s3', endpoint_url=s3_endpoint, region_name=REGION,
                      aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    s3.create_bucket(Bucket=BUCKET)
    for path in archive.files + archive.other_files:
        s3.upload_file(path, BUCKET, os.path.relpath(path, archive.root).replace(os.sep, '/'))
    return f's3://{BUCKET}'


def s3_flags(endpoint: str) -> list:
    return ['--s3_endpoint_url', endpoint, '--s3_disable_ssl', '--s3_region_name', REGION,
            '--s3_access_key_id', ACCESS_KEY, '--s3_secret_access_key', SECRET_KEY]


def dry_run(out_dir, pattern: str, root: str, *extra) -> tuple:
    """(summary, sorted requests, sorted failures) of a dry run; failure
    sources are made relative to `root` so local and S3 runs compare."""
    summary = backfill.run(['--input', pattern, '--types', 'identify,track', '--max_event_age', 'none',
                            '--dry_run', str(out_dir / 'requests'),
                            '--dead_letter', str(out_dir / 'dl') + '/', *extra],
                           out=io.StringIO())
    requests = sorted(line for path in glob.glob(str(out_dir / 'requests*'))
                      for line in open(path, encoding='utf-8'))
    failures = sorted(
        json.dumps(dict(record, failed_at=None, source=record['source'].replace(root, '<root>')),
                   sort_keys=True)
        for record in read_failure_records(str(out_dir / 'dl') + '/'))
    return summary, requests, failures


@pytest.fixture(scope='module')
def from_local_files(archive, tmp_path_factory):
    return dry_run(tmp_path_factory.mktemp('local'),
                   os.path.join(archive.root, *ARCHIVE_GLOB.split('/')), archive.root)


def test_s3_archive_gives_what_local_files_give(bucket, s3_endpoint, from_local_files,
                                                archive, tmp_path):
    from_s3 = dry_run(tmp_path, f'{bucket}/{ARCHIVE_GLOB}', bucket, *s3_flags(s3_endpoint))

    assert from_s3 == from_local_files
    summary, requests, failures = from_s3
    assert summary['read'] == archive.lines and summary['files'] == len(archive.files)
    assert len(requests) == summary['contacts'] + summary['events'] > 0
    assert failures and all('"source": "<root>/segment-logs/' in f for f in failures)


def test_non_archive_keys_are_skipped_and_counted(bucket, s3_endpoint, from_local_files,
                                                  archive, tmp_path):
    summary, requests, failures = dry_run(
        tmp_path, f'{bucket}/segment-logs/**', bucket, *s3_flags(s3_endpoint))

    assert {os.path.basename(p) for p in archive.other_files} == {
        'dummy-object.txt', 'README.txt'}
    assert summary['files_skipped_not_archive'] == len(archive.other_files)
    assert summary['files'] == len(archive.files)
    assert (requests, failures) == from_local_files[1:]


def test_worker_processes_read_s3_with_credentials_from_the_environment(
        bucket, s3_endpoint, from_local_files, monkeypatch, tmp_path):
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', ACCESS_KEY)
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', SECRET_KEY)
    monkeypatch.setenv('AWS_DEFAULT_REGION', REGION)

    with WorkerProcesses() as workers:
        from_s3 = dry_run(tmp_path, f'{bucket}/{ARCHIVE_GLOB}', bucket,
                          '--s3_endpoint_url', s3_endpoint, '--s3_disable_ssl',
                          *PORTABLE_SUBPROCESS_WORKERS)

    assert workers.pids
    assert from_s3 == from_local_files


@pytest.mark.parametrize('pattern, message', [
    (f's3://{BUCKET}/segment-logs/*/*/*.avro', 'no files match'),
    ('s3://no-such-bucket/segment-logs/*/*/*.gz', 'no-such-bucket.*: no files match'),
])
def test_an_s3_pattern_that_reads_nothing_is_a_usage_error(bucket, s3_endpoint, tmp_path,
                                                           pattern, message):
    with pytest.raises(UsageError, match=message):
        dry_run(tmp_path, pattern, bucket, *s3_flags(s3_endpoint))


def test_segment_subscriptions_are_read_from_s3_as_from_a_local_file(bucket, s3_endpoint,
                                                                     archive, tmp_path):
    subscriptions = os.path.join(os.path.dirname(__file__), 'data', 'segment',
                                 'subscriptions_live_setup.json')
    s3 = boto3.client('s3', endpoint_url=s3_endpoint, region_name=REGION,
                      aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    s3.upload_file(subscriptions, BUCKET, 'config/subscriptions.json')
    pattern = os.path.join(archive.root, *ARCHIVE_GLOB.split('/'))

    from_s3 = dry_run(tmp_path / 's3', pattern, archive.root, *s3_flags(s3_endpoint),
                      '--segment_subscriptions', f'{bucket}/config/subscriptions.json')
    local = dry_run(tmp_path / 'local', pattern, archive.root,
                    '--segment_subscriptions', subscriptions)

    assert from_s3 == local and from_s3[0]['contacts'] > 0
