"""What a request sets off in a Loops account: each workflow's trigger held
against what the request changes, as pure functions.

A workflow (transforms/loops/workflows.py) takes a contact in when its
trigger matches: the contact is created (SignupTrigger), a property changes
so that its value before matches `was` and after matches `is`
(ContactPropertyTrigger), the contact joins a mailing list
(AddToListTrigger), an event of a name arrives (EventTrigger). A workflow
limited to a mailing list takes only that list's contacts.

What is known of a contact before a request (`ContactBefore`) decides how
much can be said: whether Loops has the contact, and per property its value
(`Known`, from a lookup, or none at all for a contact Loops lacks), only its
digest (`Digest`, the sync state's record of what this tool delivered), or
nothing (None). Every answer is three-valued: True (it matches), False (it
does not), None (it may: what decides it is not known). A digest decides
only what equality decides: `any`, `empty`, `not_empty`, `equal`,
`not_equal`, `true`, `false`, `numeric_equal`, `numeric_not_equal`; the
other operators need the value.

Loops documents its operators by name and property type only (OpenAPI spec
1.21.6, loops-openapi.yaml 8166-8237); this reading of them is ours: text
compares exactly (case included), numbers numerically, dates as instants;
an empty value is none or ""; `between` is never decided (no source says
how its value holds two bounds). A contact's creation counts as a change
of each property it gets from no value (Loops does not say; this is the
stricter reading, which sets off more), and a created contact gets Loops'
defaults (`NEW_CONTACT_DEFAULTS`). How often a workflow takes a contact in
(`reEligible` false: once ever) is counted per run by `TriggerTally`:
whether a contact entered before the run only Loops knows.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Union

from transforms.core.digests import value_digest
from transforms.core.kinds import MAILING_LISTS
from transforms.core.records import LoopsRequest
from transforms.loops.workflows import Comparison, Trigger, Workflow
from transforms.segment.timestamps import parse_timestamp

SIGNUP, EVENT, PROPERTY, ADD_TO_LIST, BLANK = (
    'SignupTrigger', 'EventTrigger', 'ContactPropertyTrigger', 'AddToListTrigger',
    'BlankTrigger')
# What Loops gives a contact it creates through the API: "API" as the source
# and subscribed (https://loops.so/docs/contacts/properties; OAS ContactFields
# "All new contacts are subscribed by default."), userGroup "" (find's
# example, npm loops 7.3.0 README).
NEW_CONTACT_DEFAULTS = {'source': 'API', 'subscribed': True, 'userGroup': ''}
# Operators that a value's digest alone decides.
DIGEST_OPERATORS = frozenset({'any', 'empty', 'not_empty', 'equal', 'not_equal', 'true',
                              'false', 'numeric_equal', 'numeric_not_equal'})


@dataclass(frozen=True)
class Known:
    """A value known exactly (None: no value)."""
    value: Any


@dataclass(frozen=True)
class Digest:
    """A value known only by its digest (transforms/core/digests.py)."""
    digest: bytes


Knowledge = Optional[Union[Known, Digest]]   # None: nothing is known


@dataclass(frozen=True)
class ContactBefore:
    """What is known of a contact in Loops before a request. `exists`: True,
    False (Loops has no such contact) or None (unknown). `values`: property,
    or ('mailingLists', list id), -> Known or Digest. `complete`: a property
    not in `values` has no value (a contact looked up, or one Loops lacks)."""
    exists: Optional[bool]
    values: Mapping = field(default_factory=dict)
    complete: bool = False

    def of(self, key: Any) -> Knowledge:
        """What is known of one property's value (or list membership)."""
        if self.exists is False:
            return Known(None)
        known = self.values.get(key)
        if known is None and self.complete:
            return Known(None)
        return known


NEW_CONTACT = ContactBefore(False, {}, True)
UNKNOWN_CONTACT = ContactBefore(None)


def found_contact(contact: dict) -> ContactBefore:
    """A contact as `GET /v1/contacts/find` returns it (its properties, and
    `mailingLists`: the ids of the lists it is on) -> ContactBefore."""
    values = {key: Known(value) for key, value in contact.items() if key != MAILING_LISTS}
    lists = contact.get(MAILING_LISTS)
    if isinstance(lists, dict):
        values.update({(MAILING_LISTS, list_id): Known(flag is True)
                       for list_id, flag in lists.items()})
    return ContactBefore(True, values, True)


