"""Segment archives -> contact states and ordered event sends: the backfill's DoFn.

`ProcessArchive`: ArchiveChunks in; contact upserts out as partial contact
states per contact (merged within the bundle already, so a contact's
identifies never travel one by one), and every other request out as (sort
key, encoded request) pairs, in lists keyed by (phase, contact) for ordering
(gathered within the bundle too: Beam's cost is per element, not per byte). A
contact with at least RUN_MIN_REQUESTS of them in a bundle goes out as a
SortedRun, a file under `run_directory` that the ordering reads back: the
shuffle, which Beam's local runner keeps in memory, then carries a reference
instead of a hot contact's requests. Failure records (whole events, and
refused parts) go to `failed`, and what the processor counts becomes Beam
metrics, as in the stream's ProcessEventFn (transforms/mapping/process.py).
"""
from typing import Optional

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.contacts.model import apply_body
from transforms.contacts.ordering import sort_key, write_run
from transforms.core.records import encode_request
from transforms.mapping.process import FAILED, ProcessEventFn
from transforms.mapping.processor import EventProcessor

CONTACTS, REQUESTS = 'contacts', 'requests'
# A bundle's contact states and requests are emitted when this many are
# held, so a worker holds a bounded amount whatever the input's size. A
# contact's updates are spread over the whole archive: the more contacts
# held, the fewer partial states of one contact cross the shuffle (at
# 50,000, about 100 MB).
MAX_HELD_CONTACTS = 50_000
MAX_HELD_REQUESTS = 50_000
RUN_MIN_REQUESTS = 1_000


class _ProcessArchive(ProcessEventFn):
    def __init__(self, processor: EventProcessor, max_held_contacts: int,
                 max_held_requests: int, run_directory: Optional[str]):
        super().__init__(processor)
        self._max_held_contacts = max_held_contacts
        self._max_held_requests = max_held_requests
        self._run_directory = run_directory

    def start_bundle(self):
        self._contacts = {}
        self._requests = {}
        self._held_requests = 0

    def process(self, chunk):
        process, counts = self._processor.process, self._counts
        contacts, requests = self._contacts, self._requests
        for raw in chunk.events():
            processed = process(raw, counts)
            for failure in processed.failures:
                yield beam.pvalue.TaggedOutput(FAILED, failure)
            for request in processed.requests:
                spec = request.spec
                if spec.mergeable:
                    state = contacts.get(request.contact)
                    if state is None:
                        state = contacts[request.contact] = {}
                    apply_body(state, request.body, request.stamp)
                else:
                    key = (spec.phase, request.contact)
                    held = requests.get(key)
                    if held is None:
                        held = requests[key] = []
                    held.append((sort_key(request), encode_request(request)))
                    self._held_requests += 1
        if len(contacts) >= self._max_held_contacts:
            yield from self._held(CONTACTS)
        if self._held_requests >= self._max_held_requests:
            yield from self._held(REQUESTS)

    def _held(self, tag: str):
        if tag == CONTACTS:
            held, self._contacts = self._contacts, {}
        else:
            held, self._requests, self._held_requests = self._requests, {}, 0
        for key, value in held.items():
            if (tag == REQUESTS and self._run_directory is not None
                    and len(value) >= RUN_MIN_REQUESTS):
                value = [write_run(self._run_directory, value)]
            yield beam.pvalue.TaggedOutput(tag, (key, value))

    def finish_bundle(self):
        self._counts.flush()
        for tag in (CONTACTS, REQUESTS):
            for tagged in self._held(tag):
                yield beam.pvalue.TaggedOutput(tag, WindowedValue(
                    tagged.value, MIN_TIMESTAMP, (GlobalWindow(),)))


class ArchiveRequests:
    """ProcessArchive's outputs, by name."""

    def __init__(self, contacts, requests, failures):
        self.contacts = contacts      # (contact, partial ContactState)
        self.requests = requests      # ((phase, contact), [(sort key, encoded) or SortedRun])
        self.failures = failures      # failure records


class ProcessArchive(beam.PTransform):
    """ArchiveChunk -> ArchiveRequests (see the module docstring).
    `run_directory`: where a hot contact's SortedRuns go (a directory every
    worker can read, e.g. under the job's temp location); None keeps every
    request in the shuffle."""

    def __init__(self, processor: EventProcessor, run_directory: Optional[str] = None,
                 max_held_contacts: int = MAX_HELD_CONTACTS,
                 max_held_requests: int = MAX_HELD_REQUESTS):
        super().__init__()
        self._processor = processor
        self._run_directory = run_directory
        self._max_held_contacts = max_held_contacts
        self._max_held_requests = max_held_requests

    def expand(self, chunks):
        processed = chunks | 'ParseFilterMap' >> beam.ParDo(_ProcessArchive(
            self._processor, self._max_held_contacts, self._max_held_requests,
            self._run_directory)).with_outputs(CONTACTS, REQUESTS, FAILED, main='unused')
        return ArchiveRequests(processed[CONTACTS], processed[REQUESTS], processed[FAILED])
