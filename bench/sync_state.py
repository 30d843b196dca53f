"""What a sync state (--state) saves: requests and time of a full, an unchanged
and a one-day incremental backfill, and the state's size per million.

    .venv/bin/python bench/sync_state.py [--users 24000] [--days 30]

Generates once, under bench-output/sync-state/, an archive of about 300k
events (--users x 12.5) over --days received days, and one more day of
--users / 30 users. Then:
  1. full: a backfill with a fresh --state that delivers everything to a
     null Loops (a local server that accepts every request at once: the
     sandbox keeps contacts in a list, too slow for 24k of them), so the
     state holds what a real first run records;
  2. unchanged: a dry run of the same archive against that state;
  3. one more day: a dry run of the archive plus the new day against it;
  and, for the processing time alone, a dry run of the full archive with an
  empty state. Requests come from each run's summary (contacts + events);
  at 10 requests/s (Loops' default) they take requests / 10 seconds, which
  the table shows beside the measured processing time.
"""
import argparse
import datetime
import io
import json
import os
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pipeline import backfill  # noqa: E402
from pipeline.local.account import DEFAULT_MAILING_LISTS  # noqa: E402
from pipeline.local.samples import write_archive  # noqa: E402
from transforms.core.text import format_duration  # noqa: E402
from transforms.state.files import list_state  # noqa: E402

OUT = os.path.join(os.path.dirname(HERE), 'bench-output', 'sync-state')
KEY = 'bench-sync-state-key'
LOOPS_RATE = 10
ANSWERS = {'/api/v1/api-key': {'success': True, 'teamName': 'null Loops'},
           '/api/v1/contacts/properties': [],
           '/api/v1/lists': [dict(item) for item in DEFAULT_MAILING_LISTS]}


class NullLoops(BaseHTTPRequestHandler):
    """Accepts every write at once; answers the preflight's reads."""
    protocol_version = 'HTTP/1.1'

    def _answer(self, payload) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer(ANSWERS.get(self.path.split('?')[0], []))

    def do_PUT(self):
        self._answer({'success': True})

    do_POST = do_PUT

    def log_message(self, *args):
        pass


def archives(users: int, days: int) -> tuple:
    """(archive root, extra day root), generated once."""
    root = os.path.join(OUT, f'archive-{users}-{days}')
    extra = os.path.join(OUT, f'extra-{users}-{days}')
    if not os.path.exists(os.path.join(root, 'done')):
        shutil.rmtree(root, ignore_errors=True)
        write_archive(root, users=users, days=days, seed=7, keep_events=False)
        open(os.path.join(root, 'done'), 'w').close()
    if not os.path.exists(os.path.join(extra, 'done')):
        shutil.rmtree(extra, ignore_errors=True)
        write_archive(extra, users=max(1, users // days), days=1, seed=8, keep_events=False,
                      start_day=_day_after('2026-11-01', days))
        open(os.path.join(extra, 'done'), 'w').close()
    return root, extra


def _day_after(start: str, days: int) -> str:
    return (datetime.date.fromisoformat(start) + datetime.timedelta(days=days)).isoformat()


def pattern(root: str) -> str:
    return os.path.join(root, 'segment-logs', '*', '*', '*.gz')


def backfill_run(inputs: list, *extra) -> tuple:
    """(summary, wall seconds) of one backfill in this process."""
    argv = ['--types', 'identify,track', '--max_event_age', 'none',
            '--dead_letter', os.path.join(OUT, 'dead-letter') + '/', *extra]
    for root in inputs:
        argv += ['--input', pattern(root)]
    started = time.monotonic()
    summary = backfill.run(argv, out=io.StringIO())
    return summary, time.monotonic() - started


def dry_run(inputs: list, state: str) -> tuple:
    out = os.path.join(OUT, 'dry-run')
    shutil.rmtree(out, ignore_errors=True)
    return backfill_run(inputs, '--dry_run', out + '/', '--state', state)


def full_delivery(root: str, state: str) -> tuple:
    server = ThreadingHTTPServer(('127.0.0.1', 0), NullLoops)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key_file = os.path.join(OUT, 'key')
    with open(key_file, 'w') as f:
        f.write(KEY)
    try:
        return backfill_run([root], '--state', state, '--rate_limit', '100000',
                            '--max_in_flight', '16',
                            '--loops_base_url', f'http://127.0.0.1:{server.server_port}/api',
                            '--loops_api_key_file', key_file)
    finally:
        server.shutdown()
        server.server_close()


def sizes(state: str) -> tuple:
    """(contact facts bytes, event facts bytes) of a state."""
    listing = list_state(state)
    contacts = sum(f.size_in_bytes for f in listing.contacts)
    return contacts, listing.size_in_bytes - contacts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--users', type=int, default=24_000)
    parser.add_argument('--days', type=int, default=30)
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    root, extra = archives(args.users, args.days)
    state, empty = os.path.join(OUT, 'state'), os.path.join(OUT, 'empty-state')
    for path in (state, empty):
        shutil.rmtree(path, ignore_errors=True)
    print('full delivery to a null Loops...', file=sys.stderr)
    full, full_wall = full_delivery(root, state)
    contact_bytes, event_bytes = sizes(state)
    print('dry runs...', file=sys.stderr)
    rows = [('full (empty state)', *dry_run([root], empty)),
            ('unchanged', *dry_run([root], state)),
            ('one more day', *dry_run([root, extra], state))]
    print_table(full, full_wall, rows)
    print_sizes(full, contact_bytes, event_bytes)


def print_table(full: dict, full_wall: float, rows: list) -> None:
    print(f'sync state: {full["read"]:,} lines read, {full["contacts"]:,} contacts, '
          f'{full["events"]:,} events (full run delivered to a null Loops in '
          f'{format_duration(full_wall)})')
    header = ('run', 'requests', f'at {LOOPS_RATE}/s', 'unchanged', 'already sent',
              'processing s')
    print('| ' + ' | '.join(header) + ' |')
    print('|---|' + '---:|' * (len(header) - 1))
    for name, summary, wall in rows:
        requests = summary['contacts'] + summary['events']
        print(f'| {name} | {requests:,} | {format_duration(requests / LOOPS_RATE)} | '
              f'{summary.get("contacts_unchanged", 0):,} | '
              f'{summary.get("events_already_sent", 0):,} | {wall:.1f} |')


def print_sizes(full: dict, contact_bytes: int, event_bytes: int) -> None:
    contacts = full['contacts'] or 1
    events = full['events'] or 1
    print(f'state after the full run: contact facts {contact_bytes:,} bytes '
          f'({contact_bytes / contacts:.0f} bytes per contact, '
          f'{contact_bytes / contacts:.0f} MB per million contacts); event facts '
          f'{event_bytes:,} bytes ({event_bytes / events:.1f} bytes per event, '
          f'{event_bytes / events:.0f} MB per million events)')


if __name__ == '__main__':
    main()
