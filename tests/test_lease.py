"""One writer per sync state: the lease (transforms/state/lease.py) on local
disk, on S3 (moto's server) and on GCS (tests/fake_gcs.py, which enforces
generation preconditions as GCS documents them)."""
import datetime
import getpass
import json
import multiprocessing
import os
import socket
import threading
import time
import uuid

import boto3
from botocore.exceptions import NoCredentialsError
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tests.fake_gcs import FakeBucket
from tests.test_s3 import (ACCESS_KEY, REGION, SECRET_KEY, no_ambient_aws_credentials,
                           s3_endpoint, s3_flags)
from transforms.state.lease import (Lease, LeaseError, LeaseHeld, LeaseLost, acquire,
                                    parse_record)
from transforms.state.lease_stores import GCSStore, S3Store, store_for

BUCKET = 'segment-loops-lease'
__all__ = ['no_ambient_aws_credentials', 's3_endpoint']   # fixtures used here
SHORT_TTL = 0.3          # for leases a test lets expire
RENEWED_TTL = 0.9        # for leases a test keeps renewed (every 0.3 s)


class LocalState:
    def __init__(self, root):
        self.prefix = os.path.join(str(root), 'state')
        self.location = self.prefix + '/LEASE'

    def store(self):
        return store_for(self.prefix)

    def stored(self):
        try:
            with open(self.location, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put(self, data: bytes):
        os.makedirs(self.prefix, exist_ok=True)
        with open(self.location, 'wb') as f:
            f.write(data)


class S3State:
    def __init__(self, endpoint):
        self.options = PipelineOptions(s3_flags(endpoint))
        self.client = boto3.client('s3', endpoint_url=endpoint, region_name=REGION,
                                   aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        if BUCKET not in [b['Name'] for b in self.client.list_buckets()['Buckets']]:
            self.client.create_bucket(Bucket=BUCKET)
        self.key = f'{uuid.uuid4().hex}/state/LEASE'
        self.prefix = f's3://{BUCKET}/{self.key[:-len("/LEASE")]}'
        self.location = f's3://{BUCKET}/{self.key}'

    def store(self):
        # One client for the test's runs: building one per run costs a tenth of a second.
        return S3Store(self.client, BUCKET, self.key)

    def stored(self):
        try:
            return self.client.get_object(Bucket=BUCKET, Key=self.key)['Body'].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def put(self, data: bytes):
        self.client.put_object(Bucket=BUCKET, Key=self.key, Body=data)


class GCSState:
    def __init__(self):
        self.bucket = FakeBucket('segment-loops-lease')
        self.prefix = 'gs://segment-loops-lease/state'
        self.location = self.prefix + '/LEASE'

    def store(self):
        return GCSStore(self.bucket, 'state/LEASE')

    def stored(self):
        live = self.bucket.objects.get('state/LEASE')
        return live[0] if live else None

    def put(self, data: bytes):
        self.bucket.blob('state/LEASE').upload_from_string(data)


@pytest.fixture(params=['local', 's3', 'gcs'])
def state(request, tmp_path):
    if request.param == 'local':
        return LocalState(tmp_path)
    if request.param == 's3':
        return S3State(request.getfixturevalue('s3_endpoint'))
    return GCSState()


def take(state, command='backfill --since 2025-01-01', **kwargs) -> Lease:
    """A run's acquire: with a store of its own, as another process builds."""
    return acquire(state.prefix, command, store=state.store(), **kwargs)


def stored_token(state):
    data = state.stored()
    return None if data is None else json.loads(data)['token']


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


def race(count: int, attempt) -> list:
    """What attempt(i) returned or raised, for `count` threads let go at once."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(i):
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_the_lease_names_its_holder_and_when_it_expires(state):
    lease = take(state, ttl_seconds=120)

    stored = json.loads(state.stored())
    assert lease.location == state.location
    assert stored == {
        'holder': f'{getpass.getuser()}@{socket.gethostname()}', 'pid': os.getpid(),
        'token': lease.record.token, 'command': 'backfill --since 2025-01-01',
        'acquired_at': stored['acquired_at'], 'renewed_at': stored['acquired_at'],
        'expires_at': stored['expires_at'], 'ttl_seconds': 120.0}
    assert len(lease.record.token) == 16 and lease.note == ''
    assert (datetime.datetime.fromisoformat(stored['expires_at'])
            - datetime.datetime.fromisoformat(stored['acquired_at'])).total_seconds() == 120
    assert stored['acquired_at'].endswith('Z')


def test_a_second_run_is_refused_with_who_holds_it_and_how_to_take_over(state):
    first = take(state)
    before = state.stored()

    with pytest.raises(LeaseHeld) as refused:
        take(state, 'stream')

    stored = json.loads(before)
    assert str(refused.value) == (
        f'The sync state {state.prefix} is in use by another run: {stored["holder"]} '
        f'(pid {os.getpid()}, run {first.record.token}) running "backfill --since 2025-01-01", '
        f'since {stored["acquired_at"]}, last renewed {stored["renewed_at"]}, expires at '
        f'{stored["expires_at"]} unless renewed (lease: {state.location}).\n'
        'Only one run at a time may use a sync state: two would send the same data to Loops. '
        'Wait for that run to end. If it died without releasing the lease, the lease expires '
        f'at {stored["expires_at"]} and the next run takes it over; if you are sure that run '
        'is dead and cannot wait, run again with --break_lease.')
    assert refused.value.record == first.record
    assert state.stored() == before


def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_it_lost(state, caplog):
    old = take(state, ttl_seconds=SHORT_TTL)
    expired_at = json.loads(state.stored())['expires_at']
    time.sleep(SHORT_TTL + 0.1)

    new = take(state, 'stream')

    assert new.note == (
        f'Took over the lease of the sync state {state.prefix}: the lease of '
        f'{old.record.describe()} expired at {expired_at} without being released (that run '
        'stopped without releasing it, or could not renew it).')
    assert new.note in caplog.text
    assert stored_token(state) == new.record.token
    with pytest.raises(LeaseLost, match='taken over by .* running "stream"'):
        old.renew()
    assert old.lost and 'this run must stop using the state' in old.lost_reason
    assert old.release() is False
    assert stored_token(state) == new.record.token


def test_break_lease_takes_a_live_lease_and_the_old_holder_cannot_delete_it(state):
    old = take(state)

    new = take(state, 'backfill --since 2025-02-01', break_lease=True)

    assert new.note.startswith(
        f'Broke the lease of the sync state {state.prefix} held by {old.record.describe()} '
        '(last renewed ')
    assert new.note.endswith('as --break_lease asked: if that run is still alive, it finds '
                             'its lease lost at its next renewal and stops.')
    assert old.release() is False
    assert old.lost_reason == (
        f'The lease of the sync state {state.prefix} was taken over by '
        f'{new.record.describe()} at {json.loads(state.stored())["acquired_at"]}: this run '
        'must stop using the state.')
    assert stored_token(state) == new.record.token
    assert new.release() is True
    assert state.stored() is None
    assert take(state, 'stream').record.command == 'stream'


def test_renewal_keeps_the_lease_past_its_ttl_and_the_end_releases_it(state):
    with take(state, ttl_seconds=RENEWED_TTL) as lease:
        first_expiry = lease.record.expires_at
        wait_for(lambda: parse_record(state.stored()).expires_at > first_expiry)
        with pytest.raises(LeaseHeld):
            take(state, 'stream')
        renewed = parse_record(state.stored())
        assert renewed.token == lease.record.token
        assert renewed.acquired_at == lease.record.acquired_at < renewed.renewed_at

    assert state.stored() is None
    assert not lease.lost and lease.renew_error is None


def test_the_renewing_thread_reports_a_broken_lease_and_leaves_the_new_one(state):
    calls = []
    with take(state, ttl_seconds=RENEWED_TTL, on_lost=calls.append) as old:
        new = take(state, 'stream', break_lease=True)
        wait_for(lambda: calls)
        assert calls == [old] and old.lost
        assert f'taken over by {new.record.describe()}' in old.lost_reason

    assert stored_token(state) == new.record.token
    with pytest.raises(LeaseLost):
        old.renew()


def test_of_runs_racing_for_a_free_state_exactly_one_wins(state):
    for _ in range(3):
        results = race(4, lambda i: take(state, f'run {i}'))

        winners = [r for r in results if isinstance(r, Lease)]
        assert len(winners) == 1, results
        refused = [r for r in results if not isinstance(r, Lease)]
        assert all(isinstance(r, LeaseHeld) and r.record == winners[0].record for r in refused)
        assert stored_token(state) == winners[0].record.token
        assert winners[0].release() is True


def test_of_runs_racing_for_an_expired_lease_exactly_one_wins(state):
    old = take(state, ttl_seconds=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.1)

    results = race(4, lambda i: take(state, f'run {i}'))

    winners = [r for r in results if isinstance(r, Lease)]
    assert len(winners) == 1, results
    assert all(isinstance(r, LeaseHeld) and r.record == winners[0].record
               for r in results if r is not winners[0])
    assert stored_token(state) == winners[0].record.token
    with pytest.raises(LeaseLost):
        old.renew()


@pytest.mark.parametrize('content, reason', [
    (b'\x00\xffgarbage', 'not JSON: '),
    (b'{"holder": "alice@host", "pid": 7', 'not JSON: '),
    (b'{"holder": "alice@host"}', 'no pid, token, command, acquired_at, renewed_at, '
                                  'expires_at, ttl_seconds'),
    (json.dumps({'holder': 'a@h', 'pid': 1, 'token': 't', 'command': 'c',
                 'acquired_at': 'yesterday', 'renewed_at': 'yesterday',
                 'expires_at': 'yesterday', 'ttl_seconds': 1}).encode(),
     "Invalid isoformat string: 'yesterday'"),
])
def test_a_damaged_lease_is_refused_naming_the_file_and_break_lease_replaces_it(
        state, content, reason):
    state.put(content)

    with pytest.raises(LeaseHeld) as refused:
        take(state)

    message = str(refused.value)
    assert message.startswith(f'The sync state {state.prefix} has a lease file '
                              f'{state.location} that is not a valid lease ({reason}')
    assert message.endswith(
        'It may belong to a run that is using this state, so this run does not start. If no '
        'other run is using this state, run again with --break_lease to replace it.')
    assert refused.value.record is None
    assert state.stored() == content

    lease = take(state, break_lease=True)
    assert lease.note.startswith(f'Replaced the damaged lease file {state.location} of the '
                                 f'sync state {state.prefix} ({reason}')
    assert stored_token(state) == lease.record.token


class AnswerLost:
    """A store whose conditional writes succeed but answer "precondition
    failed": what a client sees when it retries a write whose first answer
    was lost."""

    def __init__(self, store):
        self.store, self.location = store, store.location

    def create_if_absent(self, data):
        self.store.create_if_absent(data)

    def read(self):
        return self.store.read()

    def replace_if(self, data, version):
        self.store.replace_if(data, version)

    def delete_if(self, version):
        return self.store.delete_if(version)


def test_a_write_whose_answer_was_lost_is_recognised_as_this_runs(state):
    lease = acquire(state.prefix, 'stream', store=AnswerLost(state.store()))

    lease.renew()
    assert parse_record(state.stored()) == lease.record
    assert lease.release() is True
    assert state.stored() is None


def test_a_lease_needs_a_path_it_can_condition_writes_on(tmp_path):
    with pytest.raises(ValueError, match='needs a local path, gs:// or s3://, not hdfs://x/y'):
        acquire('hdfs://x/y', 'stream')
    with pytest.raises(ValueError, match='positive ttl_seconds'):
        acquire(str(tmp_path), 'stream', ttl_seconds=0)
    with pytest.raises(LeaseError, match='was released'):
        lease = acquire(str(tmp_path), 'stream')
        lease.release()
        lease.renew()


def test_the_s3_store_reaches_the_s3_of_the_jobs_options(s3_endpoint):
    state = S3State(s3_endpoint)

    lease = acquire(state.prefix, 'stream', options=state.options)

    assert stored_token(state) == lease.record.token
    with pytest.raises(NoCredentialsError):   # AWS itself, without the test's credentials
        acquire(state.prefix, 'stream')


def _take_in_process(prefix, barrier, results):
    barrier.wait()
    try:
        lease = acquire(prefix, f'process {os.getpid()}')
        results.put(('won', lease.record.token))
    except LeaseHeld as refused:
        results.put(('refused', refused.record.token))


def test_of_processes_racing_for_a_local_state_exactly_one_wins(tmp_path):
    context = multiprocessing.get_context('fork')
    barrier, results = context.Barrier(3), context.Queue()
    prefix = str(tmp_path / 'state')
    processes = [context.Process(target=_take_in_process, args=(prefix, barrier, results))
                 for _ in range(3)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=30) for _ in processes)
    for process in processes:
        process.join(timeout=30)

    with open(os.path.join(prefix, 'LEASE'), 'rb') as f:
        winner = parse_record(f.read()).token
    assert outcomes == [('refused', winner), ('refused', winner), ('won', winner)]
