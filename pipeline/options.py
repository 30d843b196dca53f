"""Command-line options of the jobs, in Beam's style (`--snake_case`).

Options come in small groups; each job's parser adds the groups it needs.
A job parses its own options first and hands everything else to Beam
(`--runner`, `--direct_running_mode`, `--s3_endpoint_url`, ...). Our options
never reach Beam's parser: Beam has a `--dry_run` of its own (a test flag that
stops DataflowRunner from submitting the job). The Loops API key is
deliberately not an option: options are logged and shown in job UIs.
"""
import argparse
import datetime
import difflib
from typing import Optional

from transforms.segment.read import DAY_MS


class UsageError(Exception):
    """A problem with what the user asked for: printed as is, exit status 2."""


def job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix of one of our options must not swallow a
    # Beam option (or the other way round).
    return argparse.ArgumentParser(
        prog=prog, description=description, allow_abbrev=False,
        epilog='Other options go to Apache Beam, e.g. --runner, --direct_running_mode, '
               '--direct_num_workers, --s3_endpoint_url, --project, --region, --temp_location.')


def parse_job_args(parser: argparse.ArgumentParser, argv: Optional[list]) -> tuple:
    """-> (our options, the words for Beam). A word that is neither one of our
    options nor one of Beam's registered pipeline options is a UsageError naming
    the closest option: Beam itself only logs "Unparseable argument" and runs on,
    so `--max_event_agee none` would run with the default, and a mistyped
    `--resubscrib` without it."""
    args, beam_args = parser.parse_known_args(argv)
    beam_parser = _beam_option_parser()
    _, unknown = beam_parser.parse_known_args(beam_args)
    if unknown:
        word = unknown[0]
        if not word.startswith('-'):
            raise UsageError(f'unexpected argument {word!r} (every option is written --name value)')
        name = word.split('=', 1)[0]
        known = _option_strings(parser) + _option_strings(beam_parser)
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f'; did you mean {closest[0]}?' if closest else f'; see {parser.prog} --help'
        raise UsageError(f'unknown option {name}{hint}')
    return args, beam_args


def _beam_option_parser() -> argparse.ArgumentParser:
    """A parser of every pipeline option Beam has registered (as Beam's own
    PipelineOptions.get_all_options builds it)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> list:
    return [option for action in parser._actions for option in action.option_strings
            if option.startswith('--')]


def add_input_options(parser):
    group = parser.add_argument_group('input')
    group.add_argument(
        '--input', action='append', default=None, metavar='PATTERN',
        help='Segment archive files to read (repeatable): local paths, gs:// or s3://, '
             'with wildcards, e.g. "s3://bucket/segment-logs/*/*/*.gz". Reads .gz NDJSON '
             '(Segment\'s archive layout), plain .json/.jsonl/.ndjson and .avro files written '
             'with schemas/segment_event.avsc; other files are skipped and counted.')
    group.add_argument(
        '--since', default=None, metavar='YYYY-MM-DD',
        help='Only received-day folders from this UTC date on (by folder name; '
             'other folders are never opened).')
    group.add_argument(
        '--until', default=None, metavar='YYYY-MM-DD',
        help='Only received-day folders up to this UTC date (inclusive).')


def add_selection_options(parser):
    group = parser.add_argument_group('selection and mapping')
    group.add_argument(
        '--types', default=None, metavar='TYPE,...',
        help='Segment call types to send (identify -> contact upsert, track -> event). '
             'Default: identify for backfill, identify,track for stream. Others are counted '
             'as filtered out.')
    group.add_argument(
        '--events', default=None, metavar='NAME,...',
        help='Track event names to keep (exact match, comma-separated). Default: all.')
    group.add_argument(
        '--mapping', default=None, metavar='FILE',
        help='YAML or JSON file overriding where each Loops field comes from '
             '(see docs/mapping.md). Default: the Segment Loops destination\'s mapping.')
    group.add_argument(
        '--segment_subscriptions', default=None, metavar='FILE',
        help='Map as a Segment "Loops (Actions)" destination does: its subscriptions as '
             'Segment\'s Public API returns them (GET /destinations/{id}/subscriptions; the '
             'whole answer or its list), a JSON file, local, gs:// or s3://. Each enabled '
             'subscription applies to the calls its trigger matches; instead of --mapping '
             '(see docs/mapping.md).')
    group.add_argument(
        '--identity', choices=('email_or_user_id', 'user_id'), default='email_or_user_id',
        help='How contacts are found: by userId, or by email when an event has no userId '
             '(default: email_or_user_id); user_id sends only events with a userId.')
    group.add_argument(
        '--ignore_integrations', action='store_true', default=False,
        help='Also send the calls whose "integrations" object kept them from Loops '
             '("Loops (Actions)": false, "Loops": false, or "All": false without either name '
             'on): Segment never gave those to Loops. Default: counted as '
             'filter/integrations_off, not sent.')


# A batch run's --max_event_age (backfill, and check, which predicts it).
DEFAULT_MAX_EVENT_AGE = '24h'


def add_safety_options(parser, *, max_event_age: str, resubscribe: bool,
                       age_against: str = 'the start of the run'):
    """What a run holds back that the account's owner would not send by hand;
    `age_against` says when an event's age is measured."""
    group = parser.add_argument_group('what is held back')
    group.add_argument(
        '--max_event_age', default=max_event_age, metavar='DURATION',
        help=f'Track events older than this (by event time, against {age_against}) are '
             'not sent, only counted: an event triggers today\'s emails whenever it happened. '
             f'A duration such as 24h, 7d, 90m, or none. Default: {max_event_age}.')
    group.add_argument(
        '--resubscribe', nargs='?', const='true', default='true' if resubscribe else 'false',
        type=yes_no, metavar='true|false',
        help='Send subscribed: true as the data says. In Loops it re-subscribes a contact who '
             'unsubscribed; opt-outs (false) are always sent. Default: '
             f'{"true" if resubscribe else "false"}.')


