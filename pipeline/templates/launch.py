"""Flex Template entry point: starts `segment-loops backfill` or `stream` on Dataflow.

Dataflow's template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE)
with the template's parameters as `--name=value` arguments, next to Dataflow's
own (`--project`, `--region`, `--temp_location`, `--sdk_container_image`,
...). Which job it starts comes from SEGMENT_LOOPS_COMMAND, set when the image
is built (`--build-arg COMMAND=backfill|stream`, see the Dockerfile).

The launcher must exit once the job is submitted (Dataflow's docs: a launcher
that waits for the job keeps the template from running), so this submits the
job and returns; the job's counters are in the Dataflow console.
"""
import argparse
import os
import sys
from typing import Callable

from pipeline import backfill, stream
from pipeline.cli import EXIT_USAGE, configure_logging
from pipeline.options import UsageError

COMMAND_ENV = 'SEGMENT_LOOPS_COMMAND'
DEFAULT_RUNNER = 'DataflowRunner'
FLAG_VALUES = {'true': True, 'false': False}


def start_backfill(argv: list):
    """Submits the backfill and returns at once, instead of waiting for the
    job as `backfill.run` does; the job holds its sync state's lease
    itself (pipeline/state.py, hand_over)."""
    return backfill.start(argv, hand_over_lease=True)[0]


# command -> (its option parser, what submits it without waiting)
COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable]] = {
    'backfill': (backfill.backfill_parser, start_backfill),
    'stream': (stream.stream_parser, stream.start),
}


def job_options(parser: argparse.ArgumentParser) -> list:
    """The parser's options (argparse actions), --help aside."""
    # argparse has no public listing of a parser's arguments.
    return [action for action in parser._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)]


def is_flag(action: argparse.Action) -> bool:
    """Whether an option takes no value (`--no_coalesce`)."""
    return action.nargs == 0 and action.const is True


def flag_options(parser: argparse.ArgumentParser) -> frozenset:
    """The option strings of the parser's value-less options."""
    return frozenset(option for action in job_options(parser) if is_flag(action)
                     for option in action.option_strings)


def template_argv(argv: list, flags: frozenset) -> list:
    """Template arguments -> the job's arguments.

    A template passes every parameter as `--name=value`: `--flag=true`
    becomes `--flag` and `--flag=false` is left out. Without a `--runner`,
    the job runs on Dataflow (the CLI's local default would run it inside the
    launcher).
    """
    job_argv = []
    for arg in argv:
        option, has_value, value = arg.partition('=')
        if option in flags and has_value:
            if value.lower() not in FLAG_VALUES:
                raise UsageError(f'{option}: expected true or false, got {value!r}')
            if FLAG_VALUES[value.lower()]:
                job_argv.append(option)
            continue
        job_argv.append(arg)
    if not any(arg == '--runner' or arg.startswith('--runner=') for arg in job_argv):
        job_argv.append(f'--runner={DEFAULT_RUNNER}')
    return job_argv


def main(argv: list = None, command: str = None) -> int:
    """Submits the job named by `command` (default: $SEGMENT_LOOPS_COMMAND)
    with the template's arguments; 0 once submitted, 2 for a usage error."""
    argv = sys.argv[1:] if argv is None else argv
    command = command or os.environ.get(COMMAND_ENV, '')
    if command not in COMMANDS:
        print(f'{COMMAND_ENV} must be one of {", ".join(COMMANDS)}, not {command!r}',
              file=sys.stderr)
        return EXIT_USAGE
    configure_logging()
    parser, start = COMMANDS[command]
    try:
        start(template_argv(argv, flag_options(parser())))
    except UsageError as error:
        print(f'segment-loops {command}: error: {error}', file=sys.stderr)
        return EXIT_USAGE
    print(f'segment-loops {command}: job submitted.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
