"""Segment events -> Loops requests: parse, filter, map.

The same steps serve the backfill and the streaming job. Each fallible step
has a 'failed' output of failure records (schemas/failure.avsc).
"""
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.mapping import Mapping, map_event
from transforms.metrics import NAMESPACE, CounterFamily, ReasonCounters
from transforms.parse import ParsedEvent, Rejected, event_text, parse_event
from transforms.records import failure_record, json_text

FAILED = 'failed'


def keeps(event: ParsedEvent, types: frozenset,
          event_names: Optional[frozenset]) -> bool:
    """Whether the filter keeps an event: its type is selected and, for
    track calls, its name is one of `event_names` (None keeps every name)."""
    if event.type not in types:
        return False
    if event_names is not None and event.type == 'track':
        return event.data.get('event') in event_names
    return True


class _ToLoopsRequest(beam.DoFn):
    """(source, line number, raw) -> LoopsRequest; failure records on FAILED.

    Parse, filter and map are one step: as three steps, Beam's own cost per
    element and per step was paid three times for every line of an archive.
    """

    def __init__(self, types: Iterable[str], event_names: Optional[Iterable[str]],
                 mapping: Mapping):
        self._types = frozenset(types)
        self._event_names = frozenset(event_names) if event_names is not None else None
        self._mapping = mapping

    def setup(self):
        self._parse_failed = ReasonCounters('parse')
        self._kept = Metrics.counter(NAMESPACE, 'filter/kept')
        self._filtered = Metrics.counter(NAMESPACE, 'filter/filtered_out')
        self._filtered_by_type = CounterFamily('filter/filtered_out_')
        self._map_failed = ReasonCounters('map')
        self._contacts = Metrics.counter(NAMESPACE, 'map/contact_updates')
        self._events = Metrics.counter(NAMESPACE, 'map/event_sends')
        self._adjusted = CounterFamily('map/')

    def process(self, item):
        path, line_number, raw = item
        source = f'{path}:{line_number}' if line_number else path
        try:
            event = parse_event(raw, source)
        except Rejected as rejected:
            self._parse_failed.inc(rejected.reason)
            yield beam.pvalue.TaggedOutput(FAILED, failure_record(
                'parse', rejected.reason, rejected.message,
                event=event_text(raw), source=source))
            return
        if not keeps(event, self._types, self._event_names):
            self._count_filtered(event.type)
            return
        self._kept.inc()
        try:
            mapped = map_event(event, self._mapping)
        except Rejected as rejected:
            self._map_failed.inc(rejected.reason)
            yield beam.pvalue.TaggedOutput(FAILED, failure_record(
                'map', rejected.reason, rejected.message,
                event=json_text(event.data), source=event.source))
            return
        (self._events if mapped.request.is_event else self._contacts).inc()
        for name, n in mapped.adjustments.items():
            self._adjusted.inc(name, n)
        yield mapped.request

    def _count_filtered(self, event_type: str):
        self._filtered.inc()
        self._filtered_by_type.inc(event_type)


class SegmentToLoops(beam.PTransform):
    """(source, line number, raw event) -> LoopsRequest.

    Parses each event, keeps the selected types and track names (the others
    are counted per type, not failures), and maps identify calls to contact
    upserts and track calls to event sends.

    Returns (requests, failures): failures are records of stage `parse`
    (invalid JSON, not an object, missing or unknown type, over 32 KB) and
    `map` (missing userId, invalid email, ...).
    """

    def __init__(self, types: Iterable[str], event_names: Optional[Iterable[str]],
                 mapping: Mapping):
        super().__init__()
        self._types = tuple(types)
        self._event_names = tuple(event_names) if event_names is not None else None
        self._mapping = mapping

    def expand(self, raw_events):
        processed = raw_events | 'ParseFilterMap' >> beam.ParDo(_ToLoopsRequest(
            self._types, self._event_names, self._mapping)).with_outputs(FAILED, main='requests')
        return processed.requests, processed.failed
