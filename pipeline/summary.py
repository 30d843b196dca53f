"""The run summary: Beam counters -> a JSON object of integers and a table.

Every figure comes from the pipeline's Beam metrics (namespace
`segment_loops`, names `<step>/<outcome>`), so the summary and a Dataflow
console show the same numbers.
"""
import json
from typing import Mapping

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from transforms.core.metrics import NAMESPACE

# Summary key -> counter name. The first block accounts for every line read:
# read == parse_failed + filtered_out + map_failed + held_back_events + duplicates
#         + merged + [contacts_unchanged] + [contacts_before_deletion] + contacts
#         + [events_already_sent] + [events_before_deletion] + events
# (the bracketed keys with --state, STATE_KEYS)
BACKFILL_KEYS = {
    'read': 'read/lines',
    'parse_failed': 'parse/failed',
    'filtered_out': 'filter/filtered_out',
    'map_failed': 'map/failed',
    'held_back_events': 'held_back/old_events',
    'duplicates': 'order/duplicates',
    'contacts': 'contacts/upserts',
    'events': 'order/requests',
    'held_back_resubscribes': 'held_back/resubscribes',
    'unsubscribes': 'contacts/unsubscribes',
    'leads_merged': 'contacts/leads_merged',
    'files': 'read/files',
    'files_unreadable': 'read/unreadable_files',
    'files_skipped_not_archive': 'read/skipped_not_archive',
    'files_skipped_outside_dates': 'read/skipped_outside_dates',
}
DELIVERY_KEYS = {
    'delivered': 'deliver/delivered',
    'already_delivered': 'deliver/already_delivered',
    'delivery_failed': 'deliver/failed',
    'not_sent': 'deliver/not_sent',
    'retries': 'deliver/retries',
    'rate_limited': 'deliver/rate_limited',
}
# With a sync state (--state), what it kept from being sent again, and what
# of deleted contacts predates their deletion; with --contacts_csv, what went
# into the CSV files instead of upserts.
STATE_KEYS = {
    'contacts_unchanged': 'state/unchanged',
    'events_already_sent': 'state/events_already_sent',
    'contacts_before_deletion': 'state/contacts_before_deletion',
    'events_before_deletion': 'state/events_before_deletion',
}
CSV_KEYS = {
    'csv_rows': 'csv/rows',
    'csv_files': 'csv/files',
    'csv_left_for_api': 'csv/left_for_api',
}
# Counted in filtered_out too; a detail of the summary under this name.
INTEGRATIONS_OFF = 'filter/integrations_off'
# What a run wrote to its dead letter: the records in all, then (details)
# dead_letter/<stage>_<reason> for each kind (transforms/core/sinks.py).
FAILURE_KEYS = {'dead_lettered': 'dead_letter/records'}
# Event sends by userId that Loops did not know, sent again with their email
# (counted in delivered, already_delivered or delivery_failed by how that
# ended); a detail of the summary under this name.
SENT_WITH_FALLBACK_EMAIL = 'deliver/sent_with_fallback_email'
# The routes that took a call beyond its first: each an outcome of its own.
MORE_ROUTES = 'map/more_routes'
ACCOUNTED = ('parse_failed', 'filtered_out', 'map_failed', 'held_back_events', 'duplicates',
             'merged', 'contacts_unchanged', 'contacts_before_deletion', 'contacts',
             'events_already_sent', 'events_before_deletion', 'events')
DETAIL_PREFIXES = ('filter/filtered_out_', INTEGRATIONS_OFF, 'parse/', 'map/', 'conform/',
                   'refused/', 'held_back/', 'deliver/failed_', SENT_WITH_FALLBACK_EMAIL,
                   'state/', 'dead_letter/', 'read/stopped_files', 'workflows/')


def backfill_summary(counters: Mapping[str, int], keys: Mapping[str, str]) -> dict:
    """A backfill's summary: the named figures, `merged` (contact updates
    folded into another update of the same contact: every mapped update
    that did not become an upsert of its own, nor a contact the sync state
    found unchanged or deleted since), then the details."""
    summary = build_summary(counters, keys, DETAIL_PREFIXES)
    merged = (int(counters.get('map/contact_updates', 0)) - summary['contacts']
              - summary.get('contacts_unchanged', 0)
              - summary.get('contacts_before_deletion', 0))
    figures = list(summary.items())
    at = [key for key, _ in figures].index('contacts')
    return dict(figures[:at] + [('merged', merged)] + figures[at:])


def pipeline_counters(result) -> dict:
    """All counters of our namespace, summed over steps: name -> int."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals = {}
    for counter in query['counters']:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(value or 0)
    return totals


def build_summary(counters: Mapping[str, int], keys: Mapping[str, str],
                  detail_prefixes: tuple = ()) -> dict:
    """The named figures (0 when a counter never fired), then every counter
    whose name starts with one of `detail_prefixes`, under its own name."""
    summary = {key: int(counters.get(name, 0)) for key, name in keys.items()}
    for name in sorted(counters):
        if name.startswith(detail_prefixes) and name not in keys.values():
            summary[name] = int(counters[name])
    return summary


def unaccounted(summary: Mapping[str, int]) -> int:
    """read minus everything it became: 0 when every line is accounted for
    (a call several routes of the mapping take becomes an outcome of each:
    `map/more_routes` counts those beyond the first)."""
    return (summary['read'] + summary.get(MORE_ROUTES, 0)
            - sum(summary.get(key, 0) for key in ACCOUNTED))


def format_table(summary: Mapping[str, int], title: str = 'summary') -> str:
    width = max(len(key) for key in summary)
    lines = [title, '-' * (width + 14)]
    lines += [f'{key:<{width}}  {value:>12,}' for key, value in summary.items()]
    return '\n'.join(lines)


def held_back_note(summary: Mapping[str, int], max_event_age: str) -> str:
    """What the run held back and the option that sends it, for a person
    ('' when nothing was)."""
    lines = [note for note in (integrations_note(summary),) if note]
    events = summary.get('held_back_events', 0)
    if events:
        lines.append(f'Held back {events:,} track events older than --max_event_age '
                     f'{max_event_age}: Loops would trigger their emails today. To send them: '
                     '--max_event_age none')
    resubscribes = summary.get('held_back_resubscribes', 0)
    if resubscribes:
        lines.append(f'Held back subscribed: true for {resubscribes:,} contacts: it would '
                     're-subscribe anyone who unsubscribed since (new contacts are subscribed '
                     'anyway). To send it: --resubscribe')
    return '\n'.join(lines)


def integrations_note(figures: Mapping[str, int]) -> str:
    """What the calls' own `integrations` kept from Loops, and the option
    that sends it anyway ('' when nothing was); `figures`: a summary or a
    stream's counters."""
    count = figures.get(INTEGRATIONS_OFF, 0)
    if not count:
        return ''
    return (f'Left out {count:,} calls whose "integrations" turned Loops off ("Loops (Actions)": '
            'false, or "All": false): Segment never gave them to Loops. To send them: '
            '--ignore_integrations')


def write_summary(summary: Mapping[str, int], path: str) -> None:
    with FileSystems.create(path) as out:
        out.write(json.dumps(summary, indent=2).encode('utf-8'))
