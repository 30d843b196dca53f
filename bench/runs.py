"""What the processing benchmarks share: generated archives (made once under
bench-output/ and reused), the commands they time, and measuring one whole
process tree (wall and CPU seconds, peak memory, the load before it)."""
import glob
import hashlib
import json
import math
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass

from pipeline.local.samples import write_archive, write_hot_user_archive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, 'bench-output')
PYTHON = os.path.join(ROOT, '.venv', 'bin', 'python')
EVENTS_PER_USER = 12            # write_archive gives 10 to 15 per user, 12.5 on average
DAYS, FILES_PER_DAY = 30, 3
PAGE_SIZE = os.sysconf('SC_PAGE_SIZE')
MODES = {
    'in-process': ['--direct_running_mode', 'in_memory', '--direct_num_workers', '1'],
    '2 processes': ['--direct_running_mode', 'multi_processing', '--direct_num_workers', '2'],
}


@dataclass
class Archive:
    """A generated archive: the glob of its files and its line counts."""
    pattern: str
    lines: int
    events: int


@dataclass
class Run:
    """One whole-process run: seconds, CPU seconds of its tree, peak memory, load before."""
    wall: float
    cpu: float
    peak_tree_mb: float
    peak_process_mb: float
    load: float


def _cached(root: str, write) -> Archive:
    manifest = os.path.join(root, 'manifest.json')
    if not os.path.exists(manifest):
        print(f'generating {root} ...', flush=True)
        written = write(root)
        counts = {'lines': written.lines,
                  'events': written.lines - written.invalid_lines - written.duplicate_lines}
        with open(manifest, 'w', encoding='utf-8') as out:
            json.dump(counts, out)
    with open(manifest, encoding='utf-8') as f:
        counts = json.load(f)
    return Archive(os.path.join(root, 'segment-logs', '*', '*', '*'), **counts)


def archive_for(events: int, seed: int = 7) -> Archive:
    """The archive of at least `events` events of ordinary users."""
    users = math.ceil(events / EVENTS_PER_USER)
    return _cached(os.path.join(OUTPUT, f'archive-{users}-users-seed{seed}'),
                   lambda root: write_archive(root, users, DAYS, seed,
                                              files_per_day=FILES_PER_DAY, keep_events=False))


def hot_archive_for(hot_events: int, users: int = 300, seed: int = 7) -> Archive:
    """An archive where one userId has `hot_events` events beside `users` ordinary users."""
    return _cached(os.path.join(OUTPUT, f'hot-{hot_events}-events-{users}-users-seed{seed}'),
                   lambda root: write_hot_user_archive(root, hot_events, users=users,
                                                       days=DAYS, seed=seed))


def load_average() -> float:
    return os.getloadavg()[0]


def _tree_rss(root_pid: int) -> tuple:
    """(sum, largest) resident bytes of `root_pid` and all its descendants,
    walking down /proc/<pid>/task/<tid>/children (Linux)."""
    sizes, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        try:
            with open(f'/proc/{pid}/statm', encoding='ascii') as f:
                sizes.append(int(f.read().split()[1]) * PAGE_SIZE)
            for task in os.listdir(f'/proc/{pid}/task'):
                with open(f'/proc/{pid}/task/{task}/children', encoding='ascii') as f:
                    stack.extend(int(child) for child in f.read().split())
        except (OSError, ValueError):  # the process ended while we looked
            continue
    return sum(sizes), max(sizes, default=0)


def measure(command: list, log_path: str) -> Run:
    """Runs `command` to completion (stdout and stderr to `log_path`), sampling
    the memory of its process tree every 0.2 s. Raises CalledProcessError."""
    load = load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peaks = [0, 0]
    started = time.monotonic()
    with open(log_path, 'w', encoding='utf-8') as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        done = threading.Event()

        def sample():
            while not done.wait(0.2):
                total, largest = _tree_rss(process.pid)
                peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        status = process.wait()
        wall = time.monotonic() - started
        done.set()
        sampler.join()
    if status != 0:
        with open(log_path, encoding='utf-8') as f:
            raise subprocess.CalledProcessError(status, command, output=f.read()[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, peaks[0] / 2 ** 20, peaks[1] / 2 ** 20, load)


def backfill_command(archive: Archive, out: str, extra: list) -> list:
    """A dry-run backfill of identify and track calls of any age into `out`."""
    return [PYTHON, '-m', 'pipeline', 'backfill', '--input', archive.pattern,
            '--types', 'identify,track', '--max_event_age', 'none',
            '--dry_run', os.path.join(out, 'requests'), '--dead_letter', os.path.join(out, 'dead/'),
            '--summary', os.path.join(out, 'summary.json'), *extra]


def loop_command(script: str, archive: Archive, out: str) -> list:
    """One of the benchmark's reference loops (bench/<script>.py) into `out`,
    doing what backfill_command does (the straightforward loop always sends
    identify and track calls of any age; the plain loop is told to)."""
    types = ['--types', 'identify,track'] if script == 'plain_loop' else []
    return [PYTHON, os.path.join(ROOT, 'bench', f'{script}.py'), '--input', archive.pattern,
            '--output', out, *types]


def requests_in(out: str) -> set:
    """The requests written under `out`, each as canonical JSON (key order and
    spacing aside): what they mean, whichever program wrote them."""
    requests = set()
    for path in glob.glob(os.path.join(out, 'requests*')):
        with open(path, encoding='utf-8') as f:
            requests.update(json.dumps(json.loads(line), sort_keys=True) for line in f)
    return requests


def digest(requests: set) -> str:
    return hashlib.sha256('\n'.join(sorted(requests)).encode('utf-8')).hexdigest()


def fresh_directory(*parts: str) -> str:
    path = os.path.join(OUTPUT, *parts)
    subprocess.run(['rm', '-rf', path], check=True)
    os.makedirs(path)
    return path
