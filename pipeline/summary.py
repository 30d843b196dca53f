"""The run summary: Beam counters -> a JSON object of integers and a table.

Every figure comes from the pipeline's Beam metrics (namespace
`segment_loops`, names `<step>/<outcome>`), so the summary and a Dataflow
console show the same numbers.
"""
import json
from typing import Mapping

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from transforms.metrics import NAMESPACE

# Summary key -> counter name. The first block adds up:
# read == parse_failed + duplicates + filtered_out + map_failed + coalesced + contacts + events
BACKFILL_KEYS = {
    'read': 'read/lines',
    'parse_failed': 'parse/failed',
    'duplicates': 'coalesce/duplicates',
    'filtered_out': 'filter/filtered_out',
    'map_failed': 'map/failed',
    'coalesced': 'coalesce/merged',
    'contacts': 'coalesce/contact_requests',
    'events': 'coalesce/event_requests',
    'files': 'read/files',
    'files_unreadable': 'read/unreadable_files',
    'files_skipped_not_archive': 'read/skipped_not_archive',
    'files_skipped_outside_dates': 'read/skipped_outside_dates',
}
DELIVERY_KEYS = {
    'delivered': 'deliver/delivered',
    'already_delivered': 'deliver/already_delivered',
    'delivery_failed': 'deliver/failed',
    'retries': 'deliver/retries',
    'rate_limited': 'deliver/rate_limited',
}
ACCOUNTED = ('parse_failed', 'duplicates', 'filtered_out', 'map_failed',
             'coalesced', 'contacts', 'events')


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
    """read minus everything it became: 0 when every line is accounted for."""
    return summary['read'] - sum(summary[key] for key in ACCOUNTED)


def format_table(summary: Mapping[str, int], title: str = 'summary') -> str:
    width = max(len(key) for key in summary)
    lines = [title, '-' * (width + 14)]
    lines += [f'{key:<{width}}  {value:>12,}' for key, value in summary.items()]
    return '\n'.join(lines)


def write_summary(summary: Mapping[str, int], path: str) -> None:
    with FileSystems.create(path) as out:
        out.write(json.dumps(summary, indent=2).encode('utf-8'))
