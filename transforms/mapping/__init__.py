"""Segment calls -> Loops requests: the mapping language, Loops' value rules,
fitting a request to the account, and the per-event path that puts them
together (`EventProcessor`), with the stream's DoFn around it.

May import: transforms.core, transforms.segment.
"""
