"""Digests that stand for a contact, an event or a value where only equality is asked.

The sync state keeps no personal data but digests (transforms/state/facts.py),
and the ordering of a contact's events compares the same digests
(transforms/contacts/ordering.py): both read them from here, below both.
A contact key ('user:<userId>', 'email:<address>') is BLAKE2b-128 of its
text, an event's Idempotency-Key BLAKE2b-128, a value BLAKE2b-64 of its type
and text (only "changed or not" is asked of it).
"""
import hashlib

CONTACT_DIGEST_SIZE = 16
VALUE_DIGEST_SIZE = 8
KEY_DIGEST_SIZE = 16


def contact_digest(contact: str) -> bytes:
    """The state's key of a contact key ('user:...' or 'email:...')."""
    return hashlib.blake2b(contact.encode('utf-8', 'surrogatepass'),
                           digest_size=CONTACT_DIGEST_SIZE).digest()


def key_digest(idempotency_key: str) -> bytes:
    """The state's record of an event's Idempotency-Key."""
    return hashlib.blake2b(idempotency_key.encode('utf-8', 'surrogatepass'),
                           digest_size=KEY_DIGEST_SIZE).digest()


def value_digest(value) -> bytes:
    """A digest of a Loops value that tells 1, 1.0, '1' and True apart."""
    text = f'{type(value).__name__}:{value!r}'
    return hashlib.blake2b(text.encode('utf-8', 'surrogatepass'),
                           digest_size=VALUE_DIGEST_SIZE).digest()
