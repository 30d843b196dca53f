"""Segment calls -> Loops requests. A mapping is a list of routes (routes.py),
written in our mapping language (language.py, mapper.py) or as a Segment
"Loops (Actions)" destination's own subscriptions (segment_routes.py, on
subscriptions.py, loops_actions.py and Segment's fql/, mapping_kit/ and
actions_core/); the request is made the same way for every route (build.py,
with Loops' value rules, values.py) and fitted to the account (conform.py).
The per-event path puts them together (`EventProcessor`, processor.py), with
the stream's DoFn around it (process.py).

May import: transforms.core, transforms.segment.
"""
