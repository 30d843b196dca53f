"""Checking a whole sync state file by file, and repairing a damaged one:
what `segment-loops state verify` and `state repair` do
(pipeline/state_commands.py).

`verify_state` reads every file of the state (every event day, the pending
CSV loads) and checks it against the manifest (transforms/state/
manifest.py): listed files missing, of another size or other bytes, and
files that are not readable state files.

`repair_state` keeps what can be kept and says what is lost:
- every readable file stays as it is;
- from a file cut short (shorter than the manifest lists) it keeps the
  records of the Avro blocks before the cut, written as a new snapshot;
- every damaged file is moved aside, under <prefix>/damaged/<repair run>/
  (nothing is deleted), where no run reads it;
- the manifest is written anew, of the files now present.
What a lost file recorded counts as never sent: the next run sends it
again, and the report says which contacts or events that is.
"""
import io
from dataclasses import dataclass
from typing import Optional

import fastavro
from apache_beam.io.filesystems import FileSystems

from transforms.state.files import (CONTACTS, EVENTS, PENDING, StateListing, list_state,
                                    move_files, relative_path, snapshot_name, state_root,
                                    write_facts_file)
from transforms.state.manifest import (MANIFEST_MARK, MANIFEST_NAME, Damage, Entry, Manifest,
                                       StateDamaged, check_file, damage_before_reading,
                                       new_manifest, read_manifest, write_manifest)

DAMAGED = 'damaged'


@dataclass(frozen=True)
class StateReport:
    """A state checked file by file: `files`/`size` read, `unlisted` of them
    not in the manifest (logs since the last fold), every damage found, and
    the readable files of the contacts and events with their Entry."""
    prefix: str
    manifest: Optional[Manifest]
    files: int
    size: int
    unlisted: int
    damages: tuple
    readable: dict
    short: dict   # relative path -> bytes of a file cut short


def all_files(listing: StateListing) -> tuple:
    """Every file of a listing made with every day: read, unread, pending."""
    return (listing.files + listing.unread
            + tuple(f for files in listing.pending.values() for f in files))


def verify_state(prefix: str) -> StateReport:
    """Reads every file of the state at `prefix` and checks it."""
    listing = list_state(prefix)
    damages = []
    try:
        manifest = read_manifest(prefix)
    except StateDamaged as error:
        manifest = None
        damages += error.damages
    if manifest is None and not damages:
        damages += damage_before_reading(listing, None)
    listed = manifest.files if manifest is not None else {}
    files = all_files(listing)
    present = {relative_path(prefix, f.path) for f in files}
    damages += [Damage(path, f'missing (the manifest lists it, {entry.size:,} bytes)')
                for path, entry in sorted(listed.items()) if path not in present]
    readable, short, size = {}, {}, 0
    for metadata in files:
        path = relative_path(prefix, metadata.path)
        entry = listed.get(path)
        checked = check_file(metadata.path, entry)
        size += len(checked.data)
        if checked.problem:
            damages.append(Damage(path, checked.problem))
            if entry is not None and len(checked.data) < entry.size:
                short[path] = checked.data
        elif not path.startswith(PENDING + '/'):
            readable[path] = Entry(len(checked.data), checked.sha256)
    unlisted = sum(relative_path(prefix, f.path) not in listed for f in files)
    return StateReport(prefix, manifest, len(files), size, unlisted, tuple(damages), readable,
                       short)


@dataclass(frozen=True)
class Loss:
    """A damaged file as repaired: what was wrong, where it went, how many
    records were kept from it, and what the next run sends again."""
    damage: Damage
    moved_to: Optional[str]
    kept_records: int
    consequence: str


def repair_state(prefix: str, run_id: str) -> tuple:
    """Repairs the state at `prefix` (see the module docstring); -> (the
    StateReport before, [Loss]). Writes nothing when nothing is damaged and
    the state has a manifest."""
    report = verify_state(prefix)
    if not report.damages and report.manifest is not None:
        return report, []
    root = state_root(prefix)
    files = dict(report.readable)
    losses, sources, destinations = [], [], []
    for number, damage in enumerate(report.damages):
        if damage.path == MANIFEST_NAME:
            losses.append(Loss(damage, None, 0, 'rebuilt from the files present'))
            continue
        source = FileSystems.join(root, damage.path)
        kept = 0
        if damage.path in report.short:
            kept, written = salvage(prefix, damage.path, report.short[damage.path], run_id, number)
            if written is not None:
                files[relative_path(prefix, written.path)] = Entry(written.size, written.sha256)
        moved_to = None
        if FileSystems.exists(source):
            moved_to = FileSystems.join(root, DAMAGED, run_id, damage.path)
            sources.append(source)
            destinations.append(moved_to)
        losses.append(Loss(damage, moved_to, kept, consequence(damage.path)))
    move_files(sources, destinations)
    write_manifest(prefix, new_manifest(files, run_id))
    return report, losses


def salvage(prefix: str, path: str, data: bytes, run_id: str, number: int) -> tuple:
    """The records of the complete Avro blocks of a file cut short, written
    as a snapshot beside it: -> (records kept, WrittenFile or None)."""
    records = []
    try:
        for block in fastavro.block_reader(io.BytesIO(data)):
            records.extend(block)
    except Exception:   # the cut: every block before it was read whole
        pass
    if not records:
        return 0, None
    folder = FileSystems.split(FileSystems.join(state_root(prefix), path))[0]
    target = FileSystems.join(folder, snapshot_name(f'{run_id}-salvaged', number))
    written = write_facts_file(target, records, {MANIFEST_MARK: MANIFEST_NAME})
    return written.records, written


def consequence(path: str) -> str:
    """What the next run does because the file at relative `path` is lost."""
    parts = path.split('/')
    name = parts[-1]
    if parts[0] == CONTACTS:
        if name.startswith('snapshot-'):
            shard = int(name.rsplit('-', 1)[1].split('.')[0])
            what = f'contacts of shard {shard} of the snapshot'
        else:
            what = f'contacts recorded by run {_run_of(name)}'
        return (f'{what}: the next run sends their properties again (values that differ from '
                'what was sent overwrite edits made in Loops since), and the deletions recorded '
                'there are forgotten: run `segment-loops delete --state` again for the contacts '
                'you deleted, or the next backfill creates them again')
    if parts[0] == EVENTS and len(parts) == 3:
        return (f'events of {parts[1]}: the next run sends them again if they are within its '
                '--max_event_age; Loops drops a repeat only within 24 hours of the first send')
    if parts[0] == PENDING and len(parts) > 1:
        return (f'part of the CSV load of run {parts[1]}: confirm-import cannot confirm those '
                'contacts, so the next run sends them as upserts')
    return 'not read by any run'


def _run_of(name: str) -> str:
    # log-<run id: time-random>-<writer>-<n>.avro
    return '-'.join(name.split('-')[1:3])
