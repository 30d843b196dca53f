"""The `segment-loops` command (also `python -m pipeline`).

Exit statuses: 0 done; 1 the job failed; 2 a usage error; 3 Loops rejected
the API key; 4 `check` found data the account would lose; 5 completed with
failures (backfill, replay: pipeline/lifecycle.py says which count, and
--failures_ok); 130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM.
"""
import logging
import signal
import sys
from typing import Callable, Optional

USAGE = """usage: segment-loops COMMAND [options]

commands:
  backfill   Segment archives (S3/GCS/local, gzip NDJSON or Avro) -> Loops contacts and events
  stream     a Pub/Sub subscription of Segment events -> Loops, continuously
  check      preflight: what a backfill would send, and what the Loops account would lose
  map        what Segment calls become under a mapping (ours or Segment's subscriptions)
  replay     re-send the requests of delivery failures from a dead letter
  delete     delete contacts from Loops (userIds, emails or Segment's delete messages)
  state      look after a sync state: compact, verify, repair, confirm-import
  demo       a backfill of a generated archive into a local Loops sandbox (no account needed)
  sandbox    serve a local Loops-compatible API for tests and trials
  generate   write a realistic sample Segment archive

`segment-loops COMMAND --help` lists a command's options.
"""

EXIT_USAGE, EXIT_FAILED, EXIT_AUTH = 2, 1, 3


def _backfill(argv):
    from pipeline import backfill
    return backfill.main(argv)


def _stream(argv):
    from pipeline import stream
    return stream.run(argv)


def _check(argv):
    from pipeline import check
    return check.main(argv)


def _map(argv):
    from pipeline import map_calls
    return map_calls.main(argv)


def _replay(argv):
    from pipeline import replay
    return replay.main(argv)


def _delete(argv):
    from pipeline import delete
    return delete.main(argv)


def _state(argv):
    from pipeline import state_commands
    return state_commands.main(argv)


def _demo(argv):
    from pipeline import demo
    return demo.main(argv)


def _sandbox(argv):
    from pipeline.local import sandbox_cli
    return sandbox_cli.main(argv)


def _generate(argv):
    from pipeline.local import samples_cli
    return samples_cli.main(argv)


COMMANDS: dict[str, Callable[[list], int]] = {
    'backfill': _backfill,
    'stream': _stream,
    'check': _check,
    'map': _map,
    'replay': _replay,
    'delete': _delete,
    'state': _state,
    'demo': _demo,
    'sandbox': _sandbox,
    'generate': _generate,
}


def configure_logging() -> None:
    from transforms.core.redact import MaskEmails
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(levelname)s %(message)s')
    logging.getLogger('segment_loops').setLevel(logging.INFO)
    # On the handlers, not a logger: records of every library's loggers pass through them.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskEmails) for f in handler.filters):
            handler.addFilter(MaskEmails())


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(USAGE)
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f'segment-loops: unknown command {command!r}\n\n{USAGE}', file=sys.stderr)
        return EXIT_USAGE
    configure_logging()
    from pipeline.lifecycle import STOP_STATUS, Stopped
    from pipeline.options import UsageError
    from transforms.loops.client import AuthError
    try:
        return COMMANDS[command](rest)
    except Stopped as stopped:  # asked for: one line, no traceback (pipeline/lifecycle.py)
        print(f'segment-loops {command}: {stopped.line}', file=sys.stderr)
        return stopped.status
    except UsageError as error:
        print(f'segment-loops {command}: error: {error}', file=sys.stderr)
        return EXIT_USAGE
    except AuthError as error:
        # By type only: a key Loops rejects during a run does not crash the job
        # inside Beam (where the type would be lost); the job raises AuthError
        # itself after the run (transforms/delivery/write.py, raise_if_key_rejected).
        print(f'segment-loops {command}: {error}', file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:  # a command that does not stop cleanly (pipeline/lifecycle.py)
        print(f'segment-loops {command}: interrupted', file=sys.stderr)
        return STOP_STATUS[signal.SIGINT]
    except Exception as error:  # the job failed: one clear line, the details in the debug log
        logging.getLogger('segment_loops').debug('job failed', exc_info=True)
        print(f'segment-loops {command}: failed: {type(error).__name__}: {_first_line(error)}',
              file=sys.stderr)
        return EXIT_FAILED


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else ''
