"""Segment calls -> Loops requests: the mapping language, Loops' value rules,
fitting a request to the account, and the per-event path that puts them
together (`EventProcessor`), with the stream's DoFn around it. A Segment
"Loops (Actions)" destination's own subscriptions apply as Segment applies
them (subscriptions.py, loops_actions.py, on Segment's fql/, mapping_kit/ and
actions_core/).

May import: transforms.core, transforms.segment.
"""
