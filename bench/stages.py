"""Where a dry-run backfill's time goes, stage by stage (Beam's in-process runner).

Runs `segment-loops backfill --dry_run` (identify and track, --max_event_age none)
in this process on the benchmark archive, timing every bundle Beam's FnApiRunner
executes (CPU seconds of this process, which runs them all), and prints the CPU
seconds per fused stage (the steps Beam ran together), the time before the first
bundle (imports, options, the key and account checks, the pipeline's construction)
and after the last. Beside it: the straightforward loop's CPU time on the same
archive, the floor of the same work.

    .venv/bin/python bench/stages.py [--events 300000]
"""
import argparse
import collections
import os
import sys
import time
from typing import Optional

from apache_beam.runners.portability.fn_api_runner import fn_runner

from runs import archive_for, fresh_directory, loop_command, measure

# Step names as the backfill's pipeline labels them, in the order Beam's stage
# names may contain them: the first match names a stage.
STEPS = (('ProcessArchive', 'read + process'), ('ReadSegmentArchive', 'read + process'),
         ('MergePerContact', 'merge contacts'), ('ResolveLeads', 'leads'),
         ('UpsertsFromStates', 'upserts'), ('OrderRequests', 'order events'),
         ('WriteDryRun', 'write requests'), ('WriteFailures', 'write failures'))


def step_of(stage_name: str) -> str:
    for marker, step in STEPS:
        if marker in stage_name:
            return step
    return 'other Beam stages'


def timed_run(argv: list) -> tuple:
    """Runs the backfill in this process -> ({step: CPU s}, before first, total)."""
    spent = collections.Counter()
    first = []
    original = fn_runner.FnApiRunner._execute_bundle

    def execute_bundle(self, context, manager, bundle_input):
        started = time.process_time()
        if not first:
            first.append(started)
        try:
            return original(self, context, manager, bundle_input)
        finally:
            spent[step_of(manager.stage.name)] += time.process_time() - started

    fn_runner.FnApiRunner._execute_bundle = execute_bundle
    from pipeline import backfill   # the imports count, as in a run from the shell
    try:
        backfill.run(argv, out=open(os.devnull, 'w'))
    finally:
        fn_runner.FnApiRunner._execute_bundle = original
    return spent, first[0], time.process_time()


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', type=int, default=300_000)
    args = parser.parse_args(argv)
    archive = archive_for(args.events)
    floor = measure(loop_command('straightforward_loop', archive, fresh_directory('stages-loop')),
                    os.path.join(fresh_directory('stages-logs'), 'loop.log'))
    out = fresh_directory('stages-run')
    spent, before, total = timed_run([
        '--input', archive.pattern, '--types', 'identify,track', '--max_event_age', 'none',
        '--dry_run', os.path.join(out, 'requests'), '--dead_letter', os.path.join(out, 'dl/'),
        '--direct_running_mode', 'in_memory', '--direct_num_workers', '1'])
    after = total - before - sum(spent.values())
    print(f'Where the time goes: {archive.lines:,} lines, dry run, in-process; CPU seconds\n')
    print('| step | CPU s | share |')
    print('|---|---:|---:|')
    rows = [('start-up (imports, options, pipeline construction)', before)]
    rows += sorted(spent.items(), key=lambda item: -item[1])
    rows.append(('after the last bundle', after))
    for step, seconds in rows:
        print(f'| {step} | {seconds:.2f} | {seconds / total:.0%} |')
    print(f'| **backfill, in all** | **{total:.2f}** | |')
    print(f'| straightforward loop, in all (a process of its own) | {floor.cpu:.2f} | |')
    print(f'\nLoad average before: {floor.load:.2f}', file=sys.stderr)


if __name__ == '__main__':
    main()