def from_digests(properties: Mapping) -> ContactBefore:
    """A contact the sync state has facts of: property (or ('mailingLists',
    list id)) -> (stamp, digest) of what this tool delivered. Loops has the
    contact; other properties may hold values set elsewhere (unknown)."""
    return ContactBefore(True, {key: Digest(entry[1]) for key, entry in properties.items()})


# ------------------------------------------------------------------ three values

def all_of(*verdicts: Optional[bool]) -> Optional[bool]:
    """False if any is False, else None if any is None, else True."""
    if any(verdict is False for verdict in verdicts):
        return False
    return None if any(verdict is None for verdict in verdicts) else True


def any_of(verdicts: Iterable[Optional[bool]]) -> Optional[bool]:
    """True if any is True, else None if any is None, else False."""
    verdicts = list(verdicts)
    if any(verdict is True for verdict in verdicts):
        return True
    return None if any(verdict is None for verdict in verdicts) else False


# ------------------------------------------------------------------ comparisons

def holds(comparison: Comparison, value: Any) -> Optional[bool]:
    """Whether a value known exactly satisfies one side of a property query;
    None for `between` and for an operator this reading does not know."""
    operator, target = comparison.operator, comparison.value
    empty = _is_empty(value)
    if operator == 'any':
        return True
    if operator in ('empty', 'not_empty'):
        return empty == (operator == 'empty')
    if operator in ('equal', 'not_equal'):
        return (not empty and _text(value) == _text(target)) == (operator == 'equal')
    if operator in ('contains', 'not_contains'):
        found = isinstance(value, str) and _text(target) in value
        return found == (operator == 'contains')
    if operator in ('true', 'false'):
        return value is (operator == 'true')
    if operator in ('greater_than', 'less_than', 'numeric_equal', 'numeric_not_equal'):
        number, bound = _number(value, text=False), _number(target, text=True)
        if number is None or bound is None:
            return operator == 'numeric_not_equal'
        return {'greater_than': number > bound, 'less_than': number < bound,
                'numeric_equal': number == bound,
                'numeric_not_equal': number != bound}[operator]
    if operator in ('after', 'before'):
        bound = _instant(target)
        if bound is None:
            return None
        moment = _instant(value)
        if moment is None:
            return False
        return moment > bound if operator == 'after' else moment < bound
    return None


def holds_for_digest(comparison: Comparison, digest: bytes) -> Optional[bool]:
    """Whether the value of this digest satisfies one side of a query, as
    `holds` would say of the value: decided for DIGEST_OPERATORS, else None."""
    operator, target = comparison.operator, comparison.value
    if operator not in DIGEST_OPERATORS:
        return None
    if operator == 'any':
        return True
    if operator in ('empty', 'not_empty'):
        empty = digest in (value_digest(None), value_digest(''))
        return empty == (operator == 'empty')
    if operator in ('true', 'false'):
        return digest == value_digest(operator == 'true')
    if operator in ('equal', 'not_equal'):
        equal = digest in {value_digest(value) for value in equal_values(target)}
        return equal == (operator == 'equal')
    bound = _number(target, text=True)
    equal = bound is not None and digest in {value_digest(value) for value in _numbers(bound)}
    return equal == (operator == 'numeric_equal')


def knowledge_holds(comparison: Comparison, known: Knowledge) -> Optional[bool]:
    """`holds` for whatever is known of the value."""
    if isinstance(known, Known):
        return holds(comparison, known.value)
    if isinstance(known, Digest):
        return holds_for_digest(comparison, known.digest)
    return True if comparison.operator == 'any' else None


def equal_values(target: Any) -> list:
    """Every value `equal` finds equal to `target` that a property can hold:
    its text, and the number or boolean of that text."""
    text = _text(target)
    if text == '':
        return []
    values = [text]
    number = _number(text, text=True)
    if number is not None:
        values += _numbers(number)
    if text in ('true', 'false'):
        values.append(text == 'true')
    # '1e3' is no number's text as Loops shows it ('1000'): equal to no number.
    return [value for value in values if _text(value) == text]


def _is_empty(value: Any) -> bool:
    return value is None or value == ''


def _text(value: Any) -> str:
    """A value as Loops would show it: numbers without a needless '.0',
    booleans as true/false."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return '' if value is None else str(value)


def _number(value: Any, text: bool) -> Optional[float]:
    """A finite number (not a boolean); numeric text too when `text`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if text and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _numbers(number: float) -> list:
    """The int and float forms a property holding `number` may have."""
    return [int(number), number] if number.is_integer() else [number]


