"""The sync state on disk: where its files are, listing, writing and reading them.

Everything goes through Beam's FileSystems, so a state lives on local disk,
gs:// or s3:// alike:

    <prefix>/contacts/             contact facts (properties), all contacts
    <prefix>/events/<YYYY-MM-DD>/  event facts (keys), by the event's UTC day
        snapshot-<run>-<shard>.avro   the fold of everything before <run>
        log-<run>-<writer>-<n>.avro   facts recorded while <run> delivered
    <prefix>/pending/<run>/contacts/  a CSV load's contacts, not read until
                                      `state confirm-import` moves them in
    <prefix>/MANIFEST.json         the snapshots, with sizes and checksums
                                   (transforms/state/manifest.py)
    <prefix>/LEASE                 the run that holds the state (lease.py)

Every file is Avro (schemas/sync_state.avsc, deflate). A file appears whole
or not at all: on an object store an object appears when it is closed; on
local disk it is written as `<name>.tmp` and renamed. Readers read every
`*.avro` file of the partitions they need; facts in several files fold
together, so a crash between writing a new snapshot and deleting what it
folded leaves facts twice, which costs nothing.

Run ids start with the UTC time, so file names sort by run.
"""
import datetime
import hashlib
import os
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, NamedTuple, Optional

import fastavro
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas import load_schema
from transforms.segment.timestamps import DAY_MS
from transforms.state.facts import fold, from_record

SCHEMA = load_schema('sync_state')
CONTACTS, EVENTS, PENDING = 'contacts', 'events', 'pending'
LOG, SNAPSHOT = 'log', 'snapshot'
SUFFIX = '.avro'
_LOCAL_SCHEMES = (None, 'file')


def state_root(prefix: str) -> str:
    """The state's folder, without a trailing slash."""
    return prefix.rstrip('/') or '/'


def contacts_dir(prefix: str) -> str:
    return FileSystems.join(state_root(prefix), CONTACTS)


def events_dir(prefix: str, day: str) -> str:
    return FileSystems.join(state_root(prefix), EVENTS, day)


def pending_prefix(prefix: str, run_id: str) -> str:
    """Where a CSV load of run `run_id` records its contacts until confirmed:
    a state of its own, of contacts only."""
    return FileSystems.join(state_root(prefix), PENDING, run_id)


def partition_dir(prefix: str, partition: str) -> str:
    """The folder of a partition: CONTACTS, or an event day."""
    return contacts_dir(prefix) if partition == CONTACTS else events_dir(prefix, partition)


def event_day(event_ms: int) -> str:
    """The UTC day ('2026-11-01') an event's facts are filed under."""
    days = max(0, event_ms) // DAY_MS
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()


def new_run_id() -> str:
    """'20261201T221700Z-3f2a9c1b': sorts by start time, unique per run."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f'{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}'


def log_name(run_id: str, writer: str, number: int) -> str:
    return f'{LOG}-{run_id}-{writer}-{number:06d}{SUFFIX}'


def snapshot_name(run_id: str, shard: int) -> str:
    return f'{SNAPSHOT}-{run_id}-{shard:05d}{SUFFIX}'


@dataclass(frozen=True)
class StateListing:
    """The state's files a run reads, as found when it starts (FileMetadata:
    the path and size). `events`: day -> files, only the days asked for;
    `unread`: the event files of the other days; `pending`: run -> files of
    the CSV loads not confirmed (never read by a run). `events_from_day`:
    as list_state took it."""
    prefix: str
    contacts: tuple = ()
    events: dict = field(default_factory=dict)
    unread: tuple = ()
    pending: dict = field(default_factory=dict)
    events_from_day: Optional[str] = ''

    @property
    def files(self) -> tuple:
        return self.contacts + tuple(f for day in sorted(self.events) for f in self.events[day])

    @property
    def paths(self) -> tuple:
        return tuple(f.path for f in self.files)

    @property
    def size_in_bytes(self) -> int:
        return sum(f.size_in_bytes for f in self.files)


def list_state(prefix: str, events_from_day: Optional[str] = '') -> StateListing:
    """The state's files now (one listing): every contact file, and the event
    files of the days from `events_from_day` on ('' for every day, None for
    none)."""
    root = state_root(prefix)
    contacts, events, unread, pending = [], {}, [], {}
    for metadata in _match(FileSystems.join(root, '**')):
        parts = relative_path(root, metadata.path).split('/')
        if not parts[-1].endswith(SUFFIX):
            continue
        if len(parts) == 2 and parts[0] == CONTACTS:
            contacts.append(metadata)
        elif len(parts) == 3 and parts[0] == EVENTS:
            if events_from_day is not None and parts[1] >= events_from_day:
                events.setdefault(parts[1], []).append(metadata)
            else:
                unread.append(metadata)
        elif len(parts) == 4 and parts[0] == PENDING and parts[2] == CONTACTS:
            pending.setdefault(parts[1], []).append(metadata)
    return StateListing(prefix, tuple(contacts),
                        {day: tuple(files) for day, files in sorted(events.items())},
                        tuple(unread),
                        {run: tuple(files) for run, files in sorted(pending.items())},
                        events_from_day)


def relative_path(prefix: str, path: str) -> str:
    """A state file's path below the state's folder: 'contacts/snapshot-....avro'."""
    return path[len(state_root(prefix)):].replace('\\', '/').lstrip('/')


def day_files(prefix: str, day: str) -> list:
    """The files of one event day's partition now (FileMetadata, by path)."""
    return _match(FileSystems.join(events_dir(prefix, day), '*' + SUFFIX))


