"""`segment-loops check`: what a backfill would send, and what the Loops account would lose.

A preflight that writes nothing to Loops (it only reads the account's contact
properties and mailing lists). It reads the input (all of it, or the first
--sample lines), parses, filters, maps and conforms every event exactly as
the backfill does, and reports: events by type and track name; the contacts
and requests a backfill would make and how long they take at the rate limit;
every contact property the mapping would send, with its count, an example,
its inferred type and whether the account has it with a compatible type;
mailing lists the account lacks; values reshaped (flattened, joined,
truncated, dropped, coerced); events that would fail, by reason.

Exit status 1 when something would lose data (a property the account lacks,
a value its type cannot hold, an unknown mailing list), unless --warn_only.

The input is read in one plain loop rather than a Beam pipeline: a preflight
runs on one machine, and --sample stops after a few lines.
"""
import collections
import contextlib
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.loops_options import add_conform_options, add_loops_options, connect_to_loops
from pipeline.options import UsageError, add_input_options, add_selection_options, job_parser
from pipeline.selection import (ArchiveInput, EventSelection, archive_input_from_args,
                                event_selection_from_args)
from transforms.conform import (MAILING_LISTS, AccountSchema,
                                coerce_value, conform_body, is_changed,
                                is_custom_property)
from transforms.mapping import map_event
from transforms.parse import Rejected, parse_event
from transforms.process import keeps
from transforms.read import (READ_ERRORS, archive_items, archive_kind, in_date_range,
                             read_failure, received_day_ms)
from transforms.write import LoopsConnection

EXIT_OK = 0
# Not 1: the CLI uses 1 for a job that failed; a script must tell them apart.
EXIT_DATA_LOSS = 4
# Errors that end the reading of one file (as transforms/read.py counts them).
# Keys of a request body that are not contact properties, or are reported apart.
NOT_PROPERTIES = frozenset({'eventName', 'eventProperties', MAILING_LISTS})
EXAMPLE_CHARS = 80
TOP_TRACK_NAMES = 20
CAMEL_CASE = re.compile(r'[a-z][A-Za-z0-9]*', re.ASCII)
_ISO_DATE_TIME = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}', re.ASCII)

# Property statuses; the first two lose data.
MISSING, TYPE_CONFLICT, COERCED, OK, BUILT_IN = (
    'missing', 'type_conflict', 'coerced', 'ok', 'built_in')


@dataclass(frozen=True)
class CheckJob:
    """What one check reads and compares, validated before anything is read."""
    input: ArchiveInput
    selection: EventSelection
    unknown_properties: str
    sample: Optional[int]
    report_path: Optional[str]
    warn_only: bool
    loops: LoopsConnection


def check_parser():
    parser = job_parser('segment-loops check', __doc__.split('\n\n')[0])
    add_input_options(parser)
    add_selection_options(parser)
    add_conform_options(parser)
    group = parser.add_argument_group('check')
    group.add_argument(
        '--sample', type=int, default=None, metavar='N',
        help='Read only the first N lines (files in path order), for a quick look.')
    group.add_argument(
        '--report', default=None, metavar='PATH',
        help='Also write the report as a JSON object to PATH.')
    group.add_argument(
        '--warn_only', action='store_true', default=False,
        help='Exit 0 even when the check finds data that would be lost.')
    add_loops_options(parser)
    return parser


def job_from_args(args, options: PipelineOptions) -> CheckJob:
    """Validates what the user asked for; raises UsageError with what to fix."""
    if not args.input:
        raise UsageError('--input is required (e.g. --input "archive/segment-logs/*/*/*.gz")')
    if args.sample is not None and args.sample < 1:
        raise UsageError('--sample must be a positive number of lines')
    return CheckJob(
        input=archive_input_from_args(args, options),
        selection=event_selection_from_args(args, ('identify',)),
        unknown_properties=args.unknown_properties,
        sample=args.sample,
        report_path=args.report,
        warn_only=args.warn_only,
        loops=connect_to_loops(args),
    )


# --- Reading ---

