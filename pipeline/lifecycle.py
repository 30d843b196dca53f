"""How a job's run ends: a stop the user asks for, failures left behind, exit statuses.

Stopping. `StopSignals` turns SIGINT (Ctrl-C) and SIGTERM (a service
manager, a scheduler, `kill`) into a clean stop. Before the pipeline runs,
nothing has been sent: the signal raises `Stopped` at once. Once the job
says the pipeline runs (`StopSignals.running`), the signal only asks the
steps to stop (transforms/core/stop.py): the writers let the requests in
flight finish and start no new one, the reader opens no further file, and
the pipeline runs to its end as usual, so the recorders flush what was
delivered into the sync state, the state is folded, the failure records
and the summary are written. The job then raises `Stopped` with one line
for a person: what was done, what was not, and the command that resumes it
(`sent_so_far`, `command_line`). A second signal ends the process at once
(`os._exit`): the state then lacks at most the deliveries of the last
--state_flush_seconds, which the next run sends again.

Beam's local worker processes (--direct_running_mode=multi_processing) see
the stop through a file (transforms/core/stop.py). A signal sent to the
whole process group (Ctrl-C in a terminal) also reaches them, and Beam's
workers die of it: the job then fails, and ends with a line that says so.
A stream (`wait_for_stream`) is cancelled instead, which lets the batch it
is sending finish. On a runner elsewhere (Dataflow) the launcher only waits
for the job: a signal cancels the job (`cancel_remote_job`), whose workers
then stop at once, as after a crash.

Failures. A run that completes but leaves failure records that need
someone's action ends with exit status EXIT_FAILURES (5), after a report of
what they are and how to send them again (`failure_report`):
  - counted (`needs_action`): stage `deliver` (any reason: Loops did not
    take a request, whether it could not be reached or refused it) and
    stage `read` (a file that could not be read: its events were not sent);
  - not counted: stage `parse`, `map` and `conform`, events that cannot be
    sent as they are (not JSON, no userId or email, a value the account
    refuses). They are the input's, the same on every rerun: reported, but
    a scheduled job must not fail every day for the same bad lines.
`--failures_ok` exits 0 anyway; `--failures_ok REASON,...` (e.g. http_400)
accepts only failures of those reasons.

Exit statuses of `segment-loops`: 0 done; 1 the job failed; 2 usage; 3 Loops
rejected the API key; 4 `check` found data the account would lose; 5
completed with failures; 130 stopped by SIGINT; 143 stopped by SIGTERM.
"""
import os
import shlex
import signal
import sys
import tempfile
import threading
import uuid
from typing import Iterable, Mapping, Optional

from pipeline import summary as run_summary
from transforms.core.sinks import DEAD_LETTER_PREFIX
from transforms.core.stop import STOP_FILE_ENV, clear_stop, request_stop
from transforms.loops.retry import STOPPED

EXIT_FAILURES = 5
# 128 + the signal's number, as a shell reports a process the signal ended.
STOP_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
COUNTED_STAGES = ('deliver', 'read')
ALL_REASONS = 'all'
# The summary's count of files a stop left unread (pipeline/summary.py).
STOPPED_FILES = 'read/stopped_files'
# How long a stopping stream's current bundle may take to finish before its
# writers are asked to stop, and how often the waiting looks for a signal.
STREAM_GRACE_SECONDS = 5.0
STREAM_POLL_SECONDS = 0.2


class Stopped(BaseException):
    """The run stopped because the user asked it to (a BaseException, as
    KeyboardInterrupt: no `except Exception` on the way may take it for a
    failure). `line` says what was done and how to resume."""

    def __init__(self, signal_number: int, line: str):
        super().__init__(line)
        self.signal_number = signal_number
        self.line = line

    @property
    def status(self) -> int:
        return STOP_STATUS[self.signal_number]


def signal_name(number: int) -> str:
    return signal.Signals(number).name


