"""Beam metrics of the pipelines: counters named `<step>/<outcome>` in one
namespace, so a Dataflow user sees them in the console and the run summary is
built from the very same numbers."""
NAMESPACE = 'segment_loops'
