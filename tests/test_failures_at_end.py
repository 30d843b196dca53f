"""Failures are visible at the end of a run: which count for the exit status,
the report (how many, where, by stage and reason, the command that sends
them again), and progress lines while Loops does not answer.

The commands run for real in a subprocess against the local Loops sandbox,
whose outages make Loops unreachable for a while.
"""
import argparse
import json
import logging
import os
import shlex

import apache_beam as beam
import pytest

from pipeline import lifecycle
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from pipeline.loops_options import add_loops_options, loops_argv
from pipeline.replay import replay_again_argv
from tests.test_edges import segment_cli
from tests.test_faults import outage_after
from transforms.core.records import NO_STAMP, ContactSequence, contact_upsert
from transforms.delivery.write import WriteToLoops
from transforms.loops.connection import LoopsConnection
from transforms.loops.credentials import ApiKey
from transforms.loops.retry import RetryPolicy

KEY = 'failures-at-end-test-key'


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    manifest = write_archive(str(tmp_path_factory.mktemp('archive')), users=12, days=1, seed=3)
    return os.path.join(manifest.root, 'segment-logs', '*', '*', '*.gz')


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / 'key'
    path.write_text(KEY)
    return str(path)


def report_lines(stdout: str) -> list:
    """The failure report: from its first line to the end of stdout."""
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if ' failure records in ' in line)
    return lines[start:]


@pytest.mark.parametrize('failures_ok', [[], ['--failures_ok']], ids=['default', 'failures_ok'])
def test_loops_unreachable_for_a_while_is_reported_with_a_replay_that_sends_the_rest(
        failures_ok, archive, key_file, tmp_path):
    dead_letter = str(tmp_path / 'dl') + '/'
    with LoopsSandbox(KEY, rate_limit=None) as loops:
        outage_after(loops, 25, 60)   # the preflight's reads, then ~20 writes, then nothing
        result = segment_cli(
            'backfill', '--input', archive, '--types', 'identify,track', '--max_event_age',
            'none', '--loops_base_url', loops.base_url, '--loops_api_key_file', key_file,
            '--rate_limit', '1000', '--max_attempts', '2', '--dead_letter', dead_letter,
            '--summary', str(tmp_path / 'summary.json'), *failures_ok)
        loops.outage(0)
        summary = json.loads((tmp_path / 'summary.json').read_text())
        report = report_lines(result.stdout)
        resend = report[-1]
        replayed = None
        if not failures_ok:
            command = shlex.split(resend.split(': ', 1)[1])
            replayed = segment_cli(*command[1:], '--replay_dead_letter',
                                   str(tmp_path / 'again') + '/', '--summary',
                                   str(tmp_path / 'replay.json'))

    unreachable = summary['dead_letter/deliver_retries_exhausted']
    assert unreachable > 0 and summary['delivery_failed'] >= unreachable
    assert result.returncode == (0 if failures_ok else lifecycle.EXIT_FAILURES), result.stderr
    assert 'Traceback' not in result.stderr
    assert report[0] == f'{summary["dead_lettered"]:,} failure records in {dead_letter}:'
    assert (f'  {unreachable:>9,}  deliver/retries_exhausted  not delivered: Loops could not '
            'be reached or did not answer in time') in report
    assert f'{summary["dead_letter/parse_invalid_json"]:>9,}  parse/invalid_json ' in '\n'.join(
        report)
    assert resend.startswith('To send what was not delivered again: segment-loops replay '
                             f'--dead_letter {dead_letter} --loops_base_url ')
    if failures_ok:
        assert 'completed with failures' not in result.stderr
        return
    assert result.stderr.splitlines()[-1] == (
        'segment-loops backfill: completed with failures (exit status 5); --failures_ok '
        'accepts them, --failures_ok http_400 only refusals')
    # The printed replay sends what Loops did not get, now that it is back:
    # Loops takes all of it but what it refuses (an event whose contact it
    # refused), which makes the replay's exit status 5 in turn.
    replay = json.loads((tmp_path / 'replay.json').read_text())
    assert replay['replayed'] == unreachable
    assert replay['recovered'] + replay['delivery_failed'] == unreachable
    assert replay['recovered'] > 0 and 'dead_letter/deliver_retries_exhausted' not in replay
    assert all(name.startswith('dead_letter/deliver_http_4') for name in replay
               if name.startswith('dead_letter/deliver_'))
    assert replayed.returncode == (lifecycle.EXIT_FAILURES if replay['delivery_failed'] else 0)
    assert (f'{replay["recovered"]} of {unreachable} replayed requests recovered.'
            in replayed.stdout)


