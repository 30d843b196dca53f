"""A mistyped option is a usage error before anything runs, on every job.

Beam only logs "Unparseable argument" for a word it does not know and runs on,
so without this check `--max_event_agee none` ran with the 24h default and
`--resubscrib` without re-subscribing.
"""
import pytest

from pipeline import cli
from pipeline.backfill import backfill_parser
from pipeline.options import UsageError, parse_job_args

JOBS = {  # each job with valid options of its own
    'backfill': ['backfill', '--input', 'none/*.gz'],
    'stream': ['stream', '--subscription', 'projects/p/subscriptions/s'],
    'check': ['check', '--input', 'none/*.gz'],
    'replay': ['replay', '--dead_letter', 'none/'],
    'state compact': ['state', 'compact', '--state', 'none/'],
}


@pytest.mark.parametrize('job', JOBS)
def test_a_mistyped_option_stops_every_job_before_it_runs(job, capsys):
    status = cli.main(JOBS[job] + ['--max_event_agee', 'none'])
    err = capsys.readouterr().err
    assert status == 2
    assert 'unknown option --max_event_agee' in err


@pytest.mark.parametrize('argv, message', [
    (['--resubscrib'], 'unknown option --resubscrib; did you mean --resubscribe?'),
    (['--max_event_agee', 'none'], 'unknown option --max_event_agee; did you mean --max_event_age?'),
    (['--typess=identify'], 'unknown option --typess; did you mean --types?'),
    (['--s3_endpoint_ulr', 'http://x'], 'did you mean --s3_endpoint_url?'),
    (['--frobnicate'], 'unknown option --frobnicate; see segment-loops backfill --help'),
    (['identify'], "unexpected argument 'identify'"),
])
def test_the_error_names_the_closest_option(argv, message):
    with pytest.raises(UsageError) as error:
        parse_job_args(backfill_parser(), ['--input', 'x'] + argv)
    assert message in str(error.value)


def test_beams_own_options_pass_through():
    beam_words = ['--runner', 'FnApiRunner', '--direct_running_mode=multi_processing',
                  '--direct_num_workers', '2', '--s3_endpoint_url', 'http://127.0.0.1:1',
                  '--temp_location', '/tmp/t', '--project', 'p', '--region', 'europe-west1',
                  '--experiments=use_runner_v2']
    args, beam_args = parse_job_args(backfill_parser(), ['--input', 'x', '--types', 'identify']
                                     + beam_words)
    assert args.input == ['x'] and args.types == 'identify'
    assert beam_args == beam_words