def add_output_options(parser):
    group = parser.add_argument_group('outputs')
    group.add_argument(
        '--dry_run', default=None, metavar='PREFIX',
        help='Send nothing: write every request that would be sent as JSON lines to files '
             'starting with PREFIX.')
    group.add_argument(
        '--dead_letter', default='dead-letter/', metavar='PREFIX',
        help='Failure records (schemas/failure.avsc) as Avro files under PREFIX. '
             'Default: dead-letter/.')
    group.add_argument(
        '--summary', default=None, metavar='PATH',
        help='Write the run\'s counters as a JSON object to PATH (also printed as a table).')


def add_coalesce_options(parser):
    parser.add_argument(
        '--no_coalesce', action='store_true', default=False,
        help='One contact upsert per identify call instead of one merged upsert per '
             'contact (still in event-time order per contact).')


def yes_no(value: str) -> bool:
    """'true'/'false' (any case) -> bool, for options that take either."""
    text = value.strip().lower()
    if text not in ('true', 'false'):
        raise argparse.ArgumentTypeError(f'expected true or false, got {value!r}')
    return text == 'true'


def utc_day_ms(value: Optional[str], option: str) -> Optional[int]:
    """'2026-11-01' -> epoch ms of 00:00 UTC that day (the received-day folder name)."""
    if value is None:
        return None
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f'{option} {value!r}: expected a date like 2026-11-01') from None
    epoch = datetime.date(1970, 1, 1)
    return (day - epoch).days * DAY_MS


def split_list(value: Optional[str]) -> Optional[list]:
    """'identify, track' -> ['identify', 'track']; None stays None."""
    if value is None:
        return None
    return [item.strip() for item in value.split(',') if item.strip()]


# Local batch runs use Beam's in-process runner directly: the DirectRunner
# would first try Prism, which downloads a binary.
DEFAULT_BATCH_RUNNER = 'FnApiRunner'


def set_default_runner(options, runner: str) -> None:
    """Uses `runner` unless the user chose one with --runner."""
    from apache_beam.options.pipeline_options import StandardOptions
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = runner


# Runners that run the job on this machine. Any other (Dataflow) runs it on
# workers elsewhere, which cannot see this machine's files.
LOCAL_RUNNERS = ('DirectRunner', 'FnApiRunner', 'BundleBasedDirectRunner',
                 'SwitchingDirectRunner', 'PrismRunner', 'PortableRunner')


def runs_locally(options) -> bool:
    """Whether the job's runner (Beam's StandardOptions) runs on this machine."""
    from apache_beam.options.pipeline_options import StandardOptions
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return name is None or name.split('.')[-1] in LOCAL_RUNNERS


def require_cloud_paths(options, paths: dict) -> None:
    """On a remote runner, output paths must be cloud paths: a local path
    would be written to a worker's own disk and lost with it."""
    if runs_locally(options):
        return
    for option, path in paths.items():
        if path and '://' not in path:
            raise UsageError(f'{option} {path!r}: workers run on other machines; give a gs:// '
                             '(or s3://) path')
