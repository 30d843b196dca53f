"""The sync state in a pipeline: read it, send only what it lacks, fold it.

    StateListing (the files when the run starts)
      -> ReadSyncState: (partition, contact digest, Facts), the partition
         'contacts' (property facts) or an event day (event keys)
    (contact, ContactState) of this run + contact facts
      -> ChangedContacts (a CoGroupByKey by contact): per contact, the
         properties to send and what identifies the contact, or nothing
         (counted `state/unchanged`); of a deleted contact only what was
         set after its deletion (nothing: `state/contacts_before_deletion`)
    event facts and tombstones -> DeliveredEvents -> OrderRequests(delivered=...),
         which drops the events already sent (counted `state/events_already_sent`)
         and those of a deleted contact from before its deletion
         (`state/events_before_deletion`), and sends those Loops refused
         under a new key (`state/refused_events_resent`)
    after the run's last write: everything read plus the run's own log
      files -> FoldSyncState: one snapshot per partition, then the
         manifest (listing the snapshots), then the folded files are deleted

Every file read is checked against the state's manifest (transforms/state/
manifest.py) as it is read; a damaged one stops the job (StateFileDamaged)
before anything is sent, since every request waits for the state. The
fold commits only while the run holds the state's lease (a LeaseCheck).

The pure parts are in transforms/state/facts.py, the files in
transforms/state/files.py, the recorder in transforms/state/recorder.py.
"""
import math
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.contacts.ordering import ContactDeleted, DeliveredKeys, RefusedKeys
from transforms.core.digests import contact_digest
from transforms.core.kinds import EVENT_SEND
from transforms.core.metrics import BundleCounts
from transforms.state.facts import (Facts, changed_properties, changes_after_deletion, fold,
                                    identity_key, to_record)
from transforms.state.files import (CONTACTS, LOG, StateListing, delete_files, list_state,
                                    parent_name, partition_dir, relative_path, snapshot_name,
                                    state_root, write_facts_file)
from transforms.state.lease import LeaseCheck
from transforms.state.manifest import (MANIFEST_MARK, MANIFEST_NAME, Entry, Manifest,
                                       expected_entries, read_checked, write_manifest)

# A contact snapshot file per this many bytes of contact facts read.
SNAPSHOT_SHARD_BYTES = 64 * 2 ** 20
RUN, STATE = 'run', 'state'


class _ReadFactsFiles(beam.DoFn):
    def process(self, listed):
        path, entry = listed
        partition = parent_name(path)
        for contact, facts in read_checked(path, entry):
            yield partition, contact, facts


class ReadStateFiles(beam.PTransform):
    """(path, manifest Entry or None) of state files -> (partition, contact
    digest, Facts). Files are read whole, spread over workers (a snapshot is
    cut in shards of SNAPSHOT_SHARD_BYTES); one that is gone, or not what
    the manifest lists, fails the read (StateFileDamaged)."""

    def expand(self, files):
        return (files
                | 'SpreadFiles' >> beam.Reshuffle()
                | 'ReadFacts' >> beam.ParDo(_ReadFactsFiles()))


class ReadSyncState(beam.PTransform):
    """A StateListing (and the state's manifest) -> (partition, contact
    digest, Facts) of every listed file. A file deleted since the listing
    fails the read, rather than silently forgetting what it held."""

    def __init__(self, listing: StateListing, manifest: Optional[Manifest] = None):
        super().__init__()
        self._listing = listing
        self._manifest = manifest

    def expand(self, p):
        return (p | 'ListedFiles' >> beam.Create(expected_entries(self._listing, self._manifest))
                | 'Read' >> ReadStateFiles())


def contact_facts(facts):
    """(partition, digest, Facts) -> (digest, Facts) of the contact partition."""
    return facts | 'ContactFacts' >> beam.FlatMap(
        lambda f: [(f[1], f[2])] if f[0] == CONTACTS else [])


