"""A first load by CSV: contact upserts as files for Loops' audience import.

Loops imports a CSV file from its dashboard with no API rate limit: a million
contacts take minutes instead of 28 hours of upserts. Columns (loops-api.md,
"Audience import by CSV"): Email, First Name, Last Name, User Group, Source,
User ID, Subscribed, then one column per custom property under its API name.
A row finds its contact by User ID, then Email; an empty cell leaves a value
as it is and `null` clears it.

What an upsert carries that a cell cannot is left for the API (the next run
sends it, as the sync state has no record of it): mailing lists (no column),
`subscribed: true` (an import never re-subscribes; `false` is written),
properties whose name cannot be a column (not a camelCase API name), and
text a cell would change (empty, `null`, or with spaces at either end, which
the import trims). Each file gets only the columns its rows use, so a
property no row of the file has is left as it is.

`WriteContactsCsv` writes the rows in as few files as `rows_per_file`
allows (one writer writes them all: a million rows take seconds, and each
file is one import by hand) and, with a sync state, records what it wrote
(the recorder of the API writers, transforms/state/recorder.py; the job
records it as pending, see pipeline/state.py).
"""
import csv
import dataclasses
import io
import re
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.core.kinds import MAILING_LISTS
from transforms.core.metrics import BundleCounts
from transforms.core.records import LoopsRequest
from transforms.core.sinks import output_prefix
from transforms.loops.retry import Outcome

IDENTITY_KEYS = ('userId', 'email')
DEFAULT_COLUMNS = (('email', 'Email'), ('firstName', 'First Name'),
                   ('lastName', 'Last Name'), ('userGroup', 'User Group'),
                   ('source', 'Source'), ('userId', 'User ID'), ('subscribed', 'Subscribed'))
DEFAULT_LABELS = dict(DEFAULT_COLUMNS)
DEFAULT_ROWS_PER_FILE = 50_000
CLEAR = 'null'
# Loops' API names of custom properties, the only names a column can have.
COLUMN_NAME = re.compile(r'[a-z][A-Za-z0-9]*', re.ASCII)
RECORDED = Outcome('delivered', None, None, 0, 0, None, None)


def csv_cell(key: str, value) -> Optional[str]:
    """The cell that sets `value`, or None when no cell can."""
    if key == 'subscribed':
        return 'false' if value is False else None
    if key in IDENTITY_KEYS and not isinstance(value, str):
        return None          # an import cannot clear them
    if value is None:
        return CLEAR
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and value and value != CLEAR and value == value.strip():
        return value
    return None


def in_a_cell(key: str, value) -> bool:
    """Whether a CSV cell can set property `key` to `value`."""
    named = key in DEFAULT_LABELS or (key != MAILING_LISTS and COLUMN_NAME.fullmatch(key))
    return bool(named) and csv_cell(key, value) is not None


def split_upsert(request: LoopsRequest) -> tuple:
    """An upsert -> (row, rest): `row` the properties a CSV row sets
    ({key: value}), `rest` the body of what must go through the API (with
    the contact's userId and email), or None when nothing must."""
    row, rest = {}, {}
    for key, value in request.body.items():
        if in_a_cell(key, value):
            row[key] = value
        else:
            rest[key] = value
    if not rest:
        return row, None
    for key in IDENTITY_KEYS:
        if key in request.body:
            rest[key] = request.body[key]
    return row, rest


def columns_of(rows) -> list:
    """The (key, header) columns of some rows: the default ones they use,
    in Loops' order, then their custom properties by name."""
    keys = set().union(*rows) if rows else set()
    custom = sorted(keys - set(DEFAULT_LABELS))
    return ([(key, label) for key, label in DEFAULT_COLUMNS if key in keys]
            + [(key, key) for key in custom])


def csv_text(rows: list) -> str:
    """Rows ({key: value}) -> the text of one CSV file, header first."""
    columns = columns_of(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow([label for _, label in columns])
    for row in rows:
        writer.writerow(['' if key not in row else csv_cell(key, row[key])
                         for key, _ in columns])
    return out.getvalue()


def csv_path(prefix: str, number: int) -> str:
    return f'{output_prefix(prefix, "contacts")}-{number:04d}.csv'


class _WriteCsvFiles(beam.DoFn):
    def __init__(self, prefix: str, rows_per_file: int, recorder):
        self._prefix = prefix
        self._rows_per_file = rows_per_file
        self._recorder = recorder

    def setup(self):
        self._counts = BundleCounts()

    def process(self, grouped):
        _, requests = grouped
        if self._recorder is not None:
            self._recorder.open()
        rows, written = [], []
        for request in requests:
            row, rest = split_upsert(request)
            if rest is not None:
                self._counts['csv/left_for_api'] += 1
            if row:
                rows.append((request, row))
            if len(rows) >= self._rows_per_file:
                written.append(self._write(len(written), rows))
                rows = []
        if rows:
            written.append(self._write(len(written), rows))
        if self._recorder is not None:
            self._recorder.close()
        yield from written

    def _write(self, number: int, rows: list) -> str:
        path = csv_path(self._prefix, number)
        with FileSystems.create(path, mime_type='text/csv') as out:
            out.write(csv_text([row for _, row in rows]).encode('utf-8'))
        self._counts['csv/files'] += 1
        self._counts['csv/rows'] += len(rows)
        if self._recorder is not None:
            for request, row in rows:
                self._recorder.record(dataclasses.replace(request, body=row), RECORDED)
            self._recorder.flush()
        return path

    def finish_bundle(self):
        self._counts.flush()


class WriteContactsCsv(beam.PTransform):
    """ContactSequence (one upsert each) -> paths of the CSV files written
    under `prefix` (`<prefix>-NNNN.csv`, ceil(rows / rows_per_file) files of
    at most `rows_per_file` rows). Counts `csv/rows`, `csv/files` and
    `csv/left_for_api` (upserts with something no cell can carry: see the
    module docstring). With a `recorder` (transforms/state/recorder.py),
    each row is recorded as delivered, after its file is written."""

    def __init__(self, prefix: str, rows_per_file: int = DEFAULT_ROWS_PER_FILE,
                 recorder=None):
        super().__init__()
        if rows_per_file < 1:
            raise ValueError(f'rows_per_file must be at least 1, got {rows_per_file!r}')
        self._prefix = prefix
        self._rows_per_file = rows_per_file
        self._recorder = recorder

    def expand(self, sequences):
        return (sequences
                | 'Upserts' >> beam.FlatMap(lambda sequence: sequence.requests)
                | 'OneWriter' >> beam.Map(lambda request: (0, request))
                | 'GroupForFiles' >> beam.GroupByKey()
                | 'WriteCsv' >> beam.ParDo(_WriteCsvFiles(
                    self._prefix, self._rows_per_file, self._recorder)))

