"""What `check` sees of each event, and its report as one JSON-ready object.

`Observations` watches the per-event path from outside: each request as
mapped and as fitted to the account (so a property's coercions and type
conflicts are what `EventProcessor.fit` did, not a second opinion), each
whole-event failure, and each upsert the backfill would send. The
backfill's own figures come from its counters (pipeline/plain_backfill.py);
`build_report` puts both together. The JSON keys are listed in docs/commands.md
(`check`).
"""
import collections
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline import summary as run_summary
from pipeline.plain_backfill import FILES_OPENED
from transforms.contacts.merge import EMAIL_PREFIX
from transforms.core.kinds import MAILING_LISTS
from transforms.core.records import LoopsRequest
from transforms.mapping.conform import (NOT_SETTABLE, AccountSchema, is_changed,
                                        is_custom_property)
from transforms.mapping.processor import Processed

EXAMPLE_CHARS = 80
CAMEL_CASE = re.compile(r'[a-z][A-Za-z0-9]*', re.ASCII)
_ISO_DATE_TIME = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}', re.ASCII)
COLON_IN_EVENT_NAME = 'colon_in_event_name'
INVALID_NAME = 'map/dropped_invalid_name'
INVALID_EMAIL = 'refused/invalid_email'
# Counters of the path itself, not of a change made to a value.
PATH_COUNTS = frozenset({'map/failed', 'map/contact_updates', 'map/event_sends'})
# The options that send what a backfill holds back by default.
SEND_OLD_EVENTS, SEND_RESUBSCRIBES = '--max_event_age none', '--resubscribe'

# Property statuses; the first three lose data.
MISSING, TYPE_CONFLICT, NOT_SETTABLE_STATUS, COERCED, OK, BUILT_IN = (
    'missing', 'type_conflict', 'not_settable', 'coerced', 'ok', 'built_in')


@dataclass
class PropertyStats:
    """What one contact property of the requests looks like."""
    count: int = 0
    example: Any = None
    value_types: collections.Counter = field(default_factory=collections.Counter)
    coerced: int = 0
    type_conflicts: int = 0
    conflict_example: Any = None


def value_type(value: Any) -> str:
    """The Loops type a property value suggests: string, number, boolean,
    date (ISO date-time text), or null."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, (int, float)):
        return 'number'
    if isinstance(value, str) and _ISO_DATE_TIME.match(value):
        return 'date'
    return 'string'


class Observations:
    """Everything `check` notes beside the backfill's counters."""

    def __init__(self, account: AccountSchema):
        self.account = account
        self.by_type = collections.Counter()
        self.track_names = collections.Counter()
        self.colon_names = collections.Counter()
        self.failures = collections.Counter()     # whole events and files: 'stage/reason'
        self.unreadable_files = []
        self.properties: dict[str, PropertyStats] = {}
        self.mailing_lists = collections.Counter()
        self.leads_created = 0
        self.resubscribes_sent = 0

    def unreadable(self, failure: dict) -> None:
        self.failures[f'{failure["stage"]}/{failure["reason"]}'] += 1
        self.unreadable_files.append({key: failure[key] for key in ('reason', 'message')}
                                     | {'path': failure['source']})

    def event(self, mapped: Processed, fitted: Processed) -> None:
        """One event: as `to_requests` left it (`mapped`) and as `fit` sent
        it on (`fitted`, the same requests in the same order)."""
        event = mapped.event
        if event is not None:
            self.by_type[event.type] += 1
            if event.type == 'track':
                self.track_names[_name_text(event.data.get('event'))] += 1
        for failure in mapped.failures:
            if failure['stage'] == 'conform':   # a refused part: under `refused`
                continue
            self.failures[f'{failure["stage"]}/{failure["reason"]}'] += 1
            if failure['reason'] == COLON_IN_EVENT_NAME:
                self.colon_names[_name_text(event.data.get('event'))] += 1
        for request, sent in zip(mapped.requests, fitted.requests):
            self._request(request, sent.body)

    def _request(self, mapped: LoopsRequest, sent: dict) -> None:
        kind = mapped.spec
        for key, value in mapped.body.items():
            if key == MAILING_LISTS:
                if isinstance(value, dict):
                    self.mailing_lists.update(list(value))
                continue
            if key in kind.own_fields:
                continue
            stats = self.properties.get(key)
            if stats is None:
                stats = self.properties[key] = PropertyStats()
            stats.count += 1
            stats.value_types[value_type(value)] += 1
            if stats.example is None:
                stats.example = value
            if (not is_custom_property(key, kind) or key not in self.account.properties
                    or key in NOT_SETTABLE):
                continue
            if key not in sent:   # the account has it: fit refused the value
                stats.type_conflicts += 1
                if stats.conflict_example is None:
                    stats.conflict_example = value
            elif is_changed(value, sent[key]):
                stats.coerced += 1

    def upsert(self, request: LoopsRequest) -> None:
        """One upsert the backfill would send."""
        if request.contact.startswith(EMAIL_PREFIX):
            self.leads_created += 1
        self._consent(request)

    def event_sends(self, requests: list) -> None:
        """A contact's event sends the backfill would send (None for one
        that sets no `subscribed`, as the plain loop keeps it)."""
        for request in requests:
            if request is not None:
                self._consent(request)

    def _consent(self, request: LoopsRequest) -> None:
        if request.body.get('subscribed') is True:
            self.resubscribes_sent += 1


