"""Benchmarks 1 and 5: the backfill's processing against a plain loop, and what coalescing saves.

Generates once, under bench-output/, a Segment archive of at least --events events, then runs
--rounds rounds of whole processes on it, interleaved so that other load on the machine falls on
each alike: the plain loop (bench/plain_loop.py), and `segment-loops backfill --dry_run` in each
running mode (in-process, and two worker processes: the default for dry runs of 30 MB or more).
Per command it prints the wall time (best and median of the rounds), events per second, the ratio
to the plain loop's best, the CPU seconds of its process tree, its peak memory (the whole tree) and
the 1-minute load average before its runs; every command must write the same requests, or the
benchmark fails. Then, from the pipeline's summary, what coalescing saves: requests made against
identify events read.

    .venv/bin/python bench/processing.py [--events 300000] [--rounds 3]
"""
import argparse
import glob
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from pipeline.local.samples import write_archive

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


@dataclass
class Timings:
    """Every run of one command."""
    name: str
    runs: list = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(run.wall for run in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(run.wall for run in self.runs)


def archive_for(events: int, seed: int = 7) -> Archive:
    """The archive of at least `events` events, generated on first use and reused after."""
    users = math.ceil(events / EVENTS_PER_USER)
    root = os.path.join(OUTPUT, f'archive-{users}-users-seed{seed}')
    manifest = os.path.join(root, 'manifest.json')
    if not os.path.exists(manifest):
        print(f'generating {root} ({users} users) ...', file=sys.stderr)
        written = write_archive(root, users, DAYS, seed, files_per_day=FILES_PER_DAY,
                                keep_events=False)
        counts = {'lines': written.lines,
                  'events': written.lines - written.invalid_lines - written.duplicate_lines}
        with open(manifest, 'w', encoding='utf-8') as out:
            json.dump(counts, out)
    with open(manifest, encoding='utf-8') as f:
        counts = json.load(f)
    return Archive(os.path.join(root, 'segment-logs', '*', '*', '*'), **counts)


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
        raise subprocess.CalledProcessError(status, command, output=open(log_path).read()[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, peaks[0] / 2 ** 20, peaks[1] / 2 ** 20, load)


def requests_digest(paths: list) -> str:
    """A digest of the request lines in `paths`, whatever their order and file."""
    lines = []
    for path in paths:
        with open(path, encoding='utf-8') as f:
            lines.extend(f)
    return hashlib.sha256(''.join(sorted(lines)).encode('utf-8')).hexdigest()


def plain_command(archive: Archive, out: str) -> list:
    return [PYTHON, os.path.join(ROOT, 'bench', 'plain_loop.py'), '--input', archive.pattern,
            '--output', out]


def backfill_command(archive: Archive, out: str, extra: list) -> list:
    return [PYTHON, '-m', 'pipeline', 'backfill', '--input', archive.pattern,
            '--dry_run', os.path.join(out, 'requests'), '--dead_letter', os.path.join(out, 'dead/'),
            '--summary', os.path.join(out, 'summary.json'), *extra]


def run_rounds(archive: Archive, rounds: int, modes: dict) -> tuple:
    """Runs the plain loop and the backfill in each mode, `rounds` times each,
    interleaved; checks they all wrote the same requests. -> (timings, summary)."""
    commands = {'plain loop': None, **{f'backfill, {name}': extra for name, extra in modes.items()}}
    timings = {name: Timings(name) for name in commands}
    digests = {}
    summary = None
    for round_number in range(rounds):
        for name, extra in commands.items():
            out = os.path.join(OUTPUT, 'processing-run', name.replace(', ', '-').replace(' ', '-'))
            subprocess.run(['rm', '-rf', out], check=True)
            os.makedirs(out)
            command = (plain_command(archive, out) if extra is None
                       else backfill_command(archive, out, extra))
            run = measure(command, out + '.log')
            timings[name].runs.append(run)
            print(f'round {round_number + 1}: {name}: {run.wall:.2f}s (load {run.load:.2f})',
                  file=sys.stderr)
            written = glob.glob(os.path.join(out, 'requests*'))
            digests.setdefault(name, requests_digest(written))
            if extra is not None and summary is None:
                with open(os.path.join(out, 'summary.json'), encoding='utf-8') as f:
                    summary = json.load(f)
    if len(set(digests.values())) != 1:
        raise SystemExit(f'the commands wrote different requests: {digests}')
    return timings, summary


def processing_table(archive: Archive, timings: dict) -> str:
    plain = timings['plain loop'].best
    rows = ['| command | wall s, best | wall s, median | lines/s (best) | x plain loop (best) '
            '| CPU s (median) | peak MB, tree | peak MB, largest process | load before |',
            '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for t in timings.values():
        cpu = statistics.median(run.cpu for run in t.runs)
        tree = max(run.peak_tree_mb for run in t.runs)
        largest = max(run.peak_process_mb for run in t.runs)
        loads = ', '.join(f'{run.load:.2f}' for run in t.runs)
        rows.append(f'| {t.name} | {t.best:.2f} | {t.median:.2f} | {archive.lines / t.best:,.0f} '
                    f'| {t.best / plain:.2f} | {cpu:.1f} | {tree:.0f} | {largest:.0f} | {loads} |')
    return '\n'.join(rows)


def coalescing_table(summary: dict) -> str:
    """Benchmark 5 from a dry run's summary (identify calls only, coalescing on)."""
    identify_read = summary['read'] - summary['parse_failed'] - summary['filtered_out']
    upserts = summary['map/contact_updates']
    without = upserts - summary['duplicates']
    made = summary['contacts']
    rows = ['| identify events read | mapped to upserts | repeated messageIds dropped '
            '| requests without coalescing | requests made | requests per identify event '
            '| hours at 10/s without / with |',
            '|---:|---:|---:|---:|---:|---:|---:|',
            f'| {identify_read:,} | {upserts:,} | {summary["duplicates"]:,} | {without:,} '
            f'| {made:,} | {made / identify_read:.3f} '
            f'| {without / 36000:.2f} / {made / 36000:.2f} |']
    return '\n'.join(rows)


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, run the rounds, print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', type=int, default=300_000,
                        help='at least this many events in the archive (default 300000)')
    parser.add_argument('--rounds', type=int, default=3, help='runs of each command (default 3)')
    parser.add_argument('--modes', default=','.join(MODES),
                        help=f'backfill running modes to time, of: {", ".join(MODES)}')
    args = parser.parse_args(argv)
    modes = {name: MODES[name] for name in args.modes.split(',')}
    archive = archive_for(args.events)
    timings, summary = run_rounds(archive, args.rounds, modes)
    print(f'Benchmark 1: {archive.lines:,} lines ({archive.events:,} distinct valid events), '
          f'{args.rounds} rounds, {os.cpu_count()} cores\n')
    print(processing_table(archive, timings))
    print('\nBenchmark 5: what coalescing saves\n')
    print(coalescing_table(summary))


if __name__ == '__main__':
    main()
