"""Whether Loops has the contacts of a CSV load: a sample of its rows, looked up.

`state confirm-import` counts a CSV load's contacts as delivered once its
files are imported into Loops (docs/incremental-runs.md). Taken on the
user's word, a forgotten or half-done import would leave contacts that no
later run sends. With `--check N` it looks up N rows of the files first
(GET /v1/contacts/find, by User ID, else by Email, at the rate limit) and
confirms only when Loops has every one.

The rows are spread evenly over all the files, in file order, so a file
that was not imported is met whatever its place. Only rows with an email
are sampled: a row without one creates no contact in an import (Loops
reports it as an error, and the load is confirmed all the same: the
incremental-runs page says why). The report names rows by file and line,
never by email.
"""
import csv
import io
from dataclasses import dataclass
from typing import Iterable, Optional

from apache_beam.io.filesystems import FileSystems

from transforms.core.sinks import output_prefix
from transforms.loops.account import find_contact
from transforms.loops.client import LoopsClient

DEFAULT_SAMPLE = 20


@dataclass(frozen=True)
class CsvRow:
    """One contact row of a CSV file: where it is, and how Loops finds it."""
    path: str
    line: int
    user_id: Optional[str]
    email: str

    def __str__(self) -> str:
        return f'line {self.line} of {self.path}'


@dataclass(frozen=True)
class ImportCheck:
    """What the look-up found: the rows looked up, those Loops lacks, and the
    files read (none: the files are not where --contacts_csv says)."""
    files: tuple
    sampled: tuple
    missing: tuple

    @property
    def imported(self) -> bool:
        return bool(self.sampled) and not self.missing


def csv_files(contacts_csv: str) -> list:
    """The CSV files a backfill wrote with this --contacts_csv, in order."""
    pattern = output_prefix(contacts_csv, 'contacts') + '-*.csv'
    matched = FileSystems.match([pattern])[0].metadata_list
    return sorted(metadata.path for metadata in matched)


def rows_with_email(path: str) -> Iterable[CsvRow]:
    """The rows of one file that an import can create (an Email cell)."""
    with FileSystems.open(path) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding='utf-8', newline=''))
        header = next(reader, [])
        email_at = header.index('Email') if 'Email' in header else None
        user_id_at = header.index('User ID') if 'User ID' in header else None
        for line, cells in enumerate(reader, start=2):
            email = cells[email_at].strip() if email_at is not None else ''
            if email:
                user_id = cells[user_id_at].strip() if user_id_at is not None else ''
                yield CsvRow(path, line, user_id or None, email)


def spread_indices(total: int, size: int) -> list:
    """`size` indices of `total` rows, spread evenly from the first to the
    last (all of them when there are no more)."""
    if total <= size:
        return list(range(total))
    if size == 1:
        return [0]
    return [round(i * (total - 1) / (size - 1)) for i in range(size)]


def check_import(client: LoopsClient, contacts_csv: str, size: int) -> ImportCheck:
    """Looks up `size` rows of the CSV files in Loops. The files are read
    twice, to count their rows and then to take the sample, so a load of
    millions of contacts is checked in the memory of `size` rows. Raises
    AuthError or LoopsError when Loops cannot be asked."""
    files = csv_files(contacts_csv)
    total = sum(1 for path in files for _ in rows_with_email(path))
    chosen = set(spread_indices(total, size))
    every_row = (row for path in files for row in rows_with_email(path))
    sampled = tuple(row for index, row in enumerate(every_row) if index in chosen)
    missing = tuple(row for row in sampled
                    if find_contact(client, row.user_id, row.email) is None)
    return ImportCheck(tuple(files), sampled, missing)


def check_report(check: ImportCheck, contacts_csv: str) -> str:
    """The lines a person reads about the check."""
    if not check.files:
        return (f'No CSV file of a load under --contacts_csv {contacts_csv}: give the '
                'prefix the backfill wrote them to.')
    if not check.sampled:
        return (f'The {len(check.files)} CSV files under {contacts_csv} have no row with an '
                'email: nothing to look up.')
    if not check.missing:
        return (f'Looked up {len(check.sampled)} contacts of the {len(check.files)} CSV files '
                'in Loops: all found.')
    shown = ', '.join(str(row) for row in check.missing[:3])
    more = f' and {len(check.missing) - 3} more' if len(check.missing) > 3 else ''
    return (f'Not confirmed: {len(check.missing)} of {len(check.sampled)} contacts looked up '
            f'are not in Loops ({shown}{more}). Import the files (all of them), then run this '
            'again; if they will not be imported, `--discard` forgets the load and the next '
            'run sends its contacts as upserts.')