@dataclass
class FileSelection:
    """The archive files to read, in path order, and how many were skipped."""
    paths: list
    skipped_not_archive: int = 0
    skipped_outside_dates: int = 0


def select_files(patterns: tuple, since_ms: Optional[int],
                 until_ms: Optional[int]) -> FileSelection:
    """The files matching `patterns` that the backfill would read (archives
    in the received-day range), each once, in path order."""
    selection = FileSelection([])
    paths = set()
    for result in FileSystems.match(list(patterns)):
        paths.update(metadata.path for metadata in result.metadata_list)
    for path in sorted(paths):
        if archive_kind(path) is None:
            selection.skipped_not_archive += 1
        elif not in_date_range(received_day_ms(path), since_ms, until_ms):
            selection.skipped_outside_dates += 1
        else:
            selection.paths.append(path)
    return selection


# --- Looking at each event ---

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


class Preflight:
    """Everything a backfill would do with each input line, counted.

    In: the job's selection, mapping and policy, and the account's schema.
    `add_line` takes one raw line (or Avro event dict); `add_unreadable` one
    file that could not be read to its end. Steps and their counts mirror
    the backfill's (parse -> filter -> map -> conform -> drop duplicates ->
    one merged upsert per contact), so its failures by reason are those the
    backfill's summary would show.
    """

    def __init__(self, job: CheckJob, schema: AccountSchema):
        self._job = job
        self._types = frozenset(job.selection.types)
        self._event_names = frozenset(job.selection.event_names) if job.selection.event_names else None
        self.schema = schema
        self.lines = 0
        self.files_read = 0
        self.unreadable_files = []
        self.by_type = collections.Counter()
        self.track_names = collections.Counter()
        self.filtered_out = 0
        self.failures = collections.Counter()
        self.adjustments = collections.Counter()
        self.properties: dict[str, PropertyStats] = {}
        self.mailing_lists = collections.Counter()
        self.duplicates = 0
        self.upserts = 0
        self.event_requests = 0
        self._upsert_contacts = set()
        self._contacts = set()
        self._seen = set()

    def add_unreadable(self, path: str, error: Exception, items_read: int) -> None:
        record = read_failure(path, error, items_read)
        self.failures[f'read/{record["reason"]}'] += 1
        self.unreadable_files.append({'path': path, 'reason': record['reason'],
                                      'message': record['message']})

    def add_line(self, raw: Any, source: str) -> None:
        self.lines += 1
        try:
            event = parse_event(raw, source)
        except Rejected as rejected:
            self.failures[f'parse/{rejected.reason}'] += 1
            return
        self.by_type[event.type] += 1
        if event.type == 'track':
            name = event.data.get('event')
            self.track_names[name if isinstance(name, str) else json.dumps(name)] += 1
        if not keeps(event, self._types, self._event_names):
            self.filtered_out += 1
            return
        try:
            mapped = map_event(event, self._job.selection.mapping)
        except Rejected as rejected:
            self.failures[f'map/{rejected.reason}'] += 1
            return
        self.adjustments.update({f'map/{name}': n for name, n in mapped.adjustments.items()})
        request = mapped.request
        self._inspect(request.body, request.is_event)
        try:
            _, adjustments = conform_body(request.body, self.schema,
                                          self._job.unknown_properties,
                                          is_event=request.is_event)
        except Rejected as rejected:
            self.failures[f'map/{rejected.reason}'] += 1
            return
        self.adjustments.update({f'conform/{name}': n for name, n in adjustments.items()})
        self._count_request(request)

    def _inspect(self, body: dict, is_event: bool) -> None:
        for key, value in body.items():
            if key == MAILING_LISTS:
                self.mailing_lists.update(list(value))
                continue
            if key in NOT_PROPERTIES:
                continue
            stats = self.properties.get(key)
            if stats is None:
                stats = self.properties[key] = PropertyStats()
            stats.count += 1
            stats.value_types[value_type(value)] += 1
            if stats.example is None:
                stats.example = value
            loops_type = self.schema.properties.get(key)
            if loops_type is None or not is_custom_property(key, is_event):
                continue
            try:
                coerced = coerce_value(key, value, loops_type)
            except Rejected:
                stats.type_conflicts += 1
                if stats.conflict_example is None:
                    stats.conflict_example = value
                continue
            if is_changed(value, coerced):
                stats.coerced += 1

    def _count_request(self, request) -> None:
        # As GroupByContact does: a repeated messageId of the same contact
        # and kind is dropped; a contact's upserts become one request.
        message_id = request.order[2]
        if message_id:
            key = (request.is_event, request.contact, message_id)
            if key in self._seen:
                self.duplicates += 1
                return
            self._seen.add(key)
        self._contacts.add(request.contact)
        if request.is_event:
            self.event_requests += 1
        else:
            self.upserts += 1
            self._upsert_contacts.add(request.contact)

    @property
    def contacts(self) -> int:
        return len(self._contacts)

    @property
    def contact_requests(self) -> int:
        return len(self._upsert_contacts)


