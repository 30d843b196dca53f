"""Which part of a request Loops refused, and cutting it off: pure, table-driven."""
import pytest

from transforms.core.records import NO_STAMP, contact_upsert
from transforms.loops.refusal import RefusedPart, refused_part, split_off

BODY = {'userId': 'u1', 'email': 'u1@example.com', 'bio': {'nested': 1}, 'id': 'x', '': 3,
        ' ': 4, 'plan': 'pro', 'subscribed': 'yes',
        'mailingLists': {'list_news': True, 'list_x': False}}


@pytest.mark.parametrize('message, part', [
    ('Invalid value for "bio": nested objects and arrays are not valid property values.',
     RefusedPart('bio')),
    ('"id" is a reserved name and cannot be a contact property.', RefusedPart('id')),
    ('Invalid property name "".', RefusedPart('')),
    ('Invalid property name " ".', RefusedPart(' ')),
    ('Invalid value for "subscribed": must be true or false.', RefusedPart('subscribed')),
    ('Unknown mailing list id: list_x.', RefusedPart('mailingLists', 'list_x')),
    ('Unknown mailing list id: "list_x"', RefusedPart('mailingLists', 'list_x')),
    ('Invalid value for "mailingLists": must be an object of mailing list id -> true/false.',
     RefusedPart('mailingLists')),
    # A name that is not in the body, or nothing named at all: the whole request.
    ('Invalid value for "city": nested objects are not valid.', None),
    ('Unknown mailing list id: list_gone.', None),
    ('Some body key or value is longer than allowable', None),
    ('userId not found and cannot create a new contact without an email.', None),
    ('', None),
    (None, None),
    # The contact's identity is never split off.
    ('Invalid value for "userId": must be a non-empty string.', None),
    ('Invalid value for "email": not an address.', None),
    # The first quoted name that is in the body.
    ('"city" and "plan" are both wrong', RefusedPart('plan')),
])
def test_refused_part(message, part):
    assert refused_part(message, BODY) == part


def test_a_mailing_list_message_without_lists_in_the_body_names_nothing():
    assert refused_part('Unknown mailing list id: list_x.', {'userId': 'u1'}) is None


def upsert(body: dict):
    return contact_upsert(body, 'user:u1', NO_STAMP, 'm1,m2')


@pytest.mark.parametrize('body, part, rest, alone', [
    ({'userId': 'u1', 'email': 'a@b.co', 'bio': [1], 'plan': 'pro'}, RefusedPart('bio'),
     {'userId': 'u1', 'email': 'a@b.co', 'plan': 'pro'},
     {'userId': 'u1', 'email': 'a@b.co', 'bio': [1]}),
    ({'email': 'a@b.co', 'id': 'x'}, RefusedPart('id'), {'email': 'a@b.co'},
     {'email': 'a@b.co', 'id': 'x'}),
    ({'userId': 'u1', 'plan': 'pro', 'mailingLists': {'list_news': True, 'list_x': False}},
     RefusedPart('mailingLists', 'list_x'),
     {'userId': 'u1', 'plan': 'pro', 'mailingLists': {'list_news': True}},
     {'userId': 'u1', 'mailingLists': {'list_x': False}}),
    ({'userId': 'u1', 'mailingLists': {'list_x': True}}, RefusedPart('mailingLists', 'list_x'),
     {'userId': 'u1'}, {'userId': 'u1', 'mailingLists': {'list_x': True}}),
])
def test_split_off(body, part, rest, alone):
    original = upsert(body)
    kept = repr(original)
    without, only = split_off(original, part)
    assert (without.body, only.body) == (rest, alone)
    for request in (without, only):
        assert (request.kind, request.headers, request.contact, request.source) == (
            original.kind, original.headers, original.contact, original.source)
    assert repr(original) == kept   # the original is not changed