def counts(**by_name) -> dict:
    """A summary's dead-letter figures: stage_reason=count -> dead_letter/... names."""
    return {f'dead_letter/{name}': count for name, count in by_name.items()}


def test_what_counts_for_the_exit_status():
    input_only = counts(parse_invalid_json=3, map_invalid_email=2, conform_type_mismatch=1)
    refused = {**input_only, **counts(deliver_http_400=4)}
    unreachable = {**refused, **counts(deliver_retries_exhausted=2)}
    unreadable = counts(read_truncated_file=1)

    assert lifecycle.exit_status(input_only) == 0
    assert lifecycle.needs_action(refused) == 4
    assert lifecycle.exit_status(refused) == lifecycle.EXIT_FAILURES
    assert lifecycle.exit_status(unreadable) == lifecycle.EXIT_FAILURES
    accepted = lifecycle.parse_failures_ok
    assert lifecycle.exit_status(unreachable, accepted('')) == 0      # --failures_ok
    assert lifecycle.exit_status(refused, accepted('http_400')) == 0
    assert lifecycle.needs_action(unreachable, accepted('http_400')) == 2
    assert lifecycle.needs_action(unreachable, accepted('http_400,retries_exhausted')) == 0
    assert accepted(None) == frozenset()


def test_the_report_says_how_many_where_and_what_each_reason_means():
    summary = {'read': 100, **counts(deliver_http_400=3, parse_invalid_json=12,
                                     deliver_retries_exhausted=1500)}
    report = lifecycle.failure_report(summary, 'gs://b/dl/', 'To send them again: X')

    assert report.splitlines() == [
        '1,515 failure records in gs://b/dl/:',
        '      1,500  deliver/retries_exhausted  not delivered: Loops could not be reached or '
        'did not answer in time',
        '         12  parse/invalid_json         input that cannot be sent as it is (not '
        'counted in the exit status)',
        '          3  deliver/http_400           refused by Loops: the records\' messages say '
        'why (fix, then replay with --include_permanent)',
        'To send them again: X']
    assert lifecycle.failure_report({'read': 100}, 'dl/', 'X') == ''
    assert 'run again' in lifecycle.failure_report(counts(read_unreadable_file=1), 'dl/', 'X')


def test_the_printed_commands_carry_the_connection_but_never_the_key():
    parser = argparse.ArgumentParser()
    add_loops_options(parser)
    args = parser.parse_args(['--loops_base_url', 'http://127.0.0.1:8/api', '--rate_limit', '40',
                              '--loops_api_key_file', '/keys/loops key'])

    assert loops_argv(args) == ['--loops_base_url', 'http://127.0.0.1:8/api',
                                '--loops_api_key_file', '/keys/loops key', '--rate_limit', '40']
    assert lifecycle.command_line('replay', ['--dead_letter', 'dl/', *loops_argv(args)]) == (
        "segment-loops replay --dead_letter dl/ --loops_base_url http://127.0.0.1:8/api "
        "--loops_api_key_file '/keys/loops key' --rate_limit 40")
    assert replay_again_argv(['--dead_letter', 'dl/', '--replay_dead_letter=again/',
                              '--summary', 's.json', '--max_attempts', '3'], 'again/') == [
        '--dead_letter', 'again/', '--replay_dead_letter', 'again-again/', '--max_attempts', '3']


def test_progress_lines_keep_coming_while_requests_wait_on_retries(caplog):
    sequences = [ContactSequence(f'user:u{n}', (contact_upsert(
        {'email': f'u{n}@example.com', 'userId': f'u{n}'}, f'user:u{n}', NO_STAMP, 'test'),))
        for n in range(5)]
    with LoopsSandbox(KEY, rate_limit=None) as loops:
        connection = LoopsConnection(loops.base_url, ApiKey(KEY), rate_limit=100,
                                     progress_interval=1.0)
        loops.outage(4.5)
        with caplog.at_level(logging.INFO, logger='segment_loops.delivery'):
            with beam.Pipeline('FnApiRunner') as p:
                _ = p | beam.Create(sequences) | WriteToLoops(
                    connection, label='contacts', retry_policy=RetryPolicy(30, 0.1, 0.5))
        stored = loops.state()['contacts']

    assert len(stored) == 5
    # While Loops was down nothing finished, and the lines came all the same
    # (the writer ticks every 2 s while it waits).
    lines = [r.getMessage() for r in caplog.records]
    waiting = [line for line in lines if line.startswith('contacts shard 0: sent 0/5 (0%)')]
    assert len(waiting) >= 2, lines
    assert all(', no request finished for ' in line for line in waiting)
