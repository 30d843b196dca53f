"""The backfill on Beam's portable runner with its workers in separate
processes (`--direct_running_mode=multi_processing`, as on Dataflow): the
same requests, the same Loops state and the same counters as in-process.

A worker process sees only what the pipeline carries: nothing the launching
process set up (module globals, clients, environment read at launch, local
files other than the inputs) can leak into a result here unnoticed.
"""
import collections
import glob
import io
import json
import os
import threading

import pytest

from pipeline import backfill
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from pipeline.summary import unaccounted
from transforms.core.kinds import CONTACT_UPSERT, EVENT_SEND
from transforms.core.sinks import read_failure_records

WORKERS = 2
MULTI_PROCESSING = ['--direct_running_mode=multi_processing', f'--direct_num_workers={WORKERS}']
API_KEY = 'portability-test-key'


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=10, days=2, seed=23)


def archive_pattern(manifest):
    # */*/* also matches the README.txt in a day folder: skipping it is
    # part of what must come out the same.
    return os.path.join(manifest.root, 'segment-logs', '*', '*', '*')


def _child_worker_pids() -> set:
    """Pids of this process's children running Beam's SDK worker (Linux /proc)."""
    me, found = str(os.getpid()), set()
    for stat_path in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat_path, encoding='utf-8') as f:
                parent = f.read().rsplit(')', 1)[1].split()[1]
            if parent != me:
                continue
            pid_dir = os.path.dirname(stat_path)
            with open(os.path.join(pid_dir, 'cmdline'), 'rb') as f:
                if b'sdk_worker_main' in f.read():
                    found.add(int(os.path.basename(pid_dir)))
        except (OSError, IndexError):  # the process ended while we looked
            continue
    return found


class WorkerProcesses:
    """Records, while active, the SDK worker subprocesses this process starts."""

    def __enter__(self):
        self.pids = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._done.wait(0.2):
            self.pids |= _child_worker_pids()

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join()


def run_backfill(argv, runner_args):
    """backfill.run with the runner options; returns (summary, worker pids seen)."""
    with WorkerProcesses() as workers:
        summary = backfill.run([*argv, *runner_args], out=io.StringIO())
    return summary, workers.pids


def dry_run(tmp_path, manifest, runner_args):
    """(summary, sorted request lines, sorted failure records, worker pids)."""
    summary, pids = run_backfill(
        ['--input', archive_pattern(manifest), '--types', 'identify,track', '--max_event_age', 'none',
         '--dry_run', str(tmp_path / 'requests'), '--dead_letter', str(tmp_path / 'dl') + '/'],
        runner_args)
    requests = sorted(line for path in glob.glob(str(tmp_path / 'requests*'))
                      for line in open(path, encoding='utf-8'))
    # failed_at is the wall-clock time of the failure: the one field that differs.
    failures = sorted(json.dumps({k: v for k, v in record.items() if k != 'failed_at'},
                                 sort_keys=True)
                      for record in read_failure_records(str(tmp_path / 'dl') + '/'))
    return summary, requests, failures, pids


def test_dry_run_in_worker_processes_matches_in_process(tmp_path, archive):
    in_process = dry_run(tmp_path / 'in_process', archive, [])
    multi = dry_run(tmp_path / 'multi', archive, MULTI_PROCESSING)

    summary, requests, failures, pids = in_process
    assert not pids
    assert len(multi[3]) >= WORKERS
    assert multi[:3] == in_process[:3]
    assert summary['read'] == archive.lines and unaccounted(summary) == 0
    assert summary['files'] == len(archive.files) and summary['files_skipped_not_archive'] == 1
    assert len(requests) == summary['contacts'] + summary['events'] > 0
    assert len(failures) == (summary['parse_failed'] + summary['map_failed']
                             + summary.get('refused/invalid_email', 0)) > 0