class Unreadable(NamedTuple):
    """The last item of a file that could not be read to its end."""
    error: Exception


def file_items(path: str) -> Iterator:
    """The items of one archive file (see archive_items), then an Unreadable
    when reading failed part way (the items before it are good)."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            yield from archive_items(path, raw)
    except READ_ERRORS as error:
        yield Unreadable(error)


def scan(selection: FileSelection, preflight: Preflight, limit: Optional[int]) -> None:
    """Feeds every line of the selected files (at most `limit`) to `preflight`."""
    for path in selection.paths:
        if limit is not None and preflight.lines >= limit:
            return
        preflight.files_read += 1
        with contextlib.closing(file_items(path)) as items:
            for number, item in enumerate(items, start=1):
                if isinstance(item, Unreadable):
                    preflight.add_unreadable(path, item.error, number - 1)
                    break
                if limit is not None and preflight.lines >= limit:
                    break
                preflight.add_line(item, f'{path}:{number}')


# --- The report ---

def property_status(key: str, stats: PropertyStats, schema: AccountSchema) -> str:
    """built_in (a Loops field), missing (not in the account), type_conflict
    (some values cannot be coerced), coerced (some values would be), or ok."""
    if not is_custom_property(key, is_event=False):
        return BUILT_IN
    if key not in schema.properties:
        return MISSING
    if stats.type_conflicts:
        return TYPE_CONFLICT
    return COERCED if stats.coerced else OK


def build_report(preflight: Preflight, selection: FileSelection, job: CheckJob,
                 team: str) -> dict:
    """The check's findings as one JSON-ready object (see the README)."""
    schema = preflight.schema
    properties = {}
    for key in sorted(preflight.properties):
        stats = preflight.properties[key]
        non_null = [(n, kind) for kind, n in stats.value_types.items() if kind != 'null']
        properties[key] = {
            'count': stats.count,
            'example': _example(stats.example),
            'inferred_type': max(non_null)[1] if non_null else 'null',
            'value_types': dict(sorted(stats.value_types.items())),
            'account_type': schema.properties.get(key),
            'status': property_status(key, stats, schema),
            'coerced': stats.coerced,
            'type_conflicts': stats.type_conflicts,
            'conflict_example': _example(stats.conflict_example),
        }
    mailing_lists = {list_id: {'count': n, 'exists': list_id in schema.mailing_lists}
                     for list_id, n in sorted(preflight.mailing_lists.items())}
    requests = preflight.contact_requests + preflight.event_requests
    report = {
        'input': {
            'patterns': list(job.input.patterns),
            'files': len(selection.paths),
            'files_read': preflight.files_read,
            'files_skipped_not_archive': selection.skipped_not_archive,
            'files_skipped_outside_dates': selection.skipped_outside_dates,
            'unreadable_files': preflight.unreadable_files,
            'lines': preflight.lines,
            'sample': job.sample,
            'complete': job.sample is None or preflight.lines < job.sample,
        },
        'events': {
            'by_type': dict(preflight.by_type.most_common()),
            'track_by_name': dict(preflight.track_names.most_common()),
            'selected_types': list(job.selection.types),
            'selected_track_names': list(job.selection.event_names) if job.selection.event_names else None,
            'filtered_out': preflight.filtered_out,
        },
        'backfill': {
            'contacts': preflight.contacts,
            'contact_upserts': preflight.upserts,
            'contact_requests': preflight.contact_requests,
            'event_requests': preflight.event_requests,
            'requests': requests,
            'duplicates': preflight.duplicates,
            'rate_limit': job.loops.rate_limit,
            'estimated_seconds': round(requests / job.loops.rate_limit, 1),
        },
        'account': {
            'team': team,
            'custom_properties': sum(1 for key in schema.properties
                                     if is_custom_property(key, is_event=False)),
            'mailing_lists': sorted(schema.mailing_lists),
            'unknown_properties': job.unknown_properties,
        },
        'properties': properties,
        'mailing_lists': mailing_lists,
        'adjustments': dict(sorted(preflight.adjustments.items())),
        'failures': dict(sorted(preflight.failures.items())),
    }
    report['findings'] = data_loss_findings(report)
    report['data_loss'] = bool(report['findings'])
    return report


