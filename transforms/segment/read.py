"""Reading Segment archives: files -> chunks of raw events.

Segment's S3/GCS layout is `.../segment-logs/<source-id>/<received-day>/<file>.gz`
where `<received-day>` is epoch milliseconds at 00:00 UTC. This module reads
that layout, plain NDJSON files and Avro files written with
`schemas/segment_event.avsc`, through Beam's file systems (local, gs://, s3://).

Lines travel in chunks of up to CHUNK_LINES: Beam pays a fixed cost for every
element and step, which on one element per line was most of a backfill's
processing time.
"""
import gzip
import io
import json
import re
import zlib
from typing import Iterator, NamedTuple, Optional

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.core.metrics import NAMESPACE, CounterFamily
from transforms.core.records import RawEvent, failure_record
from transforms.core.stop import stop_requested
from transforms.segment.avro_events import from_avro_record
from transforms.segment.parse import UndecodableEvent
from transforms.segment.timestamps import DAY_MS

GZIP_NDJSON, NDJSON, AVRO = 'gzip_ndjson', 'ndjson', 'avro'
_KINDS_BY_SUFFIX = (
    ('.json.gz', GZIP_NDJSON), ('.jsonl.gz', GZIP_NDJSON), ('.ndjson.gz', GZIP_NDJSON),
    ('.gz', GZIP_NDJSON),
    ('.json', NDJSON), ('.jsonl', NDJSON), ('.ndjson', NDJSON),
    ('.avro', AVRO),
)
SEGMENT_EVENT_SCHEMA = 'segment_loops.SegmentEvent'
_DAY_FOLDER = re.compile(r'^\d{10,14}$')
CHUNK_LINES = 1000
UTF8_BOM = b'\xef\xbb\xbf'


class ArchiveChunk(NamedTuple):
    """Consecutive items of one archive file: lines (bytes) or Avro event
    dicts, the first of them at line (or record) number `first_line`."""
    source: str
    first_line: int
    items: list

    def events(self) -> Iterator[RawEvent]:
        """The chunk's items as RawEvents, numbered."""
        source = self.source
        for number, item in enumerate(self.items, self.first_line):
            yield RawEvent(source, number, item)


def archive_kind(path: str) -> Optional[str]:
    """How to read the file at `path`, from its name; None for non-archives
    such as Segment's `dummy-object.txt`."""
    lower = path.lower()
    for suffix, kind in _KINDS_BY_SUFFIX:
        if lower.endswith(suffix):
            return kind
    return None


def received_day_ms(path: str) -> Optional[int]:
    """The received-day folder of an archive path (epoch ms at 00:00 UTC), or
    None when the file is not directly inside such a folder."""
    parts = path.replace('\\', '/').rstrip('/').split('/')
    if len(parts) < 2 or not _DAY_FOLDER.match(parts[-2]):
        return None
    day = int(parts[-2])
    return day if day % DAY_MS == 0 else None


def in_date_range(day_ms: Optional[int], since_ms: Optional[int],
                  until_ms: Optional[int]) -> bool:
    """Whether a received-day folder lies within [since, until] (inclusive);
    without a range every file is in it."""
    if since_ms is None and until_ms is None:
        return True
    if day_ms is None:
        return False
    return ((since_ms is None or day_ms >= since_ms)
            and (until_ms is None or day_ms <= until_ms))


READ, NOT_ARCHIVE, OUTSIDE_DATES = 'files', 'skipped_not_archive', 'skipped_outside_dates'


def file_choice(path: str, since_ms: Optional[int], until_ms: Optional[int]) -> str:
    """Whether a matched file is read (READ), or why not: NOT_ARCHIVE (Segment's
    dummy-object.txt, READMEs) or OUTSIDE_DATES (its received-day folder is
    outside [since, until]). Each is a counter `read/<choice>`."""
    if archive_kind(path) is None:
        return NOT_ARCHIVE
    if not in_date_range(received_day_ms(path), since_ms, until_ms):
        return OUTSIDE_DATES
    return READ


class _SelectArchiveFiles(beam.DoFn):
    """File metadata -> paths worth opening; counts what it skips and why."""

    def __init__(self, since_ms: Optional[int], until_ms: Optional[int]):
        self._since_ms = since_ms
        self._until_ms = until_ms

    def setup(self):
        self._counters = CounterFamily('read/')

    def process(self, metadata):
        choice = file_choice(metadata.path, self._since_ms, self._until_ms)
        self._counters.inc(choice)
        if choice == READ:
            yield metadata.path


# What reading a damaged or foreign archive file raises.
READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, fastavro.read.SchemaResolutionError)


