"""WriteToLoops: contact sequences -> calls to the Loops API, under its rate limit.

Loops allows `rate_limit` requests per second per team and has no batch
endpoint. Requests are keyed into exactly `write_shards` keys (a stable hash
of the contact), so on any runner at most `write_shards` writers run at once,
each owning rate_limit / write_shards through its own client's token bucket.
Within a writer, several contacts are sent concurrently (one sequential
writer cannot reach 10/s at Loops' 100-300 ms latency), each contact's
requests strictly in order, and a contact's parts (`ContactSequence.part`)
one after another: every part-0 sequence of the shard, then every part-1
sequence, and so on.

The pieces, as in Google's HTTP-writer templates: `WriteToLoops` (the
PTransform, which validates its arguments when it is built), the writer DoFn
(`transforms/delivery/shard_writer.py`: counting, failure records, the recorder hook;
for a stream `transforms/delivery/contact_wait.py`, which also holds events that
reach Loops before their contact) and the client
(`transforms/loops/client.py`: caller, retry policy, throttler).
`WriteInPhases` writes the phases of transforms/core/kinds.py in order, each
waiting for the previous one's `done`.

Counters (`deliver/...`): `delivered`, `already_delivered`, `already_gone`
(a deletion of a contact Loops does not have), `failed` and
`failed_<reason>` (one per request), `not_sent` (left unsent by a stop of
the job, transforms/core/stop.py: no failure record), `retries`, `rate_limited`,
`refused_parts` (parts of a request Loops refused and that were split off:
each is a failure record of its own, not counted in `failed`),
`sent_with_fallback_email` (event sends by userId that Loops refused with
"Contact not found", sent again with the email their call carried; each is
counted once more by how that ended: delivered, failed, ...), and
`throttled_ms` (the time the token bucket held requests back, like RRIO's
`cumulativeThrottlingSeconds`).

A rejected API key (401): the client raises `AuthError`, and the writer stops
sending (transforms/delivery/in_flight.py): that request and every later one of the
writer become failure records with reason `key_rejected`, counted in
`deliver/failed_key_rejected`, and are never sent. The job does not crash
inside Beam, where the exception's type would be lost (a runner in other
processes hands back only its text) and the runner would retry the bundle
with the same rejected key; the job's own code calls
`raise_if_key_rejected(counters)` after the run, which raises `AuthError`
for the command line to recognise by type.

`recorder`: see transforms/delivery/shard_writer.py (`DeliveryRecorder`).
"""
import functools
import zlib
from typing import Callable, Mapping, Optional

import apache_beam as beam

from transforms.core.kinds import PHASES, kinds_in_phase
from transforms.delivery.batching import BatchPerShard
from transforms.delivery.contact_wait import ContactWait, WriteShardWaitingForContacts
from transforms.delivery.shard_writer import FAILED, DeliveryRecorder, WriteShard
from transforms.loops.client import AuthError, LoopsClient
from transforms.loops.connection import LoopsConnection
from transforms.loops.retry import KEY_REJECTED, RetryPolicy

KEY_REJECTED_COUNTER = f'deliver/failed_{KEY_REJECTED}'
# The writer DoFn under the name it had when it lived here.
_WriteShard = WriteShard


def shard_of(contact: str, shards: int) -> int:
    """A stable shard for a contact: the same on every worker and every run
    (Python's own hash() is salted per process)."""
    return zlib.crc32(contact.encode('utf-8')) % shards


def raise_if_key_rejected(counters: Mapping[str, int]) -> None:
    """After a run: AuthError when Loops rejected the API key during it
    (`counters`: the run's counters by name, e.g. summary.pipeline_counters)."""
    rejected = counters.get(KEY_REJECTED_COUNTER, 0)
    if rejected:
        raise AuthError(f'Loops rejected the API key (401) during the run: {rejected} requests '
                        f'were not delivered (failure records with reason {KEY_REJECTED}); '
                        'replay them with a valid key')


