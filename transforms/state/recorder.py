"""Recording what was delivered, while a job delivers it.

`StateRecorder` is the writers' recorder (transforms/delivery/write.py,
DeliveryRecorder): every request Loops accepted (delivered, a 409 on our
key: already delivered, a 404 on a deletion: already gone) adds its facts
to a buffer, and so does every event Loops refused with a 4xx (its key may
be spent: a later run sends it under a new one, transforms/state/facts.py);
the buffer is
written as small log files under the state's prefix once its oldest fact
has waited `flush_seconds`, and at the end of every bundle. A job killed at
any moment has lost the record of at most the last `flush_seconds` (plus
the writer's tick) of deliveries: a rerun sends those again, and nothing
else. A bundle retried by the runner records its facts again, which folds
to the same state.

With a `lease` (transforms/state/lease.py, LeaseCheck), the recorder also
stops the job's writers once another run has taken the state over: it
checks the lease when a bundle opens and at least every `lease.interval`
while the writer delivers, and raises LeaseLost, which stops the sending
(what it had recorded is written first: it was delivered).

The same buffer serves the CSV first load (transforms/state/contacts_csv.py),
which records the contacts it wrote, as pending until the import is confirmed.
"""
import time
import uuid
from typing import Callable, Optional

from apache_beam.io.filesystems import FileSystems

from transforms.core.records import LoopsRequest
from transforms.loops.retry import Outcome, is_permanent_reason
from transforms.state.facts import Facts, facts_of_request, fold, refusal_of_request, to_record
from transforms.state.files import CONTACTS, event_day, log_name, partition_dir, write_facts_file
from transforms.state.lease import LeaseCheck

DEFAULT_FLUSH_SECONDS = 30.0
# What Loops holds after these is what the request asked for (a deletion
# answered 404 found nothing to delete: its tombstone is recorded too).
DELIVERED_STATUSES = frozenset({'delivered', 'already_delivered', 'already_gone'})


class FactsBuffer:
    """Facts not yet written, by partition: CONTACTS, or an event day."""

    def __init__(self):
        self._partitions = {}
        self.size = 0

    def add_refusal(self, request: LoopsRequest, refused_ms: int) -> None:
        """Adds the refusal of a keyed request at `refused_ms` (epoch ms)."""
        found = refusal_of_request(request, refused_ms)
        if found is not None:
            contact, facts, event_ms = found
            self._add(event_day(event_ms), contact, facts)

    def add_request(self, request: LoopsRequest) -> None:
        """Adds what a delivered request tells (see state_facts.facts_of_request)."""
        found = facts_of_request(request)
        if found is None:
            return
        contact, facts, event_ms = found
        if facts.properties or facts.deleted is not None:
            self._add(CONTACTS, contact, Facts(facts.properties, deleted=facts.deleted))
        if facts.events:
            self._add(event_day(event_ms), contact, Facts({}, facts.events))

    def _add(self, partition: str, contact: bytes, facts: Facts) -> None:
        held = self._partitions.setdefault(partition, {})
        before = held.get(contact)
        held[contact] = facts if before is None else fold((before, facts))
        self.size += 1

    def drain(self) -> list:
        """[(partition, [record, ...])] of everything held; empties the buffer."""
        drained = [(partition, [to_record(contact, facts) for contact, facts in held.items()])
                   for partition, held in sorted(self._partitions.items())]
        self._partitions, self.size = {}, 0
        return drained


class StateRecorder:
    """A DeliveryRecorder that writes delivered facts under `prefix` as
    log-<run_id>-<writer>-<n>.avro files, at most `flush_seconds` after a
    fact was recorded; with a `lease`, stops the writer once the run no
    longer holds the state. Picklable; one writer id per open()."""

    def __init__(self, prefix: str, run_id: str, flush_seconds: float = DEFAULT_FLUSH_SECONDS,
                 clock: Callable[[], float] = time.monotonic, lease: Optional[LeaseCheck] = None):
        if not flush_seconds > 0:
            raise ValueError(f'flush_seconds must be positive, got {flush_seconds!r}')
        self._prefix = prefix
        self._run_id = run_id
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._lease = lease
        self._buffer: Optional[FactsBuffer] = None

    def open(self) -> None:
        if self._lease is not None:
            self._lease.check()
        self._writer = uuid.uuid4().hex[:8]
        self._files = 0
        self._buffer = FactsBuffer()
        self._oldest = None

    def record(self, request: LoopsRequest, outcome: Outcome) -> None:
        refused = (request.spec.keyed and outcome.status == 'failed'
                   and is_permanent_reason(outcome.reason or ''))
        if outcome.status not in DELIVERED_STATUSES and not refused:
            return
        if self._oldest is None:
            self._oldest = self._clock()
        if refused:
            self._buffer.add_refusal(request, int(time.time() * 1000))
        else:
            self._buffer.add_request(request)

    def maybe_flush(self) -> None:
        if self._oldest is not None and self._clock() - self._oldest >= self._flush_seconds:
            self.flush()
        if self._lease is not None:
            self._lease.check_if_due()

    def flush(self) -> None:
        if self._buffer is None:
            return
        for partition, records in self._buffer.drain():
            name = log_name(self._run_id, self._writer, self._files)
            write_facts_file(FileSystems.join(partition_dir(self._prefix, partition), name),
                             records)
            self._files += 1
        self._oldest = None

    def close(self) -> None:
        self.flush()
        self._buffer = None