def data_loss_findings(report: dict) -> list:
    """Each thing in a report that would lose data, as {kind, subject, count,
    message}: properties the account lacks, values its types cannot hold,
    mailing lists it lacks."""
    policy = report['account']['unknown_properties']
    outcome = {'send': 'sent anyway, Loops may not store them',
               'drop': 'dropped (--unknown_properties=drop)',
               'fail': 'failure records (--unknown_properties=fail)'}[policy]
    findings = []
    for key, item in report['properties'].items():
        if item['status'] == MISSING:
            findings.append({
                'kind': 'unknown_property', 'subject': key, 'count': item['count'],
                'message': f'property {key!r} does not exist in the Loops account: '
                           f'{item["count"]:,} values would be {outcome}; create it as a '
                           f'{item["inferred_type"]} property{_naming_hint(key)}'})
        elif item['status'] == TYPE_CONFLICT:
            findings.append({
                'kind': 'type_mismatch', 'subject': key, 'count': item['type_conflicts'],
                'message': f'property {key!r} is a {item["account_type"]} in Loops: '
                           f'{item["type_conflicts"]:,} values cannot be one (e.g. '
                           f'{item["conflict_example"]!r}); those events would fail'})
    for list_id, item in report['mailing_lists'].items():
        if not item['exists']:
            findings.append({
                'kind': 'unknown_mailing_list', 'subject': list_id, 'count': item['count'],
                'message': f'mailing list {list_id!r} does not exist in the Loops account: '
                           f'{item["count"]:,} requests name it and would fail'})
    return findings


