"""Segment events -> Loops requests in a stream: a thin DoFn around EventProcessor.

`ProcessEvents`: one RawEvent in, its requests out (one per route of the
mapping that takes it); failure records (whole events, a route's, and refused
parts) to `failed`, and what the processor counts as Beam metrics. The backfill's DoFn (transforms/contacts/process_archive.py) is
this one, gathering a bundle's requests per contact.
"""
import apache_beam as beam

from transforms.core.metrics import BundleCounts
from transforms.mapping.processor import EventProcessor

FAILED = 'failed'


class ProcessEventFn(beam.DoFn):
    def __init__(self, processor: EventProcessor):
        self._processor = processor

    def setup(self):
        self._counts = BundleCounts()

    def process(self, raw):
        processed = self._processor.process(raw, self._counts)
        for failure in processed.failures:
            yield beam.pvalue.TaggedOutput(FAILED, failure)
        yield from processed.requests

    def finish_bundle(self):
        self._counts.flush()


class ProcessEvents(beam.PTransform):
    """RawEvent -> LoopsRequest (see EventProcessor). Returns (requests,
    failures): failure records of stages parse, map and conform."""

    def __init__(self, processor: EventProcessor):
        super().__init__()
        self._processor = processor

    def expand(self, raw_events):
        processed = raw_events | 'ParseFilterMap' >> beam.ParDo(
            ProcessEventFn(self._processor)).with_outputs(FAILED, main='requests')
        return processed.requests, processed[FAILED]
