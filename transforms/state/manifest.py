"""The sync state's manifest: the files the state holds, with their sizes and
checksums, so that a missing, short or corrupt file is found and named
before anything is sent, instead of being read as "never delivered".

<prefix>/MANIFEST.json, written last by whatever folds the state (a
backfill's end, `state compact`, `state repair`), under the state's lease:

    {"format": 1, "written_by": "<run id>", "written_at": "2026-12-01T22:17:00Z",
     "files": {"contacts/snapshot-<run>-00000.avro": {"size": 7075, "sha256": "9f1c..."},
               "events/2026-11-02/snapshot-<run>-00000.avro": {...}}}

It lists the snapshots, and the files a fold left in place (event days the
run did not read). It does not list log files: the writers add one every
few seconds, a stream adds them all the time, and a killed run's or a
pending CSV load's wait for the next fold, which lists the snapshot they go
into. How each damage is found, at no more cost than one read of the
manifest:

- a listed file missing, or of another size: from the listing every run
  makes anyway, before the job starts;
- a listed file of the right size with other bytes: from the checksum of
  the bytes the job reads; every request waits for the whole state to be
  read, so the job stops before sending (StateFileDamaged);
- an unlisted file that is not a readable state file: as it is read, the same;
- a manifest that is not one: when it is read.

A state written before manifests existed has none: it is read as before,
and the first fold writes one. Snapshots written since carry a mark in
their Avro header, so a manifest deleted later is missed, not ignored.
"""
import datetime
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple, Optional

import fastavro
from apache_beam.io.filesystems import FileSystems

from transforms.state.facts import from_record
from transforms.state.files import (CONTACTS, EVENTS, Checksum, StateListing, WrittenFile,
                                    open_state_file, relative_path, state_root)

MANIFEST_NAME = 'MANIFEST.json'
FORMAT = 1
# In the Avro header of every snapshot written with a manifest.
MANIFEST_MARK = 'segment_loops.manifest'
DAMAGED_MARK = 'sync state file damaged: '


class Entry(NamedTuple):
    """A listed file: its size and SHA-256 (hex; None: not known, as for a
    file listed from a state that had no manifest)."""
    size: int
    sha256: Optional[str]


class Damage(NamedTuple):
    """What is wrong with one file of a state (`path` below the state's folder)."""
    path: str
    problem: str


class StateFileDamaged(Exception):
    """A state file read by a job is not what the manifest lists, or not a
    state file: raised where it is read (inside the pipeline); the job
    names every damaged file once it has stopped (see `find_damage`)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f'{DAMAGED_MARK}{path}: {problem}')
        self.path, self.problem = path, problem


class StateDamaged(Exception):
    """The state has damaged files (`damages`); the message names each and
    what to do."""

    def __init__(self, prefix: str, damages: list):
        self.prefix, self.damages = prefix, list(damages)
        lines = [f'The sync state {prefix} is damaged:']
        lines += [f'  {damage.path}: {damage.problem}' for damage in self.damages]
        lines.append(
            'A run now would take what these files recorded as never sent, and send it '
            'again. Restore them (from object versioning or a backup) and run again, or run '
            f'`segment-loops state repair --state {prefix}`: it keeps what can be read, sets '
            'the rest aside and says what the next run sends again.')
        super().__init__('\n'.join(lines))


@dataclass(frozen=True)
class Manifest:
    """The files of a state: relative path -> Entry."""
    files: dict = field(default_factory=dict)
    written_by: str = ''
    written_at: str = ''

    def to_bytes(self) -> bytes:
        document = {'format': FORMAT, 'written_by': self.written_by,
                    'written_at': self.written_at,
                    'files': {path: {'size': entry.size, 'sha256': entry.sha256}
                              for path, entry in sorted(self.files.items())}}
        return (json.dumps(document, indent=1) + '\n').encode('utf-8')

    def after_fold(self, prefix: str, run_id: str, folded: Iterable[str],
                   written: Iterable[WrittenFile]) -> 'Manifest':
        """This manifest without the files a fold read (paths) and with the
        snapshots it wrote."""
        files = dict(self.files)
        for path in folded:
            files.pop(relative_path(prefix, path), None)
        for snapshot in written:
            files[relative_path(prefix, snapshot.path)] = Entry(snapshot.size, snapshot.sha256)
        return new_manifest(files, run_id)


def new_manifest(files: dict, run_id: str) -> Manifest:
    """A manifest of `files` (relative path -> Entry) written now by `run_id`."""
    return Manifest(dict(files), run_id, _now())


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in MANIFEST.json's bytes; ValueError saying what is wrong."""
    try:
        document = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f'not JSON ({error})') from None
    if not isinstance(document, dict) or not isinstance(document.get('files'), dict):
        raise ValueError('not a manifest (no "files")')
    if document.get('format') != FORMAT:
        raise ValueError(f'format {document.get("format")!r}, this version reads {FORMAT}')
    files = {}
    for path, entry in document['files'].items():
        size = entry.get('size') if isinstance(entry, dict) else None
        sha256 = entry.get('sha256') if isinstance(entry, dict) else None
        if not isinstance(size, int) or not (sha256 is None or isinstance(sha256, str)):
            raise ValueError(f'the entry of {path} is {entry!r}')
        files[path] = Entry(size, sha256)
    return Manifest(files, str(document.get('written_by', '')),
                    str(document.get('written_at', '')))


