"""Talking to the Loops API: one HTTP exchange (caller), what an answer means
and when to ask again (retry), pacing (rate limit), the client that puts them
together, the connection a job carries, the API key, reading the account
(its properties and lists; its workflows and event patterns, creating
properties), and which part of a request Loops refused.

May import: transforms.core, transforms.segment, transforms.mapping,
transforms.contacts.
"""
