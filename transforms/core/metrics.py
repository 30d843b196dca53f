"""Beam metrics of the pipelines: counters named `<step>/<outcome>` in one
namespace, so a Dataflow user sees them in the console and the run summary is
built from the very same numbers."""
import collections

from apache_beam.metrics import Metrics

NAMESPACE = 'segment_loops'


class CounterFamily:
    """Counters `<prefix><name>` for names known only at run time (failure
    reasons, event types, value changes), each created on first use.
    Create it in a DoFn's setup(), like any counter."""

    def __init__(self, prefix: str):
        self._prefix = prefix
        self._counters = {}

    def inc(self, name: str, n: int = 1) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter(NAMESPACE, self._prefix + name)
        counter.inc(n)


class BundleCounts(collections.Counter):
    """Counts in a plain Counter, for pure functions to add to, that
    `flush()` adds to Beam metrics (and resets). A Beam counter update per
    event costs more than the event's own work: DoFns count into this and
    flush at the end of a bundle. Create it in setup()."""

    def __init__(self):
        super().__init__()
        self._metrics = CounterFamily('')

    def flush(self) -> None:
        for name, n in self.items():
            if n:
                self._metrics.inc(name, n)
        self.clear()
