"""The backfill's steps as one plain loop, without Beam, on the same pieces.

    pipeline/backfill.py (build_backfill)    here
    ReadSegmentArchive                       archive_paths, read_events (read_archive_file)
    ProcessArchive                           the caller's EventProcessor, then PlainBackfill.add
                                             (contact upserts folded with apply_body)
    MergeContacts                            PlainBackfill.upserts: merge per contact,
                                             resolve_leads where contacts meet (meeting_key)
    ChangedContacts (--state)                contact_to_send, against the facts read
    UpsertsFromStates                        upsert_from_state (consent)
    OrderRequests                            PlainBackfill.event_sends: sort_key order,
                                             without_repeats (repeated lines, later copies
                                             of a messageId), not_delivered,
                                             after_deletion and after_refusals (--state)

Counts go into a collections.Counter under the backfill's counter names
(`read/lines`, `contacts/upserts`, `order/requests`, ... and the processor's
own), so pipeline/summary.py's `backfill_summary` turns them into the
backfill's summary. `check` runs this loop (looking at each request between
the processor's two halves); bench/plain_loop.py runs it as the reference
the pipeline's time is measured against.

It holds every contact's state and every event send (or only its sort key)
in memory: it is for one machine, a preflight or a benchmark.
"""
import dataclasses
import itertools
import operator
from typing import Iterable, Iterator, Optional

from apache_beam.io.filesystems import FileSystems

from transforms.contacts.merge import count_unsubscribe, resolved_contacts, upsert_from_state
from transforms.contacts.model import apply_body
from transforms.contacts.ordering import (after_deletion, after_refusals, later_copies_among,
                                          latest_refusals, not_delivered, sort_key,
                                          without_repeats)
from transforms.core.digests import contact_digest
from transforms.core.records import LoopsRequest
from transforms.segment.read import READ, Unreadable, file_choice, read_archive_file
from transforms.state.facts import NO_FACTS
from transforms.state.files import CONTACTS
from transforms.state.sync_state import contact_to_send

# A counter of this loop's own, not the backfill's: files opened, which is
# fewer than `read/files` when a sample stops early.
FILES_OPENED = 'read/files_opened'
_FIRST = operator.itemgetter(0)


def archive_paths(patterns: Iterable[str], since_ms: Optional[int], until_ms: Optional[int],
                  counts) -> list:
    """The files the backfill reads, as ReadSegmentArchive chooses them: each
    pattern's matches (in path order here), archives only, in the received-day
    range. Counts `read/files`, `read/skipped_not_archive` and
    `read/skipped_outside_dates`. A file two patterns match is read twice,
    as the backfill reads it."""
    paths = []
    for pattern in patterns:
        for metadata in sorted(FileSystems.match([pattern])[0].metadata_list,
                               key=operator.attrgetter('path')):
            choice = file_choice(metadata.path, since_ms, until_ms)
            counts['read/' + choice] += 1
            if choice == READ:
                paths.append(metadata.path)
    return paths


def read_events(paths: Iterable[str], counts, limit: Optional[int] = None) -> Iterator:
    """The RawEvents of the files in order, at most `limit` of them; after
    the events of a file that could not be read to its end, its Unreadable.
    Counts `read/lines` (per event taken), `read/unreadable_files` and
    FILES_OPENED."""
    taken = 0
    for path in paths:
        if limit is not None and taken >= limit:
            return
        counts[FILES_OPENED] += 1
        for item in read_archive_file(path):
            if type(item) is Unreadable:
                counts['read/unreadable_files'] += 1
                yield item
                continue
            events = item.events()
            if limit is not None:
                events = itertools.islice(events, limit - taken)
            for raw in events:
                taken += 1
                counts['read/lines'] += 1
                yield raw
            if limit is not None and taken >= limit:
                return


