"""Segment's S3 layout on a local disk: day folders of gzip NDJSON files.

`ArchiveWriter` writes the received days it is given as
`<source root>/<received-day>/<epoch-ms>.<hex8>.<hex8>.<uuid4>.gz`, mixing in
lines that are not events and verbatim repeats of earlier lines, as real
archives hold, and counts what it wrote.
"""
import gzip
import json
import os
import random
from typing import Iterator, Optional

from pipeline.local.clock import iso_ms
from pipeline.local.events import hex8, uuid4_text
from transforms.segment.timestamps import DAY_MS

ARCHIVE_PREFIX = 'segment-logs'
DUMMY_OBJECT = 'dummy-object.txt'
DAY_FOLDER_NOTE = 'README.txt'
MAX_EVENT_BYTES = 32 * 1024
GZIP_LEVEL = 1               # level 1: several times faster than 6, the size is not the point
WRITE_BATCH = 2048           # lines joined per write to the gzip stream
DUPLICATE_EVERY = 50         # every 50th valid line is written again in the next file
INVALID_KINDS = ('not json', 'json array', 'json string', 'no type', 'unknown type',
                 'oversized', 'empty')

COMPACT = (',', ':')

# Invalid lines that need no ids of their own.
_FIXED_INVALID_LINES = {
    'not json': '{"type":"identify","userId":"usr_000001","traits":{"email":"ada@exa',
    'json string': '"identify"',
    'empty': '',
}


def invalid_line(kind: str, rng: random.Random, day_ms: int) -> str:
    """One line of an INVALID_KINDS kind, received on the day `day_ms`."""
    if kind in _FIXED_INVALID_LINES:
        return _FIXED_INVALID_LINES[kind]
    ids = {'messageId': uuid4_text(rng), 'receivedAt': iso_ms(day_ms + rng.randrange(DAY_MS))}
    if kind == 'json array':
        value: object = [{'type': 'track', 'event': 'Signed Up', **ids}]
    elif kind == 'no type':
        value = {'userId': 'usr_000002', 'traits': {'email': 'no.type@example.com'}, **ids}
    elif kind == 'unknown type':
        value = {'type': 'pageview', 'userId': 'usr_000003', **ids}
    else:
        value = {'type': 'track', 'event': 'Order Completed', 'userId': 'usr_000004', **ids,
                 'properties': {'notes': 'x' * (MAX_EVENT_BYTES + 1000)}}
    return json.dumps(value, separators=COMPACT)


class ArchiveWriter:
    """Writes day folders of gzip NDJSON files and keeps the manifest's counts.

    With `invalid`, each day gets one line of each INVALID_KINDS kind at a
    random place; with `duplicates`, every DUPLICATE_EVERY-th valid line is
    repeated verbatim at the start of the next file. `kept`, when a list,
    receives every valid event written.
    """

    def __init__(self, source_root: str, rng: random.Random, invalid: bool, duplicates: bool,
                 kept: Optional[list[dict]]):
        self.source_root = source_root
        self.rng = rng
        self.invalid = invalid
        self.duplicates = duplicates
        self.kept = kept
        self.files: list[str] = []
        self.lines = 0
        self.invalid_lines = 0
        self.duplicate_lines = 0
        self.valid_lines = 0
        self.carried: list[bytes] = []   # lines to repeat in the next file

    def write_day(self, day_ms: int, count: int, events: Iterator[dict], files_per_day: int,
                  last_day: bool) -> None:
        """Writes the day's `count` events into `files_per_day` files of its folder."""
        folder = os.path.join(self.source_root, str(day_ms))
        os.makedirs(folder, exist_ok=True)
        invalid_at = self._invalid_lines(day_ms, count)
        for file_number in range(files_per_day):
            last_file = file_number == files_per_day - 1
            # The last file of a day is flushed after midnight: its name's time
            # is the next day's, as real archives show.
            name_ms = (day_ms + DAY_MS + self.rng.randrange(3_600_000) if last_file
                       else day_ms + file_number * DAY_MS // files_per_day)
            name = f'{name_ms}.{hex8(self.rng)}.{hex8(self.rng)}.{uuid4_text(self.rng)}.gz'
            path = os.path.join(folder, name)
            positions = range(count * file_number // files_per_day,
                              count * (file_number + 1) // files_per_day)
            trailing = invalid_at.get(count, []) if last_file else []
            self._write_file(path, events, positions, invalid_at, trailing,
                             can_carry=not (last_day and last_file))
            self.files.append(path)

    def _invalid_lines(self, day_ms: int, count: int) -> dict[int, list[bytes]]:
        # Position p: the line goes before the day's p-th event (p == count: after the last).
        invalid_at: dict[int, list[bytes]] = {}
        if self.invalid:
            for kind in INVALID_KINDS:
                line = invalid_line(kind, self.rng, day_ms).encode('utf-8')
                invalid_at.setdefault(self.rng.randint(0, count), []).append(line)
                self.invalid_lines += 1
        return invalid_at

    def _write_file(self, path: str, events: Iterator[dict], positions: range,
                    invalid_at: dict[int, list[bytes]], trailing: list[bytes],
                    can_carry: bool) -> None:
        batch, self.carried = self.carried, []
        self.duplicate_lines += len(batch)
        with open(path, 'wb') as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw,
                                                    compresslevel=GZIP_LEVEL, mtime=0) as out:
            for position in positions:
                batch.extend(invalid_at.get(position, ()))
                event = next(events)
                line = json.dumps(event, ensure_ascii=False, separators=COMPACT).encode('utf-8')
                batch.append(line)
                if self.kept is not None:
                    self.kept.append(event)
                if self.duplicates and can_carry and self.valid_lines % DUPLICATE_EVERY == 0:
                    self.carried.append(line)
                self.valid_lines += 1
                if len(batch) >= WRITE_BATCH:
                    self._flush(out, batch)
            batch.extend(trailing)
            self._flush(out, batch)

    def _flush(self, out: gzip.GzipFile, batch: list[bytes]) -> None:
        if batch:
            out.write(b'\n'.join(batch) + b'\n')
            self.lines += len(batch)
            batch.clear()


def write_other_files(root: str, source_root: str, first_day: Optional[int]) -> list[str]:
    """The non-archive keys Segment leaves beside the archive (readers must skip
    them): `segment-logs/dummy-object.txt`, and a README.txt in the first day
    folder when there is one. Returns their paths."""
    os.makedirs(os.path.join(root, ARCHIVE_PREFIX), exist_ok=True)
    dummy = os.path.join(root, ARCHIVE_PREFIX, DUMMY_OBJECT)
    with open(dummy, 'w', encoding='utf-8') as out:
        out.write('Segment checks write access with this object.\n')
    other_files = [dummy]
    if first_day is not None:
        note = os.path.join(source_root, str(first_day), DAY_FOLDER_NOTE)
        with open(note, 'w', encoding='utf-8') as out:
            out.write('Not an archive file: readers must skip it.\n')
        other_files.append(note)
    return other_files