class _Changed(beam.DoFn):
    def __init__(self, resubscribe: bool):
        self._resubscribe = resubscribe

    def setup(self):
        self._counts = BundleCounts()

    def process(self, joined):
        _, grouped = joined
        contacts = list(grouped[RUN])
        if not contacts:
            return
        delivered = fold(grouped[STATE])
        for contact, state in contacts:
            to_send = contact_to_send(contact, state, delivered.properties, self._resubscribe,
                                      self._counts, delivered.deleted)
            if to_send is not None:
                yield contact, to_send

    def finish_bundle(self):
        self._counts.flush()


def changes_to_send(contact: str, state: dict, delivered: dict, resubscribe: bool):
    """The part of a contact's state to send, given what was delivered: the
    changed properties and the property that identifies the contact; None
    when nothing would be sent (a `subscribed: true` that the consent rule
    holds back is not a change to send)."""
    changed = changed_properties(state, delivered)
    sendable = [key for key, (_, value) in changed.items()
                if resubscribe or not (key == 'subscribed' and value is True)]
    if not sendable:
        return None
    identity = identity_key(contact)
    if identity in state:
        changed[identity] = state[identity]
    return changed


def contact_to_send(contact: str, state: dict, delivered: dict, resubscribe: bool,
                    counts, deleted: Optional[tuple] = None) -> Optional[dict]:
    """changes_to_send, counted: `state/unchanged` when nothing is to be
    sent (None), else `state/changed`. Of a contact deleted at `deleted`
    (the tombstone of its facts), only what was set after the deletion;
    `state/contacts_before_deletion` when that is nothing."""
    if deleted is not None:
        state = changes_after_deletion(contact, state, deleted)
        if not state:
            counts['state/contacts_before_deletion'] += 1
            return None
    to_send = changes_to_send(contact, state, delivered, resubscribe)
    counts['state/unchanged' if to_send is None else 'state/changed'] += 1
    return to_send


class ChangedContacts(beam.PTransform):
    """(contact, ContactState) + contact facts (digest, Facts) -> (contact,
    ContactState to send): see changes_to_send. Counts `state/unchanged`
    and `state/changed`."""

    def __init__(self, facts, resubscribe: bool):
        super().__init__()
        self._facts = facts
        self._resubscribe = resubscribe

    def expand(self, states):
        keyed = states | 'KeyByDigest' >> beam.Map(
            lambda keyed_state: (contact_digest(keyed_state[0]), keyed_state))
        return ({RUN: keyed, STATE: self._facts}
                | 'JoinWithState' >> beam.CoGroupByKey()
                | 'KeepChanges' >> beam.ParDo(_Changed(self._resubscribe)))


def delivered_events(fact: tuple) -> list:
    """(partition, digest, Facts) -> what OrderRequests needs of it: the
    delivered and the refused keys of an event partition's facts, the
    tombstone of a contact partition's ([] when none)."""
    partition, digest, facts = fact
    key = (EVENT_SEND.phase, digest)
    if partition == CONTACTS:
        return [(key, ContactDeleted(facts.deleted))] if facts.deleted is not None else []
    found = [(key, DeliveredKeys(facts.events))] if facts.events else []
    if facts.refused:
        found.append((key, RefusedKeys(facts.refused)))
    return found


class DeliveredEvents(beam.PTransform):
    """Event facts and tombstones (partition, digest, Facts) -> ((event
    phase, digest), DeliveredKeys, RefusedKeys or ContactDeleted), the
    `delivered` input of OrderRequests."""

    def expand(self, facts):
        return facts | 'DeliveredKeys' >> beam.FlatMap(delivered_events)


class _FoldFacts(beam.CombineFn):
    def create_accumulator(self):
        return Facts({}, frozenset())

    def add_input(self, accumulator, facts):
        return fold((accumulator, facts))

    def merge_accumulators(self, accumulators):
        return fold(accumulators)

    def extract_output(self, accumulator):
        return accumulator


class _WriteSnapshot(beam.DoFn):
    def __init__(self, prefix: str, run_id: str):
        self._prefix = prefix
        self._run_id = run_id

    def setup(self):
        self._counts = BundleCounts()

    def process(self, grouped):
        (partition, shard), facts = grouped
        path = FileSystems.join(partition_dir(self._prefix, partition),
                                snapshot_name(self._run_id, shard))
        records = (to_record(contact, fact) for contact, fact in facts)
        written = write_facts_file(path, records, {MANIFEST_MARK: MANIFEST_NAME})
        self._counts['state/snapshot_files'] += 1
        self._counts['state/snapshot_contacts' if partition == CONTACTS
                     else 'state/snapshot_event_contacts'] += written.records
        yield written

    def finish_bundle(self):
        self._counts.flush()