def format_report(report: dict) -> str:
    """The report as text for a person."""
    source, events, backfill = report['input'], report['events'], report['backfill']
    account = report['account']
    read = f'{source["lines"]:,} lines from {source["files_read"]:,} of {source["files"]:,} files'
    if not source['complete']:
        read += f' (--sample {source["sample"]:,}: the figures cover these lines only)'
    lines = [f'Read {read}.',
             f'Loops account: {account["team"]} ({account["custom_properties"]} custom '
             f'properties, mailing lists: {", ".join(account["mailing_lists"]) or "none"}).']
    for item in source['unreadable_files']:
        lines.append(f'Unreadable: {item["path"]}: {item["message"]}')
    selected = set(events['selected_types'])
    lines += ['', 'Events by type']
    lines += _table([(kind, f'{n:,}', '' if kind in selected else 'not selected')
                     for kind, n in events['by_type'].items()])
    if events['track_by_name']:
        names = list(events['track_by_name'].items())
        lines += ['', 'Track events by name']
        lines += _table([(name, f'{n:,}') for name, n in names[:TOP_TRACK_NAMES]])
        if len(names) > TOP_TRACK_NAMES:
            lines.append(f'  ... and {len(names) - TOP_TRACK_NAMES:,} more names')
    lines += ['', 'A backfill would make']
    lines += _table([
        ('contacts', f'{backfill["contacts"]:,}'),
        ('contact upserts', f'{backfill["contact_requests"]:,}',
         f'(merged from {backfill["contact_upserts"]:,})'),
        ('event sends', f'{backfill["event_requests"]:,}'),
        ('requests', f'{backfill["requests"]:,}',
         f'about {duration_text(backfill["estimated_seconds"])} at '
         f'{backfill["rate_limit"]:g} requests/s'),
        ('duplicates dropped', f'{backfill["duplicates"]:,}')])
    if report['properties']:
        lines += ['', 'Contact properties']
        lines += _table(
            [('property', 'count', 'inferred', 'in Loops', 'status', 'example')]
            + [(key, f'{item["count"]:,}', item['inferred_type'], item['account_type'] or '-',
                _status_text(item), _short(json.dumps(item['example'], ensure_ascii=False)))
               for key, item in report['properties'].items()])
    if report['mailing_lists']:
        lines += ['', 'Mailing lists']
        lines += _table([(list_id, f'{item["count"]:,}',
                          'ok' if item['exists'] else 'NOT IN THE ACCOUNT')
                         for list_id, item in report['mailing_lists'].items()])
    if report['adjustments']:
        lines += ['', 'Values reshaped']
        lines += _table([(name, f'{n:,}') for name, n in report['adjustments'].items()])
    if report['failures']:
        lines += ['', 'Failures by step and reason (not sent)']
        lines += _table([(name, f'{n:,}') for name, n in report['failures'].items()])
    lines.append('')
    if report['findings']:
        lines.append(f'Data would be lost ({len(report["findings"])} findings):')
        lines += [f'  - {finding["message"]}' for finding in report['findings']]
    else:
        lines.append('No data would be lost to the Loops account.')
    return '\n'.join(lines)


def duration_text(seconds: float) -> str:
    """3725 -> '1h 02m', 75 -> '1m 15s', 4.2 -> '4s'."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f'{hours}h {minutes:02d}m'
    if minutes:
        return f'{minutes}m {secs:02d}s'
    return f'{secs}s'


def _naming_hint(key: str) -> str:
    if CAMEL_CASE.fullmatch(key):
        return ''
    return ' (Loops property names are camelCase: rename it in the mapping)'


def _status_text(item: dict) -> str:
    if item['status'] == TYPE_CONFLICT:
        return f'TYPE CONFLICT ({item["type_conflicts"]:,})'
    if item['status'] == MISSING:
        return 'NOT IN THE ACCOUNT'
    if item['status'] == COERCED:
        return f'coerced ({item["coerced"]:,})'
    return item['status'].replace('_', '-')


def _example(value: Any) -> Any:
    return value[:EXAMPLE_CHARS] if isinstance(value, str) else value


def _short(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS // 2 else text[:EXAMPLE_CHARS // 2 - 3] + '...'


def _table(rows: list) -> list:
    widths = [max(len(row[i]) for row in rows if i < len(row))
              for i in range(max(len(row) for row in rows))]
    return ['  ' + '  '.join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
            for row in rows]


def write_report(report: dict, path: str) -> None:
    with FileSystems.create(path) as out:
        out.write(json.dumps(report, indent=2, ensure_ascii=False).encode('utf-8'))


def main(argv: Optional[list] = None, out=sys.stdout) -> int:
    """Runs the check; returns the exit status: 1 when data would be lost
    (0 with --warn_only), else 0. Raises UsageError, AuthError, LoopsError."""
    args, beam_args = check_parser().parse_known_args(argv)
    job = job_from_args(args, PipelineOptions(beam_args))
    client = job.loops.client()
    try:
        team = client.check_key()
        schema = AccountSchema.fetch(client)
    finally:
        client.close()
    selection = select_files(job.input.patterns, job.input.since_ms, job.input.until_ms)
    preflight = Preflight(job, schema)
    scan(selection, preflight, job.sample)
    report = build_report(preflight, selection, job, team)
    print(format_report(report), file=out)
    if job.report_path:
        write_report(report, job.report_path)
    if report['data_loss'] and not job.warn_only:
        return EXIT_DATA_LOSS
    return EXIT_OK