def archive_items(path: str, raw) -> Iterator:
    """The lines (bytes) or, for Avro, the event dicts of one archive file
    opened raw (uncompressed) at `path`. Raises one of READ_ERRORS when the
    file cannot be read (further): the items before that are good."""
    kind = archive_kind(path)
    if kind == AVRO:
        reader = fastavro.reader(raw)
        schema = reader.writer_schema
        name = schema.get('name') if isinstance(schema, dict) else None
        if name != SEGMENT_EVENT_SCHEMA:
            raise ValueError(f'Avro schema {name!r} is not {SEGMENT_EVENT_SCHEMA} '
                             '(see schemas/segment_event.avsc)')
        return (_avro_event(record) for record in reader)
    if kind == GZIP_NDJSON:
        # Iterated directly (small internal reads), a truncated file still
        # yields every whole line before the break.
        return _without_bom(gzip.GzipFile(fileobj=raw))
    return _without_bom(io.BufferedReader(raw, buffer_size=1 << 20))


def _without_bom(lines) -> Iterator[bytes]:
    """The lines of a text file, the first without a UTF-8 byte-order mark
    (editors on Windows write one; it is not part of the JSON)."""
    lines = iter(lines)
    first = next(lines, None)
    if first is None:
        return
    yield first[len(UTF8_BOM):] if first.startswith(UTF8_BOM) else first
    yield from lines


def _avro_event(record: dict):
    """The event of one Avro record, or an UndecodableEvent that the parser
    rejects on its own (one bad record must not cost the rest of the file)."""
    try:
        return from_avro_record(record)
    except ValueError as error:
        problem = str(error).encode('utf-8', 'backslashreplace').decode('utf-8')
        return UndecodableEvent(json.dumps(record, default=str),
                                f'an Avro record field is not valid JSON: {problem}')


def read_failure(path: str, error: Exception, items_read: int) -> dict:
    """The failure record of a file that could not be read (further)."""
    reason = 'truncated_file' if isinstance(error, EOFError) else 'unreadable_file'
    return failure_record(
        'read', reason, f'{type(error).__name__}: {error} ({items_read:,} lines or records '
        'before it were read)', source=path)


class Unreadable(NamedTuple):
    """The end of a file that could not be read (further): the failure
    record saying so. The items before it were good."""
    failure: dict


def read_archive_file(path: str, size: int = CHUNK_LINES) -> Iterator:
    """Every item of one archive file in ArchiveChunks of up to `size`, then,
    if the file could not be read to its end, an Unreadable."""
    chunk = []
    first_line = 1
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            for item in archive_items(path, raw):
                chunk.append(item)
                if len(chunk) == size:
                    yield ArchiveChunk(path, first_line, chunk)
                    first_line += size
                    chunk = []
    except READ_ERRORS as error:
        if chunk:
            yield ArchiveChunk(path, first_line, chunk)
        yield Unreadable(read_failure(path, error, first_line - 1 + len(chunk)))
        return
    if chunk:
        yield ArchiveChunk(path, first_line, chunk)


class _ReadArchiveFile(beam.DoFn):
    """path -> ArchiveChunks of every line or Avro record.

    A file that cannot be read (corrupt or truncated gzip, a foreign Avro
    schema) yields what it could read, then one failure record (stage
    `read`) on the 'failed' output. Once the job is stopping
    (transforms/core/stop.py) no file is opened and no further chunk read:
    those files are counted in `read/stopped_files`.
    """
    FAILED = 'failed'

    def setup(self):
        self._lines = Metrics.counter(NAMESPACE, 'read/lines')
        self._unreadable = Metrics.counter(NAMESPACE, 'read/unreadable_files')
        self._stopped = Metrics.counter(NAMESPACE, 'read/stopped_files')

    def process(self, path: str):
        if stop_requested():
            self._stopped.inc()
            return
        for item in read_archive_file(path):
            if stop_requested():
                self._stopped.inc()
                return
            if type(item) is Unreadable:
                self._unreadable.inc()
                yield beam.pvalue.TaggedOutput(self.FAILED, item.failure)
            else:
                self._lines.inc(len(item.items))
                yield item


class ReadSegmentArchive(beam.PTransform):
    """Reads Segment archives matching file patterns.

    In: the pipeline root. Out: a PCollection of ArchiveChunks, whose items
    are lines' bytes (NDJSON, gzip or plain) or event dicts (Avro); `.events()`
    gives them as RawEvents. `failed`: failure records (stage `read`) of
    unreadable files.
    Non-archive files and day folders outside [since, until] are skipped
    without being opened, and counted.
    """

    def __init__(self, patterns: list, since_ms: Optional[int] = None,
                 until_ms: Optional[int] = None):
        super().__init__()
        self._patterns = list(patterns)
        self._since_ms = since_ms
        self._until_ms = until_ms

    def expand(self, pbegin):
        read = (
            pbegin
            | 'Patterns' >> beam.Create(self._patterns)
            | 'MatchFiles' >> fileio.MatchAll()
            | 'SelectArchiveFiles' >> beam.ParDo(
                _SelectArchiveFiles(self._since_ms, self._until_ms))
            | 'SpreadFiles' >> beam.Reshuffle()
            | 'ReadFiles' >> beam.ParDo(_ReadArchiveFile()).with_outputs(
                _ReadArchiveFile.FAILED, main='events'))
        return read.events, read.failed
