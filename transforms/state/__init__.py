"""What this tool delivered, remembered between runs: the sync state (facts,
files, the recorder on the writers, reading and folding it in a pipeline) and
the first load by CSV.

May import: transforms.core, transforms.segment, transforms.mapping,
transforms.contacts, transforms.loops, transforms.delivery.
"""
