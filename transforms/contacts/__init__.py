"""The contact model and what is built on it: merging a contact's updates
(the latest value of every property wins, in any order), leads, the order of
a contact's events, the backfill's DoFn that gathers them, and the stream's
per-contact memory.

May import: transforms.core, transforms.segment, transforms.mapping.
"""
