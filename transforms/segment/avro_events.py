"""One Segment event <-> one record of `schemas/segment_event.avsc`.

Segment events are free-form JSON: keys such as "Invited User?" cannot be Avro
field names, and senders put any JSON type in any field. So the record keeps
the common top-level fields typed, the free-form objects as JSON text, and
every key (or value) that fits no field in `extra`, a JSON object text. A null
field means the key was absent or JSON null: both read back as absent.
"""
from typing import Any, Callable

from schemas import load_schema
from transforms.core.text import compact_json
from transforms.segment.parse import LOADS

SCHEMA = load_schema('segment_event')

# Free-form objects, kept whole as JSON text (whatever their JSON type).
JSON_TEXT_FIELDS = ('traits', 'properties', 'context', 'integrations')
EXTRA_FIELD = 'extra'

_LONG_MIN, _LONG_MAX = -2 ** 63, 2 ** 63 - 1

# `type(...) is` rather than isinstance: JSON true/false load as bool, a
# subclass of int, and must not pass for an epoch or a numeric userId.
_FITS: dict[str, Callable[[Any], bool]] = {
    'string': lambda value: type(value) is str,
    'long': lambda value: type(value) is int and _LONG_MIN <= value <= _LONG_MAX,
    'double': lambda value: type(value) is float,
}

# Typed field name -> the non-null branches of its union, read from the schema
# so the two cannot drift apart.
_TYPED_FIELDS: dict[str, tuple[str, ...]] = {
    field['name']: tuple(branch for branch in field['type'] if branch != 'null')
    for field in SCHEMA['fields']
    if field['name'] not in JSON_TEXT_FIELDS + (EXTRA_FIELD,)
}


def _fits(value: Any, branches: tuple[str, ...]) -> bool:
    return any(_FITS[branch](value) for branch in branches)


def to_avro_record(event: dict) -> dict:
    """A Segment event object -> a record of `segment_event.avsc`.

    Typed fields take the event's value when its JSON type fits the field's
    union; a value that does not fit (a userId object, a boolean timestamp)
    goes to `extra` with every top-level key that has no field of its own.
    `traits`, `properties`, `context` and `integrations` become JSON text.
    """
    record: dict = {field['name']: None for field in SCHEMA['fields']}
    extra = {}
    for key, value in event.items():
        if key in _TYPED_FIELDS:
            if value is None:
                continue
            if _fits(value, _TYPED_FIELDS[key]):
                record[key] = value
            else:
                extra[key] = value
        elif key in JSON_TEXT_FIELDS:
            if value is not None:
                record[key] = compact_json(value)
        else:
            extra[key] = value
    if extra:
        record[EXTRA_FIELD] = compact_json(extra)
    return record


def from_avro_record(record: dict) -> dict:
    """A record of `segment_event.avsc` -> the Segment event object.

    Null fields are left out, JSON texts are loaded and the keys of `extra` are
    merged back at the top level. Raises ValueError when a JSON text does not
    parse (with the archive lines' strict decoder: a lone surrogate, which no
    coder can encode, is refused too) or `extra` is not a JSON object.
    """
    event = {}
    for key in _TYPED_FIELDS:
        value = record.get(key)
        if value is not None:
            event[key] = value
    for key in JSON_TEXT_FIELDS:
        text = record.get(key)
        if text is not None:
            event[key] = LOADS(text)
    extra_text = record.get(EXTRA_FIELD)
    if extra_text is not None:
        extra = LOADS(extra_text)
        if not isinstance(extra, dict):
            raise ValueError(f'{EXTRA_FIELD!r} is not a JSON object')
        event.update(extra)
    return event