class CheckRun(NamedTuple):
    """What one check found: the backfill's counters and the observations;
    what it set off in the workflows (a pipeline/trigger_scan.TriggerScan,
    None without live workflows) and the events it sends
    (account_setup.EventShapes)."""
    counts: collections.Counter
    seen: Observations
    triggers: Any = None
    events: Any = None


def property_status(key: str, stats: PropertyStats, schema: AccountSchema) -> str:
    """not_settable (a field no request can set), built_in (a Loops field),
    missing (not in the account), type_conflict (some values cannot be
    coerced), coerced (some values would be), or ok."""
    if key in NOT_SETTABLE:
        return NOT_SETTABLE_STATUS
    if not is_custom_property(key):
        return BUILT_IN
    if key not in schema.properties:
        return MISSING
    if stats.type_conflicts:
        return TYPE_CONFLICT
    return COERCED if stats.coerced else OK


def build_report(run: CheckRun, job, team: str) -> dict:
    """The check's findings as one JSON-ready object. `job` is the CheckJob."""
    counts, seen = run.counts, run.seen
    keys = dict(run_summary.BACKFILL_KEYS)
    if job.state is not None:
        keys.update(run_summary.STATE_KEYS)
    summary = run_summary.backfill_summary(counts, keys)
    requests = summary['contacts'] + summary['events']
    report = {
        'input': _input_section(counts, seen, job),
        'account': _account_section(seen.account, team, job.unknown_properties),
        'events': {
            'by_type': dict(seen.by_type.most_common()),
            'track_by_name': dict(seen.track_names.most_common()),
            'selected_types': list(job.selection.types),
            'selected_track_names': (list(job.selection.event_names)
                                     if job.selection.event_names else None),
            'filtered_out': summary['filtered_out']},
        'summary': summary,
        'requests': {
            'contact_upserts': summary['contacts'], 'event_sends': summary['events'],
            'total': requests, 'rate_limit': job.loops.rate_limit,
            'estimated_seconds': round(requests / job.loops.rate_limit, 1)},
        'contacts': {
            'upserts': summary['contacts'],
            'leads_created': seen.leads_created,
            'leads_merged': counts['contacts/leads_merged'],
            'ambiguous_leads': counts['contacts/ambiguous_leads'],
            'unsubscribes': summary['unsubscribes'],
            'resubscribes_sent': seen.resubscribes_sent},
        'held_back': {
            'old_events': {'count': summary['held_back_events'],
                           'max_event_age': job.max_event_age, 'option': SEND_OLD_EVENTS},
            'resubscribes': {'count': summary['held_back_resubscribes'],
                             'option': SEND_RESUBSCRIBES}},
        'properties': _properties_section(seen),
        'mailing_lists': {list_id: {'count': n, 'exists': list_id in seen.account.mailing_lists}
                          for list_id, n in sorted(seen.mailing_lists.items())},
        'adjustments': _adjustments(counts, seen.failures),
        'failures': dict(sorted(seen.failures.items())),
    }
    report['refused'] = _refused_section(report, counts, seen)
    report['findings'] = data_loss_findings(report)
    report['data_loss'] = bool(report['findings'])
    return report


def _input_section(counts, seen: Observations, job) -> dict:
    return {
        'patterns': list(job.input.patterns),
        'files': counts['read/files'],
        'files_read': counts[FILES_OPENED],
        'files_skipped_not_archive': counts['read/skipped_not_archive'],
        'files_skipped_outside_dates': counts['read/skipped_outside_dates'],
        'unreadable_files': seen.unreadable_files,
        'lines': counts['read/lines'],
        'sample': job.sample,
        'complete': job.sample is None or counts['read/lines'] < job.sample,
    }


