"""What a backfill or a stream sets off in the account's live workflows:
the backfill's guard and its count, the CSV load's list, the stream's list.

Loops emails when something happens to a contact, not when it happened: a
backfill that creates 40,000 contacts in an account with a live welcome
workflow sends 40,000 welcome emails today. So a backfill reads the
account's workflows before it sends anything and:

- with no live workflow, or every live one allowed by --allow_workflows,
  goes on at once;
- else counts what it would set off in each live workflow, with the plain
  loop `check` runs (pipeline/check.py `scan`, pipeline/trigger_scan.py):
  one pass over the input on this machine, the sync state's facts
  included, before any request. A workflow not allowed that the run would
  set off, even "at most", stops it (`WorkflowsWouldRun`, a UsageError)
  with each workflow's name, link and count and the option that lets it
  run. Nothing has been sent then. A pass costs what `check` costs
  (seconds to minutes); a backfill of 40,000 contacts takes over an hour at
  Loops' 10 requests/s, and a wrong guess costs 40,000 emails;
- a key that cannot read workflows (403), or an API without them (404),
  stops it too, unless --allow_workflows unknown.

With --allow_workflows the run counts, once its writers are done, what the
requests Loops accepted set off in the allowed workflows, as the pass does
(transforms/state/workflow_count.py), and the summary says how many
contacts each took in. A first load by CSV sends nothing: it lists
the workflows an import could set off (an import changes properties; Loops
starts no SignupTrigger workflow for contacts uploaded by CSV). A stream
exists to set workflows off: it lists, when it starts and whenever a
re-read every --workflow_check_seconds finds a change, the live workflows
its calls feed.
"""
import argparse
import threading
from dataclasses import dataclass
from typing import Optional

from pipeline.check import CheckJob, scan
from pipeline.options import UsageError
from pipeline.workflow_report import (ALLOW_ALL, ALLOW_OPTION, ALLOW_UNKNOWN, AccountWorkflows,
                                      allow_value, count_text, read_account_workflows,
                                      trigger_text, unit)
from transforms.loops.connection import LoopsConnection
from transforms.loops.retry import AuthError, LoopsError
from transforms.loops.triggers import ADD_TO_LIST, BLANK, EVENT, PROPERTY, SIGNUP, Count
from transforms.mapping.conform import AccountSchema
from transforms.mapping.processor import Selection
from transforms.state.workflow_count import MAY_SET_OFF, SET_OFF, CountSetOff, counter_name

DEFAULT_WORKFLOW_CHECK_SECONDS = 600.0
# The trigger kinds this tool reads; anything may set off another.
KNOWN_KINDS = frozenset({SIGNUP, EVENT, PROPERTY, ADD_TO_LIST, BLANK})


class WorkflowsWouldRun(UsageError):
    """A backfill stopped before sending anything: it would set off live
    workflows it was not allowed to, or could not tell."""


def add_allow_option(parser) -> None:
    parser.add_argument_group('workflows').add_argument(
        ALLOW_OPTION, default=None, metavar='NAME,...',
        help='Live Loops workflows this backfill may set off (their names or ids, '
             f'comma-separated), "{ALLOW_ALL}" for any, "{ALLOW_UNKNOWN}" to go on when the '
             'key cannot read workflows. Without it a backfill that would set off a live '
             'workflow (a welcome email for every contact it creates...) stops before '
             'sending anything and names each with its count.')


def add_watch_option(parser) -> None:
    parser.add_argument_group('workflows').add_argument(
        '--workflow_check_seconds', type=seconds, default=DEFAULT_WORKFLOW_CHECK_SECONDS,
        metavar='SECONDS',
        help='Re-read the account\'s workflows this often and say when the live ones this '
             f'stream feeds change (default {DEFAULT_WORKFLOW_CHECK_SECONDS:g}; 0: only at '
             'the start). Only while this command waits for a local runner.')