class StopSignals:
    """A context in which SIGINT and SIGTERM stop the job (module docstring).

    Handlers are installed only in the main thread (Python runs signal
    handlers there); elsewhere the context does nothing but clear the stop
    flag, so a job run from another thread behaves as before. `signal` is
    the number of the first signal received, or None. `stop_steps`: a signal
    while the pipeline runs asks its steps to stop at once; a stream
    (`wait_for_stream`) asks them only when its stop takes too long.
    """

    def __init__(self, command: str, stop_steps: bool = True):
        self.command = command
        self.signal: Optional[int] = None
        self._stop_steps = stop_steps
        self._running = None    # None: not yet; True: in this process; False: elsewhere
        self._previous = {}

    def __enter__(self) -> 'StopSignals':
        # Local worker processes, started later by the runner, inherit it.
        self._stop_file_before = os.environ.get(STOP_FILE_ENV)
        os.environ[STOP_FILE_ENV] = os.path.join(
            tempfile.gettempdir(), f'segment-loops-stop-{os.getpid()}-{uuid.uuid4().hex}')
        clear_stop()
        if threading.current_thread() is threading.main_thread():
            for number in STOP_STATUS:
                self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def __exit__(self, kind, error, _traceback) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
        clear_stop()
        if self._stop_file_before is None:
            os.environ.pop(STOP_FILE_ENV, None)
        else:
            os.environ[STOP_FILE_ENV] = self._stop_file_before
        if self.signal is not None and isinstance(error, RuntimeError):
            # The runner failed after the stop (Beam raises RuntimeError for
            # a failed job): its worker processes got the signal too (Ctrl-C
            # in a terminal reaches the whole process group) and died of it.
            raise Stopped(self.signal, f'stopped by {signal_name(self.signal)}: the job ended '
                                       f'with {type(error).__name__} after the stop, so the '
                                       'failure records and the summary may be missing; a sync '
                                       'state lacks at most the deliveries of the last '
                                       '--state_flush_seconds (the next run sends them again)'
                          ) from error

    def running(self, in_process: bool) -> None:
        """Call just before the pipeline starts: from now on a signal asks
        its steps to stop (`in_process`: the runner runs them in this
        process) or, for a runner elsewhere, stops only the waiting."""
        self._running = in_process

    def _on_signal(self, number: int, _frame) -> None:
        if self.signal is not None:
            self._exit_now(number)
        self.signal = number
        if self._stop_steps:
            request_stop()
        name = signal_name(number)
        if self._running is None:
            raise Stopped(number, f'stopped by {name} before anything was sent')
        if self._running is False:
            raise Stopped(number, f'stopped by {name}; a job already submitted to its runner '
                                  'goes on: cancel it there (on Dataflow, `gcloud dataflow jobs '
                                  'cancel JOB_ID --region REGION`)')

    def _exit_now(self, number: int) -> None:
        print(f'{self.command}: stopped at once by a second {signal_name(number)}: the failure '
              'records and the summary were not written; a sync state lacks at most the '
              'deliveries of the last --state_flush_seconds (the next run sends them again)',
              file=sys.stderr, flush=True)
        os._exit(STOP_STATUS[number])

    def stopped(self, line: str) -> Optional[Stopped]:
        """The Stopped to raise, 'stopped by SIGTERM: <line>', if a signal
        came; else None."""
        if self.signal is None:
            return None
        return Stopped(self.signal, f'stopped by {signal_name(self.signal)}: {line}')


