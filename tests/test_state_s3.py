"""A sync state on S3 (moto's server): read, recorded and folded through
Beam's file systems, in-process and by SDK workers in other processes; held
by one run at a time (its lease, a conditional PUT) and checked against its
manifest before anything is sent."""
import io
import os

import boto3
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import backfill
from pipeline.local.sandbox import LoopsSandbox
from pipeline.local.samples import write_archive
from pipeline.options import UsageError
from transforms.state.lease import acquire
from tests.test_portability import WorkerProcesses
from tests.test_s3 import (ACCESS_KEY, PORTABLE_SUBPROCESS_WORKERS, REGION, SECRET_KEY,
                           no_ambient_aws_credentials, s3_endpoint, s3_flags)

KEY = 'state-s3-test-key'
BUCKET = 'segment-loops-state'
__all__ = ['no_ambient_aws_credentials', 's3_endpoint']   # fixtures used here


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=12, days=2, seed=61)


@pytest.fixture
def s3(s3_endpoint):
    client = boto3.client('s3', endpoint_url=s3_endpoint, region_name=REGION,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    if BUCKET not in [b['Name'] for b in client.list_buckets()['Buckets']]:
        client.create_bucket(Bucket=BUCKET)
    return client


def state_keys(s3, prefix: str) -> list:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item['Key'] for item in listed.get('Contents', []))


def run(loops, archive, tmp_path, state, *extra):
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    return backfill.run([
        '--input', os.path.join(archive.root, 'segment-logs', '*', '*', '*.gz'),
        '--types', 'identify,track', '--max_event_age', 'none', '--state', state,
        '--loops_base_url', loops.base_url, '--loops_api_key_file', str(key_file),
        '--rate_limit', '1000', '--dead_letter', str(tmp_path / 'dl') + '/', *extra],
        out=io.StringIO())


def writes(loops) -> int:
    return sum(r['method'] != 'GET' for r in loops.state()['requests'])


def refused(loops, path: str) -> int:
    """Requests to `path` Loops refused (400): the upsert and the events of
    the archive's user whose every email is invalid, sent by userId alone."""
    return sum(r['path'] == path and r['status'] == 400 for r in loops.state()['requests'])


def test_a_state_on_s3_makes_the_second_run_send_nothing_it_delivered(
        archive, s3, s3_endpoint, tmp_path):
    state = f's3://{BUCKET}/in-process/state'
    with LoopsSandbox(api_key=KEY, rate_limit=None) as loops:
        first = run(loops, archive, tmp_path, state, *s3_flags(s3_endpoint))
        sent = writes(loops)
        refused_events = refused(loops, '/v1/events/send')
        refused_upserts = refused(loops, '/v1/contacts/update')
        keys = state_keys(s3, 'in-process/state/')
        second = run(loops, archive, tmp_path, state, *s3_flags(s3_endpoint))

        assert writes(loops) - sent == first['delivery_failed']
    avro = [key for key in keys if key.endswith('.avro')]
    assert avro and all('/snapshot-' in key for key in avro)
    assert set(keys) - set(avro) == {'in-process/state/MANIFEST.json'}   # the lease is gone
    assert any(key.startswith('in-process/state/contacts/') for key in keys)
    assert any(key.startswith('in-process/state/events/') for key in keys)
    assert second['events_already_sent'] == first['events'] - refused_events > 0
    assert second['contacts'] == refused_upserts


def test_workers_in_other_processes_record_to_s3(archive, s3, s3_endpoint, tmp_path,
                                                 monkeypatch):
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', ACCESS_KEY)
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', SECRET_KEY)
    monkeypatch.setenv('AWS_DEFAULT_REGION', REGION)
    state = f's3://{BUCKET}/workers/state'
    with LoopsSandbox(api_key=KEY, rate_limit=None) as loops:
        with WorkerProcesses() as workers:
            first = run(loops, archive, tmp_path, state, '--s3_endpoint_url', s3_endpoint,
                        '--s3_disable_ssl', *PORTABLE_SUBPROCESS_WORKERS)
        sent = writes(loops)
        refused_events = refused(loops, '/v1/events/send')
        second = run(loops, archive, tmp_path, state, *s3_flags(s3_endpoint))
        assert writes(loops) - sent == first['delivery_failed']

    assert workers.pids
    assert second['events_already_sent'] == first['events'] - refused_events > 0


def test_an_s3_state_is_refused_where_workers_cannot_reach_it(archive, tmp_path):
    with pytest.raises(UsageError, match=r's3:// paths \(--state, --contacts_csv\) cannot'):
        backfill.run(['--input', os.path.join(archive.root, 'segment-logs', '*', '*', '*.gz'),
                      '--dry_run', str(tmp_path / 'out'), '--state', f's3://{BUCKET}/x',
                      '--direct_running_mode=multi_processing'], out=io.StringIO())


def test_a_second_run_on_an_s3_state_in_use_is_refused_before_any_request(
        archive, s3, s3_endpoint, tmp_path):
    state = f's3://{BUCKET}/in-use/state'
    with acquire(state, 'backfill (the other run)',
                 options=PipelineOptions(s3_flags(s3_endpoint))):
        with LoopsSandbox(api_key=KEY, rate_limit=None) as loops:
            with pytest.raises(UsageError, match=r'is in use by another run: .* running '
                                                 r'"backfill \(the other run\)"'):
                run(loops, archive, tmp_path, state, *s3_flags(s3_endpoint))
            assert loops.state()['requests'] == []
    assert state_keys(s3, 'in-use/state/') == []


def test_a_deleted_s3_state_file_is_named_before_any_request(archive, s3, s3_endpoint, tmp_path):
    state = f's3://{BUCKET}/damaged/state'
    with LoopsSandbox(api_key=KEY, rate_limit=None) as loops:
        run(loops, archive, tmp_path, state, *s3_flags(s3_endpoint))
        sent = len(loops.state()['requests'])
        deleted = next(key for key in state_keys(s3, 'damaged/state/contacts/'))
        s3.delete_object(Bucket=BUCKET, Key=deleted)
        with pytest.raises(UsageError) as refused:
            run(loops, archive, tmp_path, state, *s3_flags(s3_endpoint))
        assert len(loops.state()['requests']) == sent

    assert f'The sync state {state} is damaged:' in str(refused.value)
    assert f'  {deleted[len("damaged/state/"):]}: missing (the manifest lists it' in str(
        refused.value)
