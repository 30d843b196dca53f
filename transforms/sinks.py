"""Where results land: failure records as Avro, dry-run requests as JSON lines."""
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from schemas import load_schema


def output_prefix(prefix: str, default_name: str) -> str:
    """`dir/` or an existing local directory -> `dir/<default_name>`;
    otherwise the prefix as given (file names start with it)."""
    if prefix.endswith('/') or os.path.isdir(prefix):
        return FileSystems.join(prefix.rstrip('/') or '/', default_name)
    return prefix


class WriteFailures(beam.PTransform):
    """Failure records (schemas/failure.avsc dicts) -> Avro files under a prefix."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = output_prefix(prefix, 'failures')

    def expand(self, failures):
        return failures | 'WriteFailureAvro' >> beam.io.WriteToAvro(
            self._prefix, schema=load_schema('failure'), file_name_suffix='.avro')


class WriteDryRun(beam.PTransform):
    """ContactSequence -> one JSON line per request, exactly as it would be sent."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = output_prefix(prefix, 'requests')

    def expand(self, sequences):
        return (
            sequences
            | 'Requests' >> beam.FlatMap(lambda sequence: sequence.requests)
            | 'ToJson' >> beam.Map(lambda request: request.to_json())
            | 'WriteJsonLines' >> beam.io.WriteToText(self._prefix, file_name_suffix='.jsonl'))


def read_failure_records(prefix: str) -> list:
    """Every failure record in the Avro files written under `prefix`
    (the same prefix given to WriteFailures), in no particular order."""
    import fastavro
    pattern = output_prefix(prefix, 'failures') + '*.avro'
    records = []
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path) as f:
            records.extend(fastavro.reader(f))
    return records
