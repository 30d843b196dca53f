"""`segment-loops demo`: the whole backfill, end to end, with no account.

Generates a sample Segment archive, starts a local Loops sandbox in-process
(10 requests/second, 100-300 ms latency, like the real API) whose account has
a live "Welcome" workflow, runs the backfill against it, and shows what
happened: the backfill first stops, since it would send a welcome email to
every contact it creates, then runs again with --allow_workflows Welcome.
Leaves nothing running; files go to a temporary folder that is removed at
the end.
"""
import argparse
import collections
import datetime
import os
import secrets
import sys
import tempfile
import time

from pipeline import backfill
from pipeline.workflow_guard import WorkflowsWouldRun
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from transforms.core.sinks import read_failure_records

DEMO_USERS = 30
DEMO_DAYS = 3
# The demo account's workflows: a live welcome email for every new contact,
# what most Loops accounts have (a SignupTrigger, pipeline/local/workflows.py).
DEMO_WORKFLOWS = [{'id': 'wf_welcome', 'name': 'Welcome', 'status': 'Sending',
                   'description': 'A welcome email for every new contact',
                   'trigger': {'typeName': 'SignupTrigger'}}]


def recent_start_day(days: int, today: datetime.date) -> str:
    """The first of `days` received days that end `today` (UTC), as 'YYYY-MM-DD':
    the demo's events are recent, as the events a backfill sends should be."""
    return (today - datetime.timedelta(days=days - 1)).isoformat()


def achieved_rate(requests: list) -> tuple:
    """(accepted writes, their requests per second) from the sandbox's log
    (the reads before a run are not paced)."""
    accepted = [r['t'] for r in requests if r['status'] is not None and r['status'] != 429
                and r['method'] != 'GET']
    if len(accepted) < 2:
        return len(accepted), 0.0
    return len(accepted), (len(accepted) - 1) / (max(accepted) - min(accepted))


SHOWN_FIELDS = ('userId', 'email', 'firstName', 'lastName', 'plan', 'logins', 'mailingLists')


def show_contacts(contacts: list, limit: int = 3) -> None:
    print(f'\n{len(contacts)} contacts in Loops now; the first {min(limit, len(contacts))}:')
    for contact in sorted(contacts, key=lambda c: str(c.get('userId')))[:limit]:
        shown = ', '.join(f'{k}={contact[k]!r}' for k in SHOWN_FIELDS if contact.get(k) is not None)
        others = sum(1 for k, v in contact.items() if k not in SHOWN_FIELDS and v is not None)
        print(f'  {shown} (+{others} more properties)')


def show_failures(records: list) -> None:
    by_reason = collections.Counter((r['stage'], r['reason']) for r in records)
    print(f'\n{len(records)} failure records (dead letter), by stage and reason:')
    for (stage, reason), count in sorted(by_reason.items()):
        print(f'  {stage:<8} {reason:<24} {count:>5}')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='segment-loops demo', description=__doc__)
    parser.add_argument('--users', type=int, default=DEMO_USERS)
    parser.add_argument('--keep', metavar='DIR', default=None,
                        help='write the archive, dead letter and summary to DIR and keep them')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='segment-loops-demo-') as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        today = datetime.datetime.now(datetime.timezone.utc).date()
        manifest = write_archive(os.path.join(work, 'archive'), users=args.users, days=DEMO_DAYS,
                                 seed=2026, keep_events=False,
                                 start_day=recent_start_day(DEMO_DAYS, today))
        print(f'Generated a Segment archive: {len(manifest.files)} files, {manifest.lines} lines '
              f'({manifest.invalid_lines} invalid, {manifest.duplicate_lines} duplicates).')
        key = secrets.token_urlsafe(24)
        key_file = os.path.join(tmp, 'loops-api-key')
        with open(key_file, 'w', encoding='utf-8') as f:
            f.write(key)
        with LoopsSandbox(api_key=key, rate_limit=10, latency=(0.1, 0.3), seed=1,
                          workflows=DEMO_WORKFLOWS) as sandbox:
            print(f'Started a local Loops sandbox at {sandbox.base_url} '
                  '(10 requests/s, 100-300 ms latency).\n')
            argv = [
                '--input', os.path.join(manifest.root, 'segment-logs', '*', '*', '*'),
                '--types', 'identify,track',
                '--loops_base_url', sandbox.base_url,
                '--loops_api_key_file', key_file,
                '--dead_letter', os.path.join(work, 'dead-letter') + '/',
                '--summary', os.path.join(work, 'summary.json'),
            ]
            started = time.monotonic()
            # sys.stdout as it is now: run()'s default is the one of its import.
            try:
                backfill.run(argv, out=sys.stdout)
            except WorkflowsWouldRun as stopped:
                print(f'The backfill stopped: {stopped}\n\nThe demo lets the Welcome '
                      'workflow run: --allow_workflows Welcome\n')
                started = time.monotonic()
                backfill.run(argv + ['--allow_workflows', 'Welcome'], out=sys.stdout)
            elapsed = time.monotonic() - started
            state = sandbox.state()
        show_contacts(state['contacts'])
        print(f'{len(state["events"])} events in Loops now; the Welcome workflow took in '
              f'{sum(t["workflow_name"] == "Welcome" for t in state["triggers"])} contacts.')
        show_failures(read_failure_records(os.path.join(work, 'dead-letter') + '/'))
        sent, rate = achieved_rate(state['requests'])
        print(f'\n{sent} requests accepted by Loops at {rate:.1f} requests/s '
              f'(limit 10/s); whole run {elapsed:.1f} s.')
        if args.keep:
            print(f'Archive, dead letter and summary kept in {work}')
    return 0