def _match(pattern: str) -> list:
    try:
        result = FileSystems.match([pattern])[0]
    except BeamIOError as error:
        if _nothing_there(error):
            return []
        raise
    return sorted(result.metadata_list, key=lambda metadata: metadata.path)


def _nothing_there(error: BeamIOError) -> bool:
    # Local and some object stores report a folder that is not there as an error.
    return all('not found' in str(e).lower() or 'no such' in str(e).lower()
               or isinstance(e, FileNotFoundError)
               for e in (error.exception_details or {}).values())


def parent_name(path: str) -> str:
    """The name of the folder a file is in: 'contacts' or an event day."""
    return os.path.basename(os.path.dirname(path.replace('\\', '/').rstrip('/')))


class WrittenFile(NamedTuple):
    """A state file as written: its records, bytes and SHA-256 (hex)."""
    path: str
    records: int
    size: int
    sha256: str


class Checksum:
    """The size and SHA-256 of the bytes that pass through `write` or `read`
    of a file object it wraps."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def seekable(self) -> bool:
        # fastavro appends to a seekable file: this one is always new.
        return False

    def write(self, data: bytes) -> int:
        self._count(data)
        return self._stream.write(data)

    def flush(self) -> None:
        self._stream.flush()

    def read(self, size: int = -1) -> bytes:
        return self._count(self._stream.read(size))

    def _count(self, data: bytes) -> bytes:
        self._hash.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def write_facts_file(path: str, records: Iterable[dict],
                     metadata: Optional[dict] = None) -> WrittenFile:
    """Writes sync-state records to `path`, whole or not at all; `metadata`
    goes into the Avro header."""
    scheme = FileSystems.get_scheme(path)
    target = path + '.tmp' if scheme in _LOCAL_SCHEMES else path
    count = 0

    def counted():
        nonlocal count
        for record in records:
            count += 1
            yield record

    with FileSystems.create(target, mime_type='application/octet-stream',
                            compression_type=CompressionTypes.UNCOMPRESSED) as out:
        checksum = Checksum(out)
        fastavro.writer(checksum, SCHEMA, counted(), codec='deflate', metadata=metadata)
    if target != path:
        FileSystems.rename([target], [path])
    return WrittenFile(path, count, checksum.size, checksum.hexdigest())


def open_state_file(path: str) -> BinaryIO:
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_facts_file(path: str) -> Iterator[tuple]:
    """(contact digest, Facts) of each record of one state file."""
    with open_state_file(path) as f:
        for record in fastavro.reader(f):
            yield from_record(record)


def read_facts(listing: StateListing, read=read_facts_file) -> dict:
    """{(partition, contact digest): Facts} of every listed file, folded: the
    state in memory, for a plain loop (`check`, tests) over a small state.
    `partition` is CONTACTS or the event day; `read(path)` reads a file."""
    folded = {}
    for metadata in listing.files:
        partition = parent_name(metadata.path)
        for contact, facts in read(metadata.path):
            key = (partition, contact)
            before = folded.get(key)
            folded[key] = facts if before is None else fold((before, facts))
    return folded


def delete_files(paths: Iterable[str]) -> int:
    """Deletes the files, in one call, ignoring those already gone; -> how
    many were asked for."""
    paths = list(paths)
    if not paths:
        return 0
    try:
        FileSystems.delete(paths)
    except BeamIOError as error:
        failed = [path for path in (error.exception_details or {}) if FileSystems.exists(path)]
        if failed:
            raise BeamIOError(f'could not delete {len(failed)} state files',
                              {path: error.exception_details[path] for path in failed}) from None
    return len(paths)


def move_files(sources: list, destinations: list) -> None:
    """Moves state files (a rename on local disk, copy and delete on an
    object store), making the local folders they go to."""
    if not sources:
        return
    for destination in destinations:
        if FileSystems.get_scheme(destination) in _LOCAL_SCHEMES:
            os.makedirs(os.path.dirname(destination), exist_ok=True)
    FileSystems.rename(list(sources), list(destinations))


def confirm_pending(listing: StateListing) -> dict:
    """Moves the files of every pending CSV load into the state's contacts,
    where the next run reads them as delivered; -> {run: files moved}."""
    sources, destinations = [], []
    for files in listing.pending.values():
        for metadata in files:
            sources.append(metadata.path)
            destinations.append(FileSystems.join(contacts_dir(listing.prefix),
                                                 FileSystems.split(metadata.path)[1]))
    move_files(sources, destinations)
    _remove_empty_local_dirs(FileSystems.join(state_root(listing.prefix), PENDING))
    return {run: len(files) for run, files in listing.pending.items()}


def discard_pending(listing: StateListing) -> dict:
    """Deletes the files of every pending CSV load; -> {run: files deleted}."""
    delete_files(metadata.path for files in listing.pending.values() for metadata in files)
    _remove_empty_local_dirs(FileSystems.join(state_root(listing.prefix), PENDING))
    return {run: len(files) for run, files in listing.pending.items()}


def _remove_empty_local_dirs(root: str) -> None:
    # An object store has no folders; on local disk an empty one would stay.
    if FileSystems.get_scheme(root) not in _LOCAL_SCHEMES or not os.path.isdir(root):
        return
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if not os.listdir(folder):
            os.rmdir(folder)