class LoopsWriteResult:
    """What WriteToLoops and WriteInPhases give back, by name (like
    WriteToBigQuery's WriteResult).

    failures: failure records (schemas/failure.avsc, stage `deliver`).
    done: one (shard, requests sent) per shard once it is written: a later
    step waits for it as a side input.
    """

    def __init__(self, failures: beam.PCollection, done: beam.PCollection):
        self._failures = failures
        self._done = done

    @property
    def failures(self) -> beam.PCollection:
        return self._failures

    @property
    def done(self) -> beam.PCollection:
        return self._done

    def __repr__(self) -> str:
        return f'LoopsWriteResult(failures={self._failures}, done={self._done})'


class WriteToLoops(beam.PTransform):
    """ContactSequence -> LoopsWriteResult (`.failures`, `.done`).

    Batch (the default): a GroupByKey per shard, so the job stays on Beam's
    fast in-process runner locally. Streaming (`max_buffering_seconds` set):
    GroupIntoBatches per shard, so no request waits longer than that before
    it is sent; each batch is merged per contact in event-time order first.
    With `contact_wait` (a ContactWait; streaming only), an event Loops
    refuses with "Contact not found" is held and sent again until its
    contact arrives or the wait is over (transforms/delivery/contact_wait.py).

    Sends every request of every sequence to Loops: 2xx is delivered, 409 on
    our idempotency key already delivered, other 4xx a permanent failure
    (a refused part of a contact upsert is split off and the rest sent once
    more), 429/5xx/timeouts/connection errors are retried with backoff (then
    `retries_exhausted`), 401 stops the writer (`key_rejected`). Every failed
    request or refused part is a failure record in `.failures`.

    `client_factory`: a picklable callable -> a client (e.g. a LoopsClient
    of a test's parts), called once per writer; default: the connection's
    client with `retry_policy` (default: the connection's). `recorder`: see
    transforms/delivery/shard_writer.py. `clock` (seconds of processing time) is for
    tests of the streaming timers.
    """

    def __init__(self, connection: LoopsConnection, label: str = 'requests', *,
                 client_factory: Optional[Callable[[], LoopsClient]] = None,
                 retry_policy: Optional[RetryPolicy] = None,
                 recorder: Optional[DeliveryRecorder] = None,
                 max_buffering_seconds: Optional[float] = None, batch_size: int = 500,
                 contact_wait: Optional[ContactWait] = None,
                 clock: Optional[Callable[[], float]] = None):
        super().__init__()
        _check_write_arguments(connection, label, client_factory, retry_policy, recorder)
        _check_batching(max_buffering_seconds, batch_size, contact_wait, clock)
        self._connection = connection
        self._label = label
        self._client_factory = client_factory or functools.partial(
            connection.client, policy=retry_policy)
        self._recorder = recorder
        self._max_buffering_seconds = max_buffering_seconds
        self._batch_size = batch_size
        self._contact_wait = contact_wait
        self._clock = clock

    def expand(self, sequences):
        shards = self._connection.write_shards
        keyed = sequences | 'KeyByShard' >> beam.Map(lambda s: (shard_of(s.contact, shards), s))
        if self._max_buffering_seconds is None:
            grouped = keyed | 'GroupByShard' >> beam.GroupByKey()
        else:
            grouped = keyed | 'BatchPerShard' >> BatchPerShard(
                self._batch_size, self._max_buffering_seconds, self._clock)
        written = grouped | 'SendToLoops' >> beam.ParDo(
            self._writer()).with_outputs(FAILED, main='done')
        return LoopsWriteResult(written[FAILED], written.done)

    def _writer(self) -> WriteShard:
        parts = (self._connection, self._label, self._client_factory, self._recorder)
        if self._contact_wait is None:
            return WriteShard(*parts)
        return WriteShardWaitingForContacts(*parts, wait=self._contact_wait, clock=self._clock)


def _check_write_arguments(connection, label, client_factory, retry_policy, recorder) -> None:
    if not isinstance(connection, LoopsConnection):
        raise TypeError(f'connection must be a LoopsConnection, got {type(connection).__name__}')
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f'label must be a non-empty string, got {label!r}')
    if client_factory is not None and not callable(client_factory):
        raise TypeError('client_factory must be a callable that returns a client')
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise TypeError(f'retry_policy must be a RetryPolicy, got {type(retry_policy).__name__}')
    if client_factory is not None and retry_policy is not None:
        raise ValueError('give retry_policy or client_factory, not both: the client the '
                         'factory makes has its own retry policy')
    if recorder is not None and not isinstance(recorder, DeliveryRecorder):
        raise TypeError('recorder must have the methods of a DeliveryRecorder: open, record, '
                        'maybe_flush, flush and close')