def wait_for_stream(result, signals: StopSignals, grace: float = STREAM_GRACE_SECONDS) -> bool:
    """Waits for a stream in this process (Beam's local streaming runner) to
    end, or for a signal; then cancels it. The local runner lets the bundle
    it is running finish: the writer sends the rest of its batch and its
    recorder flushes what was delivered. When that takes more than `grace`
    seconds (Loops unreachable, requests waiting on retries), the writers are
    asked to stop too: -> whether they were. Raises what the stream failed
    with, if it did."""
    ended, failure = threading.Event(), []

    def wait():
        try:
            result.wait_until_finish()
        except BaseException as error:  # handed to the waiting thread
            failure.append(error)
        finally:
            ended.set()
    threading.Thread(target=wait, daemon=True, name='stream-wait').start()
    while not ended.wait(STREAM_POLL_SECONDS):
        if signals.signal is not None:
            cancelling = threading.Thread(target=result.cancel, daemon=True,
                                          name='stream-cancel')
            cancelling.start()
            cancelling.join(grace)
            if not cancelling.is_alive():
                return False
            request_stop()
            cancelling.join()
            return True
    if failure:
        raise failure[0]
    return False


def cancel_remote_job(result, stopped: Stopped, resume: str) -> Stopped:
    """A job that runs elsewhere (Dataflow) while this launcher waits for it,
    which a signal stopped: the job is cancelled too, since the launcher
    gives up what it holds for the job as it ends (the sync state's lease).
    -> the Stopped to raise, its line saying so and how to resume."""
    name = signal_name(stopped.signal_number)
    try:
        result.cancel()
    except Exception as error:  # the runner's own error, for a person
        return Stopped(stopped.signal_number,
                       f'stopped by {name}, but the job could not be cancelled ({error}): '
                       'cancel it on its runner (on Dataflow, `gcloud dataflow jobs cancel '
                       'JOB_ID --region REGION`) before running it again')
    return Stopped(stopped.signal_number,
                   f'stopped by {name}: the job was cancelled on its runner; its sync state has '
                   'what it delivered up to its writers\' last flush (--state_flush_seconds); '
                   f'to resume: {resume}')


def wait_for_batch(result, resume: str) -> None:
    """Waits for a batch job to finish. A signal on a runner elsewhere stops
    only the waiting: the job is then cancelled (`cancel_remote_job`)."""
    try:
        result.wait_until_finish()
    except Stopped as stopped:
        raise cancel_remote_job(result, stopped, resume) from None


def end_batch(signals: StopSignals, summary: Mapping[str, int], *, title: str,
              notes: Iterable[str], stop_line: str, summary_path: Optional[str],
              out) -> None:
    """How a batch job (backfill, replay, delete) ends once its pipeline is
    done: its summary table and `notes` (empty ones skipped) for a person,
    the summary file written (`summary_path`), and, after a signal, Stopped
    raised with `stop_line` instead of the table (what was done and how to
    resume)."""
    stopped = signals.stopped(stop_line)
    if stopped is None:
        print(run_summary.format_table(summary, title), file=out)
        for note in notes:
            if note:
                print(note, file=out)
    if summary_path:
        run_summary.write_summary(summary, summary_path)
    if stopped is not None:
        raise stopped


def batch_exit_status(command: str, summary: Mapping[str, int], accepted: frozenset) -> int:
    """A batch command's exit status (`exit_status`), said on stderr when it
    is not 0."""
    status = exit_status(summary, accepted)
    if status:
        print(f'segment-loops {command}: {exit_line(status)}', file=sys.stderr)
    return status


def command_line(command: str, argv: list) -> str:
    """'segment-loops backfill --input ...': a command as a shell takes it."""
    return f'segment-loops {command} {shlex.join(argv)}'.rstrip()


def sent_so_far(summary: Mapping[str, int], dead_letter: str) -> str:
    """'412 of 2,310 requests delivered, 3 failed (records in dl/), 1,895 not
    sent': the delivery figures of a stopped run."""
    delivered = summary.get('delivered', 0) + summary.get('already_delivered', 0)
    failed = summary.get('delivery_failed', 0)
    not_sent = summary.get('not_sent', 0)
    text = f'{delivered:,} of {delivered + failed + not_sent:,} requests delivered'
    if failed:
        text += f', {failed:,} failed (records in {dead_letter})'
    if not_sent:
        text += f', {not_sent:,} not sent'
    return text