def _instant(value: Any) -> Optional[int]:
    """A date property's value (Unix milliseconds or ISO-8601 text) -> epoch ms."""
    if isinstance(value, bool) or value is None or value == '':
        return None
    return parse_timestamp(value)


# ------------------------------------------------------------------ one request

class Change(NamedTuple):
    """What one request asks of a contact: its contact properties and
    mailing lists (`body`, the request's own fields left out), the event's
    name (None for an upsert), and whether it creates the contact when Loops
    has none (an upsert does; an event does when it names an email, or has
    one to fall back on)."""
    body: dict
    event_name: Optional[str]
    creates: bool


def request_change(request: LoopsRequest, keys: Optional[frozenset] = None) -> Change:
    """What a request asks of its contact: its body without the request's
    own fields (and only `keys`, when given: what the triggers read), the
    event's name, whether it creates a contact Loops lacks."""
    spec = request.spec
    body = {key: value for key, value in request.body.items()
            if key not in spec.own_fields and (keys is None or key in keys)}
    if spec.mergeable:
        return Change(body, None, True)
    # Loops creates the contact of an event that names an email (OAS 1520-1526);
    # an event by userId alone is sent again with its fallback email when
    # Loops has no such contact (transforms/delivery/in_flight.py).
    return Change(body, request.body.get('eventName'),
                  isinstance(request.body.get('email'), str)
                  or request.fallback_email is not None)


def verdicts(workflows: Iterable[Workflow], before: ContactBefore,
             change: Change) -> dict:
    """Workflow id -> True or None for each workflow the change sets off or
    may set off (those it does not are left out)."""
    found = {}
    for workflow in workflows:
        verdict = workflow_verdict(workflow, before, change)
        if verdict is not False:
            found[workflow.id] = verdict
    return found


def workflow_verdict(workflow: Workflow, before: ContactBefore,
                     change: Change) -> Optional[bool]:
    """Whether the change sets the workflow off: any of its triggers, each
    (but AddToListTrigger) only for a contact on the workflow's list."""
    return any_of(_trigger_verdict(workflow, trigger, before, change)
                  for trigger in workflow.triggers)


def _trigger_verdict(workflow: Workflow, trigger: Trigger, before: ContactBefore,
                     change: Change) -> Optional[bool]:
    kind = trigger.kind
    if kind == BLANK:
        return False
    if kind == ADD_TO_LIST:
        return _joins(trigger.list_id, before, change)
    if kind == SIGNUP:
        matched = _created(before, change)
    elif kind == EVENT:
        matched = _event_matches(trigger, change)
    elif kind == PROPERTY:
        matched = _property_matches(trigger, before, change)
    else:
        return None     # a kind Loops added since: anything may set it off
    if matched is False or workflow.mailing_list_id is None:
        return matched
    return all_of(matched, _on_list(workflow.mailing_list_id, before, change))


def _created(before: ContactBefore, change: Change) -> Optional[bool]:
    if not change.creates or before.exists is True:
        return False
    return None if before.exists is None else True


def _event_matches(trigger: Trigger, change: Change) -> Optional[bool]:
    if change.event_name is None:
        return False
    if trigger.event_name is None:
        # Named by an event pattern id that was not resolved to its name.
        return None if trigger.event_pattern_id else False
    return change.event_name == trigger.event_name


def _property_matches(trigger: Trigger, before: ContactBefore,
                      change: Change) -> Optional[bool]:
    query = trigger.property_query
    if query is None:
        return False
    key = query.key
    if key in change.body:
        after, only_if_created = change.body[key], False
    elif key in NEW_CONTACT_DEFAULTS and _created(before, change) is not False:
        after, only_if_created = NEW_CONTACT_DEFAULTS[key], True
    else:
        return False
    was = before.of(key)
    matched = all_of(_changed(was, after), holds(query.is_, after),
                     knowledge_holds(query.was, was))
    if only_if_created:
        matched = all_of(matched, _created(before, change))
    return matched


def _changed(was: Knowledge, after: Any) -> Optional[bool]:
    if isinstance(was, Known):
        return value_digest(was.value) not in _digests(after)
    if isinstance(was, Digest):
        return was.digest not in _digests(after)
    return None


