"""The reusable steps of the segment-loops pipelines, a package per stage of
the pipeline diagram (docs/architecture.md):

    segment -> mapping -> contacts -> loops -> delivery -> state

- `core`: records, request kinds, metrics, sinks, digests, text: below all.
- `segment`: reading Segment archives and messages, parsing one event.
- `mapping`: a Segment call -> Loops requests (the per-event path).
- `contacts`: the contact model: merging, leads, event order, stream memory.
- `loops`: the Loops API client: one call, retries, pacing, the account.
- `delivery`: `WriteToLoops`: writers that keep the rate limit and the order.
- `state`: the sync state between runs, and the first load by CSV.

A package imports only `core` and the packages before it (each says so in its
docstring, and tests/test_layout.py checks it). Pure functions hold the
logic; the DoFns and PTransforms around them are thin.
"""