def manifest_path(prefix: str) -> str:
    return FileSystems.join(state_root(prefix), MANIFEST_NAME)


def read_manifest(prefix: str) -> Optional[Manifest]:
    """The state's manifest; None when it has none. StateDamaged when the
    file is there but is not a manifest."""
    path = manifest_path(prefix)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        data = f.read()
    try:
        return parse_manifest(data)
    except ValueError as error:
        raise StateDamaged(prefix, [Damage(MANIFEST_NAME, str(error))]) from None


def write_manifest(prefix: str, manifest: Manifest) -> None:
    """Writes MANIFEST.json whole or not at all (a temporary file renamed on
    local disk; an object appears when it is closed)."""
    path = manifest_path(prefix)
    local = FileSystems.get_scheme(path) in (None, 'file')
    target = path + '.tmp' if local else path
    with FileSystems.create(target, mime_type='application/json') as out:
        out.write(manifest.to_bytes())
    if local:
        FileSystems.rename([target], [path])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def in_scope(listing: StateListing, path: str) -> bool:
    """Whether a run with this listing reads the file at relative `path`:
    every contact file, the event files of the days it asked for."""
    parts = path.split('/')
    if len(parts) == 2 and parts[0] == CONTACTS:
        return True
    if len(parts) == 3 and parts[0] == EVENTS:
        return listing.events_from_day is not None and parts[1] >= listing.events_from_day
    return False


def listing_damage(listing: StateListing, manifest: Optional[Manifest]) -> list:
    """The damage a listing shows against the manifest, without reading a
    file: every listed file the run would read that is missing or has
    another size."""
    if manifest is None:
        return []
    found = {relative_path(listing.prefix, f.path): f.size_in_bytes for f in listing.files}
    damages = []
    for path, entry in sorted(manifest.files.items()):
        if not in_scope(listing, path):
            continue
        size = found.get(path)
        if size is None:
            damages.append(Damage(path, f'missing (the manifest lists it, {entry.size:,} bytes)'))
        elif size != entry.size:
            damages.append(Damage(path, size_problem(size, entry.size)))
    return damages


def damage_before_reading(listing: StateListing, manifest: Optional[Manifest]) -> list:
    """listing_damage, and a manifest missing where the state's snapshots
    say one was written."""
    if manifest is not None:
        return listing_damage(listing, manifest)
    snapshot = next((f.path for f in listing.files if '/snapshot-' in f.path), None)
    if snapshot is not None and has_manifest_mark(snapshot):
        return [Damage(MANIFEST_NAME, 'missing (the snapshots were written with one), so '
                                      'no file can be checked')]
    return []


