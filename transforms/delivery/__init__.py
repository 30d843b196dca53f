"""Writing to Loops from a pipeline: `WriteToLoops` and its phases, the writer
DoFn of a shard, keeping requests in flight in per-contact order, a stream's
batches, and a stream's events that wait for their contact.

May import: transforms.core, transforms.segment, transforms.mapping,
transforms.contacts, transforms.loops.
"""
