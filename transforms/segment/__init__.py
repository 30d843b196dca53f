"""Reading Segment: archive files (gzip NDJSON, Avro) and their layout, one
event's parsing into a ParsedEvent, Segment's timestamps, and a stream's
repeated messages.

May import: transforms.core.
"""