def seconds(text: str) -> float:
    """A number of seconds, 0 or more (argparse's type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'expected a number of seconds, 0 or more, not {text!r}')
    return value


@dataclass(frozen=True)
class Allowance:
    """What --allow_workflows allows: workflows by name or id, every one,
    going on when workflows cannot be read."""
    names: frozenset = frozenset()
    every: bool = False
    unknown: bool = False

    def allows(self, workflow) -> bool:
        return self.every or workflow.name in self.names or workflow.id in self.names

    def check_names(self, account: AccountWorkflows) -> None:
        """UsageError for a name that is no workflow of the account (a typo
        would otherwise allow nothing, silently)."""
        known = {w.name for w in account.workflows} | {w.id for w in account.workflows}
        strangers = sorted(self.names - known)
        if strangers:
            raise UsageError(f'{ALLOW_OPTION}: no workflow of the account is named '
                             f'{", ".join(map(repr, strangers))} (its workflows: '
                             f'{", ".join(w.name or w.id for w in account.workflows) or "none"})')


def allowance_from(value: Optional[str]) -> Allowance:
    """--allow_workflows' value -> Allowance ('all' allows whatever the
    workflows are, known or not)."""
    words = [word.strip() for word in (value or '').split(',') if word.strip()]
    every = ALLOW_ALL in words
    return Allowance(frozenset(w for w in words if w not in (ALLOW_ALL, ALLOW_UNKNOWN)),
                     every, every or ALLOW_UNKNOWN in words)


@dataclass(frozen=True)
class RunWorkflows:
    """What the guard found for one run: the allowed live workflows the
    summary counts, those an import by CSV could set off, or why none
    could be read."""
    tallied: tuple = ()
    csv_import: tuple = ()
    unreadable: Optional[str] = None


# ------------------------------------------------------------------ the backfill

def guard_backfill(job, account: AccountSchema, out) -> RunWorkflows:
    """Reads the workflows and stops the backfill (`job`, a BackfillJob that
    sends) when it would set off a live one it was not allowed to; ->
    what the run then counts. Raises WorkflowsWouldRun, UsageError."""
    allowance = job.allow_workflows
    workflows = read_account_workflows(job.loops)
    if workflows.unreadable is not None:
        if not allowance.unknown:
            raise WorkflowsWouldRun(
                f'cannot tell which Loops workflows this backfill would set off: '
                f'{workflows.unreadable}. Nothing was sent. To go on without knowing: '
                f'{ALLOW_OPTION} {ALLOW_UNKNOWN}')
        print(f'Warning: {workflows.unreadable}; going on ({ALLOW_OPTION} '
              f'{ALLOW_UNKNOWN}).', file=out)
        return RunWorkflows(unreadable=workflows.unreadable)
    allowance.check_names(workflows)
    live = workflows.live
    if job.contacts_csv:
        return RunWorkflows(csv_import=tuple(w for w in live if import_may_set_off(w)))
    if not live:
        print('No live workflow in the Loops account: this backfill sets none off.', file=out)
        return RunWorkflows()
    allowed = tuple(w for w in live if allowance.allows(w))
    if len(allowed) < len(live):
        print(f'Counting what this backfill would set off in the live Loops workflows '
              f'({", ".join(w.name for w in live)}): one pass over the input, as '
              f'segment-loops check makes ({ALLOW_OPTION} names what may run)...', file=out)
        counts = count_set_off(job, account, live)
        stopped = [w for w in live if not allowance.allows(w) and counts[w.id].at_most]
        if stopped:
            raise WorkflowsWouldRun(refusal(stopped, counts, allowed))
        for workflow in live:
            if not allowance.allows(workflow):
                print(f'  {workflow.name}: nothing this run sends sets it off.', file=out)
        for workflow in allowed:
            print(f'  {workflow.name}: {count_text(counts[workflow.id], unit(workflow))} '
                  f'(allowed).', file=out)
    if allowed:
        print(f'Allowed to run ({ALLOW_OPTION}): '
              f'{", ".join(w.name for w in allowed)}; the summary counts what this run '
              'sets off in each.', file=out)
    return RunWorkflows(tallied=allowed)


def count_set_off(job, account: AccountSchema, workflows: tuple) -> dict:
    """Workflow id -> Count, by check's plain loop over the backfill's input."""
    check_job = CheckJob(
        input=job.input, selection=job.selection, policy=job.policy,
        max_event_age=job.max_event_age, resubscribe=job.resubscribe,
        unknown_properties=job.unknown_properties, sample=None, report_path=None,
        warn_only=False, loops=job.loops,
        state=job.state.listing if job.state is not None else None)
    return scan(check_job, account, workflows).triggers.counts()


def refusal(stopped: list, counts: dict, allowed: tuple) -> str:
    """The message of a backfill stopped by live workflows."""
    lines = ['this backfill would set off live Loops workflows, which email the contacts '
             'they take in:']
    lines += [f'  {w.name}: {count_text(counts[w.id], unit(w))}; {trigger_text(w)}; {w.url}'
              for w in stopped]
    lines.append(f'Nothing was sent. To let them run: {ALLOW_OPTION} '
                 f'{allow_value(allowed + tuple(stopped))} (or {ALLOW_ALL}). segment-loops '
                 'check with the same options shows the details; its --lookup N makes '
                 '"at most" exact for N contacts.')
    return '\n'.join(lines)


def import_may_set_off(workflow) -> bool:
    """Whether an audience import by CSV may set the workflow off: it
    changes properties (no lists, no events), and Loops leaves CSV uploads
    out of SignupTrigger ("Contacts uploaded via CSV ... will not be
    included", https://loops.so/docs/loop-builder/loop-triggers)."""
    return any(t.kind == PROPERTY or t.kind not in KNOWN_KINDS for t in workflow.triggers)


def count_delivered(phases: dict, failures, facts, run_workflows: Optional[RunWorkflows]):
    """Adds the step that counts what the delivered requests set off in the
    allowed workflows (transforms/state/workflow_count.py), when any is:
    `phases` {phase: (sequences, ...)} as the writers take them, `failures`
    theirs, `facts` the sync state's (None without one)."""
    if run_workflows is None or not run_workflows.tallied:
        return
    sequences = tuple(pcoll for group in phases.values() for pcoll in group)
    sequences | 'CountWorkflowsSetOff' >> CountSetOff(run_workflows.tallied, failures, facts)


def end_note(summary: dict, run_workflows: Optional[RunWorkflows]) -> str:
    """Under the summary: what the allowed workflows took in, or what an
    import of the CSV files could set off ('' when neither applies)."""
    if run_workflows is None:
        return ''
    if run_workflows.csv_import:
        return '\n'.join(
            ['The import of these files could set off these live Loops workflows (an import '
             'changes properties; Loops starts no SignupTrigger workflow for CSV uploads):']
            + [f'  {w.name}: {trigger_text(w)}; {w.url}' for w in run_workflows.csv_import])
    if not run_workflows.tallied:
        return ''
    lines = ['Live workflows this run set off, by what Loops accepted ("at most" where '
             'what a contact held before was not known):']
    for workflow in run_workflows.tallied:
        count = Count(summary.get(counter_name(workflow.id, SET_OFF), 0),
                      summary.get(counter_name(workflow.id, MAY_SET_OFF), 0))
        lines.append(f'  {workflow.name}: {count_text(count, unit(workflow))}; '
                     f'{trigger_text(workflow)}; {workflow.url}')
    return '\n'.join(lines)


# ------------------------------------------------------------------ the stream

def fed_by_stream(workflow, selection: Selection) -> bool:
    """Whether a stream of this selection sends what may set the workflow
    off: identify and track calls change contacts (and create them), track
    calls of the trigger's event name (when --events names any) set off an
    EventTrigger."""
    sends_events = any(kind != 'identify' for kind in selection.types)
    for trigger in workflow.triggers:
        if trigger.kind == EVENT:
            if sends_events and (selection.event_names is None
                                 or trigger.event_name is None
                                 or trigger.event_name in selection.event_names):
                return True
        elif trigger.kind != BLANK:
            return True
    return False


def stream_lines(account: AccountWorkflows, selection: Selection) -> list:
    """The live workflows a stream feeds, as lines for a person."""
    if account.unreadable is not None:
        return [f'Cannot tell which Loops workflows this stream feeds: {account.unreadable}']
    fed = [w for w in account.live if fed_by_stream(w, selection)]
    if not fed:
        return ['No live Loops workflow is fed by this stream\'s calls.']
    return (['Live Loops workflows this stream\'s calls feed (they email the contacts they '
             'take in):']
            + [f'  {w.name}: {trigger_text(w)}; {w.url}' for w in fed])


class WorkflowWatch:
    """Re-reads the account's workflows every `seconds` in a thread of its
    own and prints the stream's lines when they change. start(), stop()."""

    def __init__(self, connection: LoopsConnection, selection: Selection, seconds: float,
                 lines: list, out):
        self._connection = connection
        self._selection = selection
        self._seconds = seconds
        self._lines = lines
        self._out = out
        self._stopping = threading.Event()
        self._thread = None

    def start(self) -> None:
        if self._seconds > 0:
            self._thread = threading.Thread(target=self._watch, name='workflow-watch',
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stopping.wait(self._seconds):
            try:
                lines = stream_lines(read_account_workflows(self._connection), self._selection)
            except (AuthError, LoopsError, ValueError) as error:
                lines = [f'Cannot re-read the Loops workflows: {error}']
            if lines != self._lines:
                self._lines = lines
                print('\n'.join(['The Loops workflows changed.'] + lines), file=self._out,
                      flush=True)


def watch_stream(connection: LoopsConnection, selection: Selection, seconds: float,
                 out) -> WorkflowWatch:
    """Prints the live workflows a stream feeds now; -> the watch that
    re-reads them (not started)."""
    lines = stream_lines(read_account_workflows(connection), selection)
    print('\n'.join(lines), file=out)
    return WorkflowWatch(connection, selection, seconds, lines, out)