def run_logs(prefix: str, run_id: str) -> list:
    """FileMetadata of the log files a run wrote (listed once it is done)."""
    mark = f'{LOG}-{run_id}-'
    return [f for f in list_state(prefix).files
            if FileSystems.split(f.path)[1].startswith(mark)]


def commit_fold(prefix: str, run_id: str, manifest: Manifest, folded: list, own_logs: list,
                written: list, lease: Optional[LeaseCheck]) -> str:
    """Once the snapshots are written: the manifest that lists them, then
    the files they fold are deleted (a crash in between leaves facts twice,
    which fold to the same). Only while this run holds the lease."""
    if lease is not None:
        lease.check()
    write_manifest(prefix, manifest.after_fold(prefix, run_id, folded, written))
    delete_files(folded + sorted(set(own_logs)))
    return run_id


def starting_manifest(listing: StateListing, manifest: Optional[Manifest]) -> Manifest:
    """The manifest a fold starts from: the state's, or for a state that has
    none (written before manifests existed), the files the run does not
    fold, by size."""
    if manifest is not None:
        return manifest
    return Manifest({relative_path(listing.prefix, f.path): Entry(f.size_in_bytes, None)
                     for f in listing.unread})


class FoldSyncState(beam.PTransform):
    """Folds the facts read at the start (`facts`, from ReadSyncState) and
    the log files this run wrote into one snapshot per partition, once
    `after` (a PCollection: the last write's `done`) is complete; then
    writes the manifest and deletes the files folded (commit_fold). Returns
    a PCollection of one element once that is done."""

    def __init__(self, prefix: str, run_id: str, listing: StateListing, after=None,
                 manifest: Optional[Manifest] = None, lease: Optional[LeaseCheck] = None):
        super().__init__()
        self._prefix = state_root(prefix)
        self._run_id = run_id
        self._listing = listing
        self._after = after
        self._manifest = starting_manifest(listing, manifest)
        self._lease = lease
        self._contact_shards = max(1, math.ceil(
            sum(f.size_in_bytes for f in listing.contacts) / SNAPSHOT_SHARD_BYTES))

    def expand(self, facts):
        prefix, run_id, shards = self._prefix, self._run_id, self._contact_shards
        start = facts.pipeline | 'Start' >> beam.Create([None])
        if self._after is not None:
            start = start | 'AfterWrites' >> beam.Map(
                lambda none, _done: none, beam.pvalue.AsList(self._after))
        own_logs = start | 'ListRunLogs' >> beam.FlatMap(lambda _: run_logs(prefix, run_id))
        own_facts = (own_logs | 'Unlisted' >> beam.Map(lambda metadata: (metadata.path, None))
                     | 'ReadRunLogs' >> ReadStateFiles())
        snapshots = (
            (facts, own_facts) | 'AllFacts' >> beam.Flatten()
            | 'ByContact' >> beam.Map(lambda f: ((f[0], f[1]), f[2]))
            | 'Fold' >> beam.CombinePerKey(_FoldFacts())
            | 'ByShard' >> beam.Map(lambda kv: (
                (kv[0][0], kv[0][1][0] % shards if kv[0][0] == CONTACTS else 0),
                (kv[0][1], kv[1])))
            | 'GroupByShard' >> beam.GroupByKey()
            | 'WriteSnapshots' >> beam.ParDo(_WriteSnapshot(prefix, run_id)))
        folded, manifest, lease = list(self._listing.paths), self._manifest, self._lease
        logs = own_logs | 'OwnLogPaths' >> beam.Map(lambda metadata: metadata.path)
        return (start
                | 'Commit' >> beam.Map(
                    lambda _, written, own: commit_fold(prefix, run_id, manifest, folded, own,
                                                        written, lease),
                    beam.pvalue.AsList(snapshots), beam.pvalue.AsList(logs)))