def _account_section(schema: AccountSchema, team: str, unknown_properties: str) -> dict:
    return {'team': team,
            'custom_properties': len(schema.custom_properties),
            'mailing_lists': sorted(schema.mailing_lists),
            'unknown_properties': unknown_properties}


def _properties_section(seen: Observations) -> dict:
    properties = {}
    for key in sorted(seen.properties):
        stats = seen.properties[key]
        non_null = [(n, kind) for kind, n in stats.value_types.items() if kind != 'null']
        properties[key] = {
            'count': stats.count,
            'example': _example(stats.example),
            'inferred_type': max(non_null)[1] if non_null else 'null',
            'value_types': dict(sorted(stats.value_types.items())),
            'account_type': seen.account.properties.get(key),
            'status': property_status(key, stats, seen.account),
            'coerced': stats.coerced,
            'type_conflicts': stats.type_conflicts,
            'conflict_example': _example(stats.conflict_example),
        }
    return properties


def _adjustments(counts, failures) -> dict:
    """The changes made to values on the way (map/ and conform/ counters that
    are neither a failure's reason nor the path's own counts)."""
    return {name: n for name, n in sorted(counts.items())
            if name.startswith(('map/', 'conform/')) and n
            and name not in PATH_COUNTS and name not in failures}


def _refused_section(report: dict, counts, seen: Observations) -> dict:
    """Parts a backfill would leave out, by what they are: those the account
    refuses, fields no request can set, property names Loops cannot hold,
    invalid emails of calls sent by their userId, events whose name has a
    colon."""
    properties = report['properties'].items()
    under_fail = report['account']['unknown_properties'] == 'fail'
    return {
        'unknown_mailing_list': {list_id: item['count']
                                 for list_id, item in report['mailing_lists'].items()
                                 if not item['exists']},
        'type_mismatch': {key: item['type_conflicts'] for key, item in properties
                          if item['type_conflicts']},
        'unknown_property': {key: item['count'] for key, item in properties
                             if under_fail and item['status'] == MISSING},
        'not_settable': {key: item['count'] for key, item in properties
                         if item['status'] == NOT_SETTABLE_STATUS},
        'invalid_property_name': counts[INVALID_NAME],
        'invalid_email': counts[INVALID_EMAIL],
        COLON_IN_EVENT_NAME: dict(seen.colon_names.most_common()),
    }


def data_loss_findings(report: dict) -> list:
    """Each thing in a report that would lose data, as {kind, subject, count,
    message}: properties the account lacks, values its types cannot hold,
    mailing lists it lacks."""
    policy = report['account']['unknown_properties']
    outcome = {'send': 'sent anyway, Loops may not store them',
               'drop': 'dropped (--unknown_properties=drop)',
               'fail': 'refused as failure records (--unknown_properties=fail)'}[policy]
    findings = []
    for key, item in report['properties'].items():
        if item['status'] == MISSING:
            findings.append(_finding(
                'unknown_property', key, item['count'],
                f'property {key!r} does not exist in the Loops account: {item["count"]:,} '
                f'values would be {outcome}; create it as a {item["inferred_type"]} '
                f'property{_naming_hint(key)}'))
        elif item['status'] == TYPE_CONFLICT:
            findings.append(_finding(
                'type_mismatch', key, item['type_conflicts'],
                f'property {key!r} is a {item["account_type"]} in Loops: '
                f'{item["type_conflicts"]:,} values cannot be one (e.g. '
                f'{item["conflict_example"]!r}); those values would be refused (failure '
                'records), the rest of each request sent'))
    for key, n in report['refused']['not_settable'].items():
        findings.append(_finding(
            'not_settable', key, n,
            f'{key!r} cannot be sent: {NOT_SETTABLE[key]}; those {n:,} values would be '
            'refused (failure records), the rest of each request sent'))
    for list_id, n in report['refused']['unknown_mailing_list'].items():
        findings.append(_finding(
            'unknown_mailing_list', list_id, n,
            f'mailing list {list_id!r} does not exist in the Loops account: {n:,} requests '
            'name it; that part would be refused (failure records), the rest sent'))
    return findings


def _finding(kind: str, subject: str, count: int, message: str) -> dict:
    return {'kind': kind, 'subject': subject, 'count': count, 'message': message}


def _naming_hint(key: str) -> str:
    if CAMEL_CASE.fullmatch(key):
        return ''
    return ' (Loops property names are camelCase: rename it in the mapping)'


def _name_text(name: Any) -> str:
    return name if isinstance(name, str) else repr(name)


def _example(value: Any) -> Any:
    return value[:EXAMPLE_CHARS] if isinstance(value, str) else value
