"""The records and helpers every stage shares: the records that flow between
steps (raw events, Loops requests, failure records), the kinds of request as
data, metrics, sinks (dead letter, dry run), digests, text and log helpers,
and JavaScript's value rules for the ports of Segment's code (javascript).

May import: nothing else in transforms.
"""