def _check_batching(max_buffering_seconds, batch_size, contact_wait, clock) -> None:
    if max_buffering_seconds is not None and not max_buffering_seconds > 0:
        raise ValueError(f'max_buffering_seconds must be positive, got {max_buffering_seconds!r}')
    if contact_wait is not None and not isinstance(contact_wait, ContactWait):
        raise TypeError(f'contact_wait must be a ContactWait, got {type(contact_wait).__name__}')
    if contact_wait is not None and max_buffering_seconds is None:
        raise ValueError('contact_wait is for a stream: give max_buffering_seconds too')
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f'batch_size must be a whole number of at least 1, got {batch_size!r}')
    if clock is not None and not callable(clock):
        raise TypeError('clock must be a callable returning seconds')


def phase_name(phase: int) -> str:
    """'Contacts', 'Events': the phase's kinds in a step label."""
    return ''.join(name.split('_')[0].capitalize() + 's' for name in kinds_in_phase(phase))


class WriteInPhases(beam.PTransform):
    """Sequences by phase -> one LoopsWriteResult, the phases written in order.

    In: a dict {phase: PCollection of ContactSequence, or a tuple of them,
    flattened as `All<Kinds>`} (phases of transforms/core/kinds.py; any may
    be left out), or a tuple of PCollections in the order of kinds.PHASES.
    Each phase is written by its own WriteToLoops (`Write<Kinds>`, e.g.
    WriteContacts) once the previous phase's `done` is complete
    (`WaitFor<Kinds>`): an event that names its contact only by
    userId then never fails for lack of a contact the same run creates.
    Out: `.failures` of every phase flattened, `.done` of the last phase.
    `write_options` go to every WriteToLoops (client_factory, retry_policy,
    recorder).
    """

    def __init__(self, connection: LoopsConnection, label_prefix: str = '', **write_options):
        super().__init__()
        _check_write_arguments(connection, 'phases', write_options.get('client_factory'),
                               write_options.get('retry_policy'), write_options.get('recorder'))
        self._connection = connection
        self._label_prefix = label_prefix
        self._write_options = write_options

    def expand(self, by_phase):
        phases = sequences_by_phase(by_phase)
        failures, done, waited_for = [], None, None
        for phase in sorted(phases):
            sequences, name = phases[phase], phase_name(phase)
            if isinstance(sequences, tuple):
                sequences = sequences | f'All{name}' >> beam.Flatten()
            if done is not None:
                sequences = sequences | f'WaitFor{waited_for}' >> beam.Map(
                    lambda sequence, _done: sequence, beam.pvalue.AsList(done))
            result = sequences | f'Write{name}' >> WriteToLoops(
                self._connection, label=f'{self._label_prefix}{name.lower()}',
                **self._write_options)
            failures.append(result.failures)
            done, waited_for = result.done, name
        return LoopsWriteResult(tuple(failures) | 'DeliveryFailures' >> beam.Flatten(), done)


def sequences_by_phase(by_phase) -> dict:
    """WriteInPhases' input -> {phase: PCollection or tuple of them};
    TypeError or ValueError for anything else."""
    if isinstance(by_phase, (tuple, list)):
        if len(by_phase) != len(PHASES):
            raise ValueError(f'give one PCollection per phase {PHASES}, got {len(by_phase)}')
        by_phase = dict(zip(PHASES, by_phase))
    if not isinstance(by_phase, dict):
        raise TypeError('WriteInPhases takes a dict {phase: PCollection} or a tuple of them')
    unknown = sorted(set(by_phase) - set(PHASES), key=repr)
    if unknown or not by_phase:
        raise ValueError(f'phases must be among {PHASES}, got {sorted(by_phase, key=repr)}')
    return by_phase