class PlainBackfill:
    """Requests as the processor sends them out -> the backfill's requests.

    `add` takes each request: a contact upsert is folded into its contact's
    state (the contact model: the latest value of every property wins), any
    other request is kept for ordering. `upserts()` then gives one upsert per
    contact after leads are resolved and consent applied (`resubscribe`),
    and `event_sends()` each contact's other requests in sort_key order,
    repeats dropped (a repeated line, or a later copy of a messageId: the
    copy received first is kept). Both count as the backfill's steps do,
    into `counts`.

    `keep_requests=False` keeps only each event send's sort key (enough to
    count them; `event_sends` then gives None for each request), and of one
    that sets `subscribed` that alone (consent is counted from it).
    `kept_properties`, when given, keeps only those contact properties
    (merging is per property, so what is left merges as it would in full):
    `check` keeps what leads and consent depend on. `delivered`, a sync
    state's facts as state_files.read_facts gives them, leaves out what they
    say was delivered, as a backfill with --state does (it needs every
    property: don't combine it with `kept_properties`).
    """

    def __init__(self, resubscribe: bool, counts, *, keep_requests: bool = True,
                 kept_properties: Optional[frozenset] = None,
                 delivered: Optional[dict] = None):
        self._resubscribe = resubscribe
        self._counts = counts
        self._keep_requests = keep_requests
        self._kept_properties = kept_properties
        self._delivered = delivered
        # contact digest -> the digests of its event keys, and its refusals
        # (key digest -> refused ms), of every event day read
        self._event_keys, self._refusals = {}, {}
        for (partition, digest), facts in (delivered or {}).items():
            if partition != CONTACTS and facts.events:
                self._event_keys[digest] = self._event_keys.get(digest, frozenset()) | facts.events
            if partition != CONTACTS and facts.refused:
                self._refusals[digest] = latest_refusals(
                    (facts.refused, self._refusals.get(digest, {}).items()))
        self._states = {}   # contact -> ContactState
        self._sends = {}    # (phase, contact) -> [(sort key, request or None), ...]

    def add(self, request: LoopsRequest) -> None:
        spec = request.spec
        if spec.mergeable:
            body = request.body
            if self._kept_properties is not None:
                body = {key: value for key, value in body.items()
                        if key in self._kept_properties}
            state = self._states.get(request.contact)
            if state is None:
                state = self._states[request.contact] = {}
            apply_body(state, body, request.stamp)
        else:
            held = self._sends.get((spec.phase, request.contact))
            if held is None:
                held = self._sends[(spec.phase, request.contact)] = []
            held.append((sort_key(request),
                         request if self._keep_requests else consent_only(request)))

    def upserts(self) -> Iterator[LoopsRequest]:
        """One upsert per contact, as MergeContacts and UpsertsFromStates make
        them; counts `contacts/upserts` and what those steps count."""
        for contact, state in resolved_contacts(self._states, self._counts):
            if self._delivered is not None:
                facts = self._delivered.get((CONTACTS, contact_digest(contact)), NO_FACTS)
                state = contact_to_send(contact, state, facts.properties, self._resubscribe,
                                        self._counts, facts.deleted)
                if state is None:
                    continue
            self._counts['contacts/upserts'] += 1
            yield upsert_from_state(contact, state, self._resubscribe, self._counts)

    def event_sends(self) -> Iterator[tuple]:
        """(phase, contact, [request, ...]) per contact, as OrderRequests
        orders them; counts `order/requests`, `order/duplicates` and the
        opt-outs among them (`contacts/unsubscribes`)."""
        for (phase, contact), held in self._sends.items():
            held.sort(key=_FIRST)
            pairs = without_repeats(held, later_copies_among([key for key, _ in held]),
                                    self._counts)
            if self._delivered is not None:
                digest = contact_digest(contact)
                pairs = not_delivered(pairs, self._event_keys.get(digest, ()), self._counts)
                deleted = self._delivered.get((CONTACTS, digest), NO_FACTS).deleted
                if deleted is not None:
                    pairs = after_deletion(pairs, deleted, self._counts)
                if digest in self._refusals:
                    pairs = after_refusals(pairs, self._refusals[digest], self._counts)
            requests = [request for _, request in pairs]
            self._counts['order/requests'] += len(requests)
            for request in requests:
                if request is not None:
                    count_unsubscribe(request.body, self._counts)
            yield phase, contact, requests


def consent_only(request: LoopsRequest) -> Optional[LoopsRequest]:
    """An event send as the plain loop keeps it when it only counts: None,
    or with only its `subscribed` when it sets one."""
    if 'subscribed' not in request.body:
        return None
    return dataclasses.replace(request, body={'subscribed': request.body['subscribed']})
