"""An action's fields, and what Segment does to a resolved payload before `perform`.

Segment's Action.execute (packages/core/src/destination-kit/action.ts) runs
the subscription's mapping through Mapping Kit, then:
1. removeEmptyValues (packages/core/src/remove-empty-values.ts): at the top
   level, empty strings go, and nulls of fields whose type does not allow null
   (none of Loops' does); values inside object fields are not touched;
2. AJV validation of the JSON schema built from the fields
   (destination-kit/fields-to-jsonschema.ts, schema-validation.ts) with
   `coerceTypes: 'array'`, `removeAdditional: true` and `allErrors`: keys that
   are not fields are dropped, a one-item array stands for its item, numbers
   and booleans become strings where a string is expected, "true"/"false"/1/0
   become booleans; every failure is reported, in ajv-human-errors' words
   ("Contact Email must be a valid email address string but it was not."),
   joined by a space: the `required` failures first, then each field's in the
   fields' order.
Field defaults play no part here: Segment's UI copies them into a new
subscription's mapping, and nothing fills in a field the mapping leaves out.
"""
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from transforms.core.javascript import to_string, type_name
from transforms.mapping.actions_core.formats import FORMAT_CHECKS

# Segment's field types, as the JSON schema types AJV checks (toJsonSchemaType);
# only the types Loops' actions use.
_SCHEMA_TYPES = {
    'string': ('string',),
    'text': ('string',),
    'datetime': ('string', 'number'),
    'boolean': ('boolean',),
    'object': ('object',),
}
# The formats' names in ajv-human-errors' messages; others are named as they are.
_FORMAT_LABELS = {'email': 'email address'}
_MISSING = object()


class PayloadValidationError(ValueError):
    """A payload Segment refuses before `perform`: its message is Segment's."""


@dataclass(frozen=True)
class ActionField:
    """One field of a Segment action, as its definition declares it."""

    name: str
    label: str
    type: str
    description: str
    required: bool = False
    format: Optional[str] = None
    # The Mapping Kit mapping Segment's UI fills in for a new subscription; None when it has none.
    default: Optional[dict] = None

    def __post_init__(self) -> None:
        if self.type not in _SCHEMA_TYPES:
            raise ValueError(f'{self.name}: field type {self.type!r} is not one this port checks')

    @property
    def schema_types(self) -> tuple[str, ...]:
        return _SCHEMA_TYPES[self.type]

    @property
    def schema_format(self) -> Optional[str]:
        """The format AJV checks: every datetime is `date-like`, whatever the field says."""
        if self.type == 'datetime':
            return 'date-like'
        if self.type == 'text':
            return 'text'
        return self.format


class PayloadSchema:
    """The checks Segment derives from an action's fields, applied to a resolved payload."""

    def __init__(self, fields: Sequence[ActionField]):
        self.fields = tuple(fields)
        self._by_name = {field.name: field for field in self.fields}

    def prepare(self, resolved: Any) -> dict:
        """The payload Segment gives `perform` for this resolved mapping.

        Raises PayloadValidationError with Segment's message. The resolved
        mapping is not changed (values inside it are shared, not copied).
        """
        if not isinstance(resolved, dict):
            # A mapping that is one directive resolves to that directive's value. A null
            # has been removed by then, so AJV sees undefined.
            shown = 'undefined' if resolved is None else _described(resolved)
            raise PayloadValidationError(f'The root value must be an object but it was {shown}.')
        payload = {key: value for key, value in resolved.items()
                   if key in self._by_name and value is not None and value != ''}
        errors = [f"The root value is missing the required field '{field.name}'."
                  for field in self.fields if field.required and field.name not in payload]
        for field in self.fields:
            if field.name in payload:
                value, error = _checked(field, payload[field.name])
                if error:
                    errors.append(error)
                else:
                    payload[field.name] = value
        if errors:
            raise PayloadValidationError(' '.join(errors))
        return payload


def _checked(field: ActionField, value: Any) -> tuple[Any, Optional[str]]:
    """(the value as AJV leaves it, None) or (None, Segment's message)."""
    types = field.schema_types
    if not _has_type(value, types):
        coerced = _coerced(value, types)
        if coerced is _MISSING:
            # AJV names the value it last looked at: the item of a one-item array.
            shown = value[0] if _unwraps(value, types) else value
            expected = ' or '.join(types)
            return None, (f'{field.label} must be {_article(expected)} {expected} '
                          f'but it was {_described(shown)}.')
        value = coerced
    check = FORMAT_CHECKS.get(field.schema_format) if field.schema_format else None
    if isinstance(value, str) and check is not None and not check(value):
        label = _FORMAT_LABELS.get(field.schema_format, field.schema_format)
        return None, f'{field.label} must be a valid {label} string but it was not.'
    return value, None


def _has_type(value: Any, types: tuple[str, ...]) -> bool:
    return any(_is(value, kind) for kind in types)


def _is(value: Any, kind: str) -> bool:
    if kind == 'string':
        return isinstance(value, str)
    if kind == 'number':
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == 'boolean':
        return isinstance(value, bool)
    return isinstance(value, dict)


def _unwraps(value: Any, types: tuple[str, ...]) -> bool:
    """AJV coerces only to string, number and boolean; it first takes a
    one-item array's item, when it coerces at all."""
    return isinstance(value, list) and len(value) == 1 and types != ('object',)


def _coerced(value: Any, types: tuple[str, ...]) -> Any:
    """AJV's coercion to the first type that takes the value, or _MISSING."""
    if types == ('object',):
        return _MISSING
    if _unwraps(value, types):
        value = value[0]
        if _has_type(value, types):
            return value
    for kind in types:
        if kind == 'string':
            if value is None:
                return ''
            if isinstance(value, (bool, int, float)):
                return to_string(value)
        elif kind == 'boolean':
            if value is None or value == 'false' or _is_number(value, 0):
                return False
            if value == 'true' or _is_number(value, 1):
                return True
        # A datetime's 'number' comes after 'string', which already takes
        # every value AJV would turn into a number (booleans and null).
    return _MISSING


def _is_number(value: Any, number: int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == number


def _article(words: str) -> str:
    return 'an' if words[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'


def _described(value: Any) -> str:
    """ajv-human-errors' humanizeTypeOf: 'null', else the JSON type with its article."""
    name = type_name(value)
    return name if name == 'null' else f'{_article(name)} {name}'
