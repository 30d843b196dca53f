"""The account's workflows as a run sees them: reading them, and saying
what a run sets off in each (check's report, the backfill's guard).

A workflow is live when its status is `Sending`. A live workflow the run
sets off is shown with its name, its link in the Loops app, its trigger and
how many contacts it would take in (or, for a re-eligible trigger, how many
times): an exact figure where what decides it is known, "at most" where it
is not (pipeline/trigger_scan.py says what is known). Draft and paused
workflows, and live ones nothing in the run matches, are "not affected".
"""
import dataclasses
import shlex
from dataclasses import dataclass
from typing import Iterable, Optional

from transforms.loops.connection import LoopsConnection
from transforms.loops.triggers import (ADD_TO_LIST, BLANK, EVENT, PROPERTY, SIGNUP, Count,
                                       re_eligible)
from transforms.loops.workflows import (Comparison, Trigger, Workflow, WorkflowsUnavailable,
                                        read_event_patterns, read_workflows)

ALLOW_OPTION = '--allow_workflows'
# What --allow_workflows takes besides names: every workflow, and going on
# when the workflows cannot be read.
ALLOW_ALL, ALLOW_UNKNOWN = 'all', 'unknown'
PAUSED_AND_QUEUEING = 'PausedAndQueueing'


@dataclass(frozen=True)
class AccountWorkflows:
    """The account's workflows (event pattern ids resolved to event names),
    or why they could not be read (`unreadable`: the key has no access, or
    the API has no workflow endpoints)."""
    workflows: tuple = ()
    unreadable: Optional[str] = None

    @property
    def live(self) -> tuple:
        return tuple(workflow for workflow in self.workflows if workflow.live)


def read_account_workflows(connection: LoopsConnection) -> AccountWorkflows:
    """Reads every workflow; WorkflowsUnavailable becomes `unreadable`.
    Raises AuthError, LoopsError, ValueError as read_workflows."""
    client = connection.client()
    try:
        workflows = read_workflows(client)
        if any(t.event_name is None and t.event_pattern_id for w in workflows
               for t in w.triggers):
            names = {pattern.id: name for name, pattern in read_event_patterns(client).items()}
            workflows = [_with_event_names(workflow, names) for workflow in workflows]
        return AccountWorkflows(tuple(workflows))
    except WorkflowsUnavailable as error:
        return AccountWorkflows(unreadable=str(error))
    finally:
        client.close()


def _with_event_names(workflow: Workflow, names: dict) -> Workflow:
    triggers = tuple(
        dataclasses.replace(t, event_name=names.get(t.event_pattern_id))
        if t.event_name is None and t.event_pattern_id else t for t in workflow.triggers)
    return dataclasses.replace(workflow, triggers=triggers)


# ------------------------------------------------------------------ words

def trigger_text(workflow: Workflow) -> str:
    """What sets the workflow off, for a person: 'a contact is created',
    'plan changes (was any, is equal "pro")', ..."""
    texts = [_one_trigger(trigger) for trigger in workflow.triggers] or ['no trigger']
    text = ' or '.join(texts)
    if workflow.mailing_list_id is not None and any(
            t.kind != ADD_TO_LIST for t in workflow.triggers):
        text += f', contacts on list {workflow.mailing_list_id} only'
    if re_eligible(workflow):
        text += ', every time'
    return text


def _one_trigger(trigger: Trigger) -> str:
    if trigger.kind == SIGNUP:
        return 'a contact is created'
    if trigger.kind == EVENT:
        if trigger.event_name is not None:
            return f'event {_quoted(trigger.event_name)}'
        return f'event pattern {trigger.event_pattern_id or "(none chosen)"}'
    if trigger.kind == PROPERTY:
        query = trigger.property_query
        if query is None:
            return 'a property changes (none chosen)'
        return (f'{query.key} changes (was {_comparison(query.was)}, '
                f'is {_comparison(query.is_)})')
    if trigger.kind == ADD_TO_LIST:
        return f'a contact joins list {trigger.list_id or "(none chosen)"}'
    if trigger.kind == BLANK:
        return 'no trigger chosen'
    return f'{trigger.kind} (a trigger this tool does not know: anything may set it off)'


def _comparison(comparison: Comparison) -> str:
    if comparison.operator in ('any', 'empty', 'not_empty', 'true', 'false'):
        return comparison.operator.replace('_', ' ')
    return f'{comparison.operator.replace("_", " ")} {_quoted(comparison.value)}'