def loops_view(state: dict) -> dict:
    """What a Loops team holds and was sent, without what depends on timing:
    server-made ids, arrival times and the order in which requests arrived."""
    user_ids = {c['id']: c['userId'] for c in state['contacts']}
    contacts = sorted((json.dumps({k: v for k, v in c.items() if k != 'id'}, sort_keys=True)
                       for c in state['contacts']))
    events = sorted(json.dumps(dict({k: v for k, v in e.items()
                                     if k not in ('contact_id', 'received_at')},
                                    contact=user_ids[e['contact_id']]), sort_keys=True)
                    for e in state['events'])
    requests = collections.Counter((r['method'], r['path'], r['status'], r['idempotency_key'])
                                   for r in state['requests'])
    return {'contacts': contacts, 'events': events, 'requests': requests}


def events_follow_upserts(requests: list) -> bool:
    """Whether every event send reached Loops after the last contact upsert."""
    upserts = [r['t'] for r in requests if r['path'] == CONTACT_UPSERT.path]
    sends = [r['t'] for r in requests if r['path'] == EVENT_SEND.path]
    return bool(upserts) and bool(sends) and max(upserts) < min(sends)


def deliver(tmp_path, manifest, runner_args, monkeypatch):
    """A real backfill into a fresh sandbox: (summary, Loops view, request log, pids)."""
    # Read once by the launching process; workers get it only through the pipeline.
    monkeypatch.setenv('LOOPS_API_KEY', API_KEY)
    with LoopsSandbox(API_KEY, rate_limit=None) as sandbox:
        summary, pids = run_backfill(
            ['--input', archive_pattern(manifest), '--types', 'identify,track', '--max_event_age', 'none',
             '--loops_base_url', sandbox.base_url, '--rate_limit', '100', '--write_shards', '2',
             '--dead_letter', str(tmp_path / 'dl') + '/'],
            runner_args)
        state = sandbox.state()
    return summary, loops_view(state), state['requests'], pids


def test_delivery_from_worker_processes_matches_in_process(tmp_path, archive, monkeypatch):
    in_process = deliver(tmp_path / 'in_process', archive, [], monkeypatch)
    multi = deliver(tmp_path / 'multi', archive, MULTI_PROCESSING, monkeypatch)

    summary, view, requests, pids = in_process
    assert not pids
    assert len(multi[3]) >= WORKERS
    assert multi[1] == view
    assert multi[0] == summary
    assert events_follow_upserts(requests) and events_follow_upserts(multi[2])
    assert unaccounted(summary) == 0
    assert summary['delivered'] + summary['delivery_failed'] == (
        summary['contacts'] + summary['events'])
    accepted = sum(n for (_, path, status, _), n in view['requests'].items()
                   if status == 200 and path in (CONTACT_UPSERT.path, EVENT_SEND.path))
    assert summary['delivered'] == accepted > 0
    assert summary['retries'] == summary['rate_limited'] == 0


def test_writers_in_worker_processes_share_the_rate_limit(tmp_path, archive, monkeypatch):
    rate, shards = 10, 2
    monkeypatch.setenv('LOOPS_API_KEY', API_KEY)
    with LoopsSandbox(API_KEY, rate_limit=rate) as sandbox:
        summary, pids = run_backfill(
            ['--input', archive_pattern(archive), '--types', 'identify,track', '--max_event_age', 'none',
             '--loops_base_url', sandbox.base_url, '--rate_limit', str(rate),
             '--write_shards', str(shards), '--dead_letter', str(tmp_path / 'dl') + '/'],
            MULTI_PROCESSING)
        requests = sandbox.state()['requests']

    assert len(pids) >= WORKERS
    # A 429 (a writer's request arriving a few ms early) is retried, never lost.
    assert summary['delivered'] + summary['delivery_failed'] == (
        summary['contacts'] + summary['events'])
    sent = sorted(r['t'] for r in requests if r['path'] in (CONTACT_UPSERT.path, EVENT_SEND.path))
    # Each writer paces its own share (rate / shards); the first request of
    # each goes out at once. Writers that each took the whole rate would
    # finish in half this time.
    assert (len(sent) - shards) / (sent[-1] - sent[0]) <= rate