def size_problem(size: int, expected: int) -> str:
    if size == 0:
        return f'empty (the manifest says {expected:,} bytes)'
    if size < expected:
        return f'cut short: {size:,} bytes, the manifest says {expected:,}'
    return f'{size:,} bytes, the manifest says {expected:,}'


def expected_entries(listing: StateListing, manifest: Optional[Manifest]) -> list:
    """(path, Entry or None) of every file the listing reads: what its bytes
    must match (None: unlisted, it must only be readable)."""
    files = manifest.files if manifest is not None else {}
    return [(f.path, files.get(relative_path(listing.prefix, f.path))) for f in listing.files]


def read_checked(path: str, entry: Optional[Entry]) -> Iterator[tuple]:
    """(contact digest, Facts) of each record of a state file, its bytes
    checked against `entry` once read; StateFileDamaged if they differ or
    are not a state file. Facts come before the check: a job's requests
    wait for the whole state, so none goes out on them."""
    try:
        stream = open_state_file(path)
    except Exception:   # gone since it was listed (file systems word it their own way)
        if FileSystems.exists(path):
            raise
        raise StateFileDamaged(path, 'missing (deleted since the run listed the state)') from None
    with stream as f:
        checked = Checksum(f)
        try:
            for record in fastavro.reader(checked):
                yield from_record(record)
        except Exception as error:   # EOFError, ValueError, zlib.error, ...: it varies
            checked.read()
            raise StateFileDamaged(path, bytes_problem(checked.size, checked.hexdigest(), entry)
                                   or unreadable(error)) from None
        checked.read()
    problem = bytes_problem(checked.size, checked.hexdigest(), entry)
    if problem:
        raise StateFileDamaged(path, problem)


def bytes_problem(size: int, sha256: str, entry: Optional[Entry]) -> str:
    """What is wrong with a file's bytes, against its manifest entry ('' if nothing)."""
    if entry is None:
        return ''
    if size != entry.size:
        return size_problem(size, entry.size)
    if entry.sha256 is not None and sha256 != entry.sha256:
        return CORRUPT
    return ''


class FileCheck(NamedTuple):
    """One state file read whole: its bytes, their SHA-256, and what is
    wrong with it ('' when nothing)."""
    data: bytes
    sha256: str
    problem: str


def check_file(path: str, entry: Optional[Entry]) -> FileCheck:
    """Reads a state file whole and checks it against `entry` (None: it must
    only be readable)."""
    with open_state_file(path) as f:
        data = f.read()
    sha256 = hashlib.sha256(data).hexdigest()
    problem = bytes_problem(len(data), sha256, entry)
    if problem:
        return FileCheck(data, sha256, problem)
    try:
        for _ in fastavro.reader(io.BytesIO(data)):
            pass
    except Exception as error:   # EOFError, ValueError, zlib.error, ...: it varies
        return FileCheck(data, sha256, unreadable(error))
    return FileCheck(data, sha256, '')


def file_damage(prefix: str, path: str, entry: Optional[Entry]) -> Optional[Damage]:
    """What is wrong with one state file, read whole (None: nothing)."""
    if not FileSystems.exists(path):
        return Damage(relative_path(prefix, path), 'missing (deleted since it was listed)')
    problem = check_file(path, entry).problem
    return Damage(relative_path(prefix, path), problem) if problem else None


CORRUPT = 'its bytes are not those the manifest lists (checksum differs): corrupt'


def unreadable(error: Exception) -> str:
    return f'not a readable state file ({type(error).__name__}: {error})'


def has_manifest_mark(path: str) -> bool:
    """Whether a state file was written by a fold that wrote a manifest
    (reads only its Avro header)."""
    try:
        with open_state_file(path) as f:
            return MANIFEST_MARK in fastavro.reader(f).metadata
    except Exception:   # unreadable: the read of the file names it
        return False