def _quoted(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def unit(workflow: Workflow) -> str:
    return 'times' if re_eligible(workflow) else 'contacts'


def count_text(count: Count, what: str) -> str:
    """'30 contacts', '1 contact', 'at most 30 contacts (12 certain)'
    (`what` in the plural)."""
    number = count.certain if count.exact else count.at_most
    text = f'{number:,} {what[:-1] if number == 1 else what}'
    if count.exact:
        return text
    return f'at most {text}' + (f' ({count.certain:,} certain)' if count.certain else '')


def allow_value(workflows: Iterable[Workflow]) -> str:
    """The --allow_workflows value that names these workflows, as a shell
    word (a name with a comma in it goes by its id)."""
    return shlex.quote(','.join(w.id if ',' in w.name or not w.name else w.name
                                for w in workflows))


def not_affected_reason(workflow: Workflow) -> str:
    if workflow.live:
        return 'live; nothing this run sends matches its trigger'
    if workflow.status == PAUSED_AND_QUEUEING:
        return (f'{workflow.status}: not sending (it may queue the contacts it takes in '
                'and email them once resumed; Loops does not say)')
    return f'{workflow.status}: not sending'


# ------------------------------------------------------------------ check's report

def workflows_section(account: AccountWorkflows, scan, state: bool = False) -> dict:
    """check's `workflows` object: the live workflows set off (with counts),
    those not affected, what the counts knew, and the --allow_workflows
    value a backfill would need. `scan`: the run's TriggerScan (None
    without live workflows); `state`: the counts had a sync state."""
    if account.unreadable is not None:
        return {'readable': False, 'message': account.unreadable, 'set_off': [],
                'not_affected': [], 'allow': None}
    counts = scan.counts() if scan is not None else {}
    lookup = scan.lookup if scan is not None else None
    set_off, not_affected = [], []
    for workflow in account.workflows:
        count = counts.get(workflow.id, Count())
        item = {'id': workflow.id, 'name': workflow.name, 'url': workflow.url,
                'status': workflow.status, 'trigger': trigger_text(workflow)}
        if workflow.live and count.at_most:
            set_off.append(item | {'unit': unit(workflow), 'certain': count.certain,
                                   'possible': count.possible, 'at_most': count.at_most,
                                   'exact': count.exact})
        else:
            not_affected.append(item | {'reason': not_affected_reason(workflow)})
    live = {workflow.id: workflow for workflow in account.live}
    return {'readable': True, 'message': None, 'set_off': set_off,
            'not_affected': not_affected,
            'contacts_before_unknown': scan.before_unknown if scan is not None else 0,
            'lookup': ({'limit': lookup.limit, 'looked_up': lookup.looked_up,
                        'found': lookup.found} if lookup is not None else None),
            'state': state,
            'allow': (allow_value(live[item['id']] for item in set_off) if set_off else None)}


def format_workflows(section: dict) -> list:
    """check's workflows section as text lines."""
    lines = ['', 'What this run sets off in Loops (live workflows email the contacts they '
                 'take in)']
    if not section['readable']:
        return lines + [f'  cannot tell: {section["message"]}',
                        f'  (a backfill then stops unless {ALLOW_OPTION} {ALLOW_UNKNOWN})']
    for item in section['set_off']:
        count = Count(item['certain'], item['possible'])
        lines.append(f'  {item["name"]}: {count_text(count, item["unit"])}; '
                     f'{item["trigger"]}; {item["url"]}')
    if not section['set_off']:
        lines.append('  none')
    for item in section['not_affected']:
        lines.append(f'  not affected: {item["name"]} ({item["reason"]})')
    if any(not item['exact'] for item in section['set_off']):
        lines.append('  "at most": ' + unknown_note(section))
    if section['allow']:
        lines.append(f'A backfill with these options stops before sending anything unless '
                     f'{ALLOW_OPTION} {section["allow"]}')
    return lines


def unknown_note(section: dict) -> str:
    """Why some counts are "at most", and what would make them exact."""
    lookup = section.get('lookup')
    looked = (f'{lookup["looked_up"]:,} looked up, {lookup["found"]:,} of them found in Loops; '
              if lookup else '')
    if section.get('state'):
        state = ('the sync state knows what this tool delivered, as digests, which decide only '
                 'what equality decides; ')
    else:
        state = '--state knows what this tool delivered; '
    return (f'what decides it is not known: for {section["contacts_before_unknown"]:,} '
            f'contacts, whether Loops has them and their values before ({looked}{state}'
            '--lookup N looks N contacts up in Loops, one request each at the rate limit)')
