"""Where results land: failure records (Avro files, or a Pub/Sub topic for a
stream) and dry-run requests (JSON lines)."""
import json
import os

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import FixedWindows

from schemas import load_schema
from transforms.core.metrics import NAMESPACE, CounterFamily


def output_prefix(prefix: str, default_name: str) -> str:
    """`dir/` or an existing local directory -> `dir/<default_name>`;
    otherwise the prefix as given (file names start with it)."""
    if prefix.endswith('/') or os.path.isdir(prefix):
        return FileSystems.join(prefix.rstrip('/') or '/', default_name)
    return prefix


# Counters of the failure records a job writes: DEAD_LETTERED in all, and
# DEAD_LETTER_PREFIX + '<stage>_<reason>' (e.g. dead_letter/deliver_http_400).
DEAD_LETTERED = 'dead_letter/records'
DEAD_LETTER_PREFIX = 'dead_letter/'


class _CountFailure(beam.DoFn):
    def setup(self):
        self._records = Metrics.counter(NAMESPACE, DEAD_LETTERED)
        self._by_reason = CounterFamily(DEAD_LETTER_PREFIX)

    def process(self, record):
        self._records.inc()
        self._by_reason.inc(f'{record["stage"]}_{record["reason"]}')
        yield record


class CountFailures(beam.PTransform):
    """Failure records -> the same records, counted by stage and reason on
    their way to a sink (the counters above): the end of a run reports
    exactly what its dead letter holds."""

    def expand(self, failures):
        return failures | 'Count' >> beam.ParDo(_CountFailure())


class WriteFailures(beam.PTransform):
    """Failure records (schemas/failure.avsc dicts) -> Avro files under a
    prefix, counted (CountFailures)."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = output_prefix(prefix, 'failures')

    def expand(self, failures):
        return (failures
                | 'CountFailures' >> CountFailures()
                | 'WriteFailureAvro' >> beam.io.WriteToAvro(
                    self._prefix, schema=load_schema('failure'), file_name_suffix='.avro'))


class WriteDryRun(beam.PTransform):
    """(ContactSequence PCollections) -> one JSON line per request, exactly as
    it would be sent, in files starting with the prefix (`<prefix>-<i>-...`,
    one set per input). Each input is written where it is made, not
    flattened first: Beam's in-process runner holds a Flatten's whole input
    in memory until every producer is done, which would make a dry run's
    memory grow with the number of requests."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = output_prefix(prefix, 'requests')

    def expand(self, sequence_collections):
        for i, sequences in enumerate(sequence_collections):
            (sequences
             | f'ToJson{i}' >> beam.FlatMap(
                 lambda sequence: [request.to_json() for request in sequence.requests])
             | f'WriteJsonLines{i}' >> beam.io.WriteToText(f'{self._prefix}-{i}',
                                                           file_name_suffix='.jsonl'))
        return beam.pvalue.PDone(self.pipeline)


def read_failure_records(prefix: str) -> list:
    """Every failure record in the Avro files written under `prefix`
    (the same prefix given to WriteFailures), in no particular order."""
    pattern = output_prefix(prefix, 'failures') + '*.avro'
    records = []
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path) as f:
            records.extend(fastavro.reader(f))
    return records


class _AvroFailureSink(fileio.FileSink):
    """Failure records into one Avro file (for fileio.WriteToFiles)."""

    def open(self, fh):
        self._writer = fastavro.write.Writer(fh, load_schema('failure'))

    def write(self, record):
        self._writer.write(record)

    def flush(self):
        self._writer.flush()


class WriteWindowedFailures(beam.PTransform):
    """A stream's failure records -> Avro files under a prefix, one set per
    `window_seconds` window (files appear as windows close)."""

    def __init__(self, prefix: str, window_seconds: int = 60):
        super().__init__()
        self._directory = os.path.dirname(output_prefix(prefix, 'failures')) or '.'
        self._window_seconds = window_seconds

    def expand(self, failures):
        return (
            failures
            | 'FailureWindows' >> beam.WindowInto(FixedWindows(self._window_seconds))
            | 'WriteFailureFiles' >> fileio.WriteToFiles(
                self._directory, sink=lambda _destination: _AvroFailureSink(),
                file_naming=fileio.default_file_naming('failures', '.avro')))


def failure_message(record: dict) -> PubsubMessage:
    """A failure record as a Pub/Sub message: the record as JSON, with the
    `stage` and `reason` as attributes (for subscription filters)."""
    data = json.dumps(record, ensure_ascii=False).encode('utf-8', 'backslashreplace')
    return PubsubMessage(data, {'stage': record['stage'], 'reason': record['reason']})


class PublishFailures(beam.PTransform):
    """Failure records -> messages on a Pub/Sub topic (`projects/P/topics/T`)."""

    def __init__(self, topic: str):
        super().__init__()
        self._topic = topic

    def expand(self, failures):
        return (
            failures
            | 'ToPubsubMessage' >> beam.Map(failure_message)
            | 'PublishFailures' >> beam.io.WriteToPubSub(self._topic, with_attributes=True))