def _digests(value: Any) -> set:
    """The digests of a value's forms (a number's int and float: Loops
    keeps one number where Python has two)."""
    number = _number(value, text=False)
    forms = _numbers(number) if number is not None else [value]
    return {value_digest(form) for form in forms}


def _joins(list_id: Optional[str], before: ContactBefore, change: Change) -> Optional[bool]:
    """Whether the change puts the contact on a list it was not on."""
    lists = change.body.get(MAILING_LISTS)
    if list_id is None or not isinstance(lists, dict) or lists.get(list_id) is not True:
        return False
    on_before = _membership(before.of((MAILING_LISTS, list_id)))
    return None if on_before is None else not on_before


def _on_list(list_id: str, before: ContactBefore, change: Change) -> Optional[bool]:
    """Whether the contact is on the list once the change is made."""
    lists = change.body.get(MAILING_LISTS)
    if isinstance(lists, dict) and isinstance(lists.get(list_id), bool):
        return lists[list_id]
    return _membership(before.of((MAILING_LISTS, list_id)))


def _membership(known: Knowledge) -> Optional[bool]:
    if isinstance(known, Known):
        return known.value is True
    if isinstance(known, Digest):
        return known.digest == value_digest(True)
    return None


def after_change(before: ContactBefore, change: Change) -> ContactBefore:
    """What is known of the contact once the change is made: the values it
    sent; it exists when the change creates it or it existed."""
    exists = True if change.creates or before.exists else before.exists
    values = dict(before.values)
    for key, value in change.body.items():
        if key == MAILING_LISTS and isinstance(value, dict):
            values.update({(MAILING_LISTS, list_id): Known(flag)
                           for list_id, flag in value.items()})
        elif key != MAILING_LISTS:
            values[key] = Known(value)
    if before.exists is False and change.creates:
        values = {**{key: Known(value) for key, value in NEW_CONTACT_DEFAULTS.items()},
                  **values}
    return ContactBefore(exists, values, before.complete and exists is not None)


# ------------------------------------------------------------------ counting

def re_eligible(workflow: Workflow) -> bool:
    """Whether a contact may enter the workflow every time it matches."""
    return any(trigger.re_eligible for trigger in workflow.triggers
               if trigger.kind != SIGNUP)


class Count(NamedTuple):
    """How many contacts a workflow takes in (for a re-eligible one, how
    many times): `certain`, and `possible` more where what decides it is
    not known."""
    certain: int = 0
    possible: int = 0

    @property
    def at_most(self) -> int:
        return self.certain + self.possible

    @property
    def exact(self) -> bool:
        return self.possible == 0


class TriggerTally:
    """Verdicts of a run's changes -> a Count per workflow: a workflow that
    takes a contact in once counts each contact once, certain when any of
    its changes certainly matched; a re-eligible one counts every match."""

    def __init__(self, workflows: Iterable[Workflow]):
        self._re_eligible = {w.id: re_eligible(w) for w in workflows}
        self._times = {workflow_id: [0, 0] for workflow_id in self._re_eligible}
        self._contacts = {}   # (workflow id, contact) -> True or None

    def add(self, contact: str, found: Mapping) -> None:
        """One change's verdicts (as `verdicts` gives them) for `contact`."""
        for workflow_id, verdict in found.items():
            if self._re_eligible[workflow_id]:
                self._times[workflow_id][0 if verdict else 1] += 1
            elif self._contacts.get((workflow_id, contact)) is not True:
                self._contacts[(workflow_id, contact)] = verdict

    def counts(self) -> dict:
        """Workflow id -> Count."""
        totals = {workflow_id: list(times) for workflow_id, times in self._times.items()}
        for (workflow_id, _), verdict in self._contacts.items():
            totals[workflow_id][0 if verdict else 1] += 1
        return {workflow_id: Count(*pair) for workflow_id, pair in totals.items()}


def property_keys(workflows: Iterable[Workflow]) -> frozenset:
    """The contact properties the workflows' triggers read (the body keys a
    run must keep to decide them), `mailingLists` when any reads a list."""
    keys = set()
    for workflow in workflows:
        if workflow.mailing_list_id is not None:
            keys.add(MAILING_LISTS)
        for trigger in workflow.triggers:
            if trigger.kind == PROPERTY and trigger.property_query is not None:
                keys.add(trigger.property_query.key)
            elif trigger.kind == ADD_TO_LIST:
                keys.add(MAILING_LISTS)
    return frozenset(keys)
