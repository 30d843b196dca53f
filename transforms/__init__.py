"""Reusable parts of the segment-loops pipelines: pure functions for parsing,
mapping and merging Segment events, and the Beam transforms built on them."""