def files_not_read(summary: Mapping[str, int]) -> str:
    """', 7 files not read to their end' when a stop left some, else ''."""
    stopped = summary.get(STOPPED_FILES, 0)
    return f', {stopped:,} files not read to their end' if stopped else ''


# ----------------------------------------------------------------- failures

def failures_by_kind(summary: Mapping[str, int]) -> dict:
    """{(stage, reason): records} from a summary's dead_letter/<stage>_<reason>."""
    found = {}
    for name, count in summary.items():
        if name.startswith(DEAD_LETTER_PREFIX) and count:
            stage, _, reason = name[len(DEAD_LETTER_PREFIX):].partition('_')
            if reason:
                found[stage, reason] = count
    return found


def parse_failures_ok(value: Optional[str]) -> frozenset:
    """--failures_ok's value -> the reasons it accepts: none (not given),
    every one (given alone), or the ones it lists."""
    if value is None:
        return frozenset()
    reasons = {reason.strip() for reason in value.split(',') if reason.strip()}
    return frozenset(reasons or {ALL_REASONS})


def needs_action(summary: Mapping[str, int], accepted: frozenset = frozenset()) -> int:
    """How many failure records count for the exit status (module
    docstring), leaving out the reasons `accepted` (parse_failures_ok)."""
    if ALL_REASONS in accepted:
        return 0
    return sum(count for (stage, reason), count in failures_by_kind(summary).items()
               if stage in COUNTED_STAGES and reason not in accepted)


def exit_status(summary: Mapping[str, int], accepted: frozenset = frozenset()) -> int:
    """0, or EXIT_FAILURES when failures that need action were left."""
    return EXIT_FAILURES if needs_action(summary, accepted) else 0


def add_failure_options(parser) -> None:
    """--failures_ok, for a job that ends with a failure report."""
    parser.add_argument(
        '--failures_ok', nargs='?', const=ALL_REASONS, default=None, metavar='REASON,...',
        help=f'Exit 0 even when the run leaves delivery failures or unreadable files (by '
             f'default exit status {EXIT_FAILURES}, "completed with failures"); with reasons '
             '(e.g. http_400), only failures of those reasons are accepted.')


def failure_report(summary: Mapping[str, int], dead_letter: str, resend: str) -> str:
    """What a run left in its dead letter, for a person ('' when nothing):
    how many records, where, by stage and reason, and `resend`, the
    sentence that says how to send them again."""
    kinds = failures_by_kind(summary)
    if not kinds:
        return ''
    total = sum(kinds.values())
    lines = [f'{total:,} failure records in {dead_letter}:']
    width = max(len(f'{stage}/{reason}') for stage, reason in kinds)
    for (stage, reason), count in sorted(kinds.items(), key=lambda item: -item[1]):
        lines.append(f'  {count:>9,}  {f"{stage}/{reason}":<{width}}  '
                     f'{_meaning(stage, reason)}')
    if any(stage == 'deliver' for stage, _ in kinds):
        lines.append(resend)
    if any(stage == 'read' for stage, _ in kinds):
        lines.append('Files that could not be read are named in their records (source): fix '
                     'or replace them, then run again.')
    return '\n'.join(lines)


def _meaning(stage: str, reason: str) -> str:
    if stage == 'deliver' and reason.startswith('http_4'):
        return ('refused by Loops: the records\' messages say why (fix, then replay with '
                '--include_permanent)')
    if stage == 'deliver' and reason == STOPPED:
        return 'not retried: the run was stopped'
    if stage == 'deliver':
        return 'not delivered: Loops could not be reached or did not answer in time'
    if stage == 'read':
        return 'a file that could not be read (to its end)'
    return 'input that cannot be sent as it is (not counted in the exit status)'


def exit_line(status: int) -> str:
    """The last line of a run that completed with failures that need action."""
    return (f'completed with failures (exit status {status}); --failures_ok accepts them, '
            '--failures_ok http_400 only refusals')
