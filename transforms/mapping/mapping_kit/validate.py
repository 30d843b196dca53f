"""Checks a Mapping Kit mapping before it runs, as Segment's validate.ts does.

A mapping mixes raw JSON values with directives: objects with one @-prefixed
key ({"@path": "$.traits.email"}). validate_mapping() refuses what Segment
refuses (an unknown directive, two directives in one object, a directive mixed
with raw keys, an argument of the wrong type, an @replace pattern or
replacement over 10 characters...) and reports every problem it finds at
once, each at its location in the mapping, e.g. "/email/@if/then".

The rules, including their gaps, are Segment's: arrays are not looked into,
and a directive's own arguments are checked only as far as Segment checks
them; transform() reports the rest when it runs.
"""
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from transforms.core.javascript import UNDEFINED, json_stringify, type_name, utf16_length

MAX_PATTERN_LENGTH = 10
MAX_REPLACEMENT_LENGTH = 10

Location = tuple[str, ...]
Validator = Callable[[Any, Location], None]
Field = tuple[str, Validator, bool]  # name, check, required


@dataclass(frozen=True)
class MappingIssue:
    """One problem in a mapping: where it is ("/a/@if/then", "/" for the root) and what it is."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location} {self.message}"


class MappingKitError(ValueError):
    """A mapping that Mapping Kit refuses, or that failed on a payload; `errors` lists every issue."""

    def __init__(self, errors: Sequence[MappingIssue]):
        self.errors = tuple(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


def pointer(location: Location) -> str:
    """The "/a/b" form of a location; "/" for the root."""
    return "/" + "/".join(location)


def issue(location: Location, message: str) -> MappingKitError:
    """A single-issue error, worded as Segment words its validation errors."""
    return MappingKitError([MappingIssue(pointer(location), message + ".")])


def validate_mapping(mapping: Any) -> None:
    """Raises MappingKitError, with every issue found, if Segment would refuse `mapping`."""
    validate_at(mapping, ())


def validate_at(mapping: Any, location: Location) -> None:
    """validate_mapping() for a mapping found at `location` inside a larger one."""
    kind = _kind(mapping)
    if kind == "directive":
        _validate_directive(mapping, location)
    elif kind == "object":
        _validate_object(mapping, location)
    # Every other JSON value is a raw value, arrays included: Segment does not look inside them.


def _kind(value: Any) -> str:
    if isinstance(value, dict) and any(key.startswith("@") for key in value):
        return "directive"
    return type_name(value)


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _described(value: Any) -> str:
    kind = _kind(value)
    return f"{_article(kind)} {kind}"


def _validate_directive(directive: dict, location: Location) -> None:
    keys = list(directive)
    names = [key for key in keys if key.startswith("@")]
    if len(names) > 1:
        raise issue(location, f"should only have one @-prefixed key but it has {len(names)} keys")
    if any(not key.startswith("@") and key != "_metadata" for key in keys):
        raise issue(location, f"should only have one @-prefixed key but it has {len(keys)} keys")
    validator = _DIRECTIVES.get(names[0])
    if validator is None:
        raise issue(location, f"has an invalid directive: {names[0]}")
    validator(directive[names[0]], location + (names[0],))


def _directive_or_raw(value: Any, location: Location) -> None:
    kind = _kind(value)
    if kind == "directive":
        _validate_directive(value, location)
    elif kind not in ("object", "array", "boolean", "string", "number", "null"):
        raise issue(location, f"should be a mapping directive or a JSON value but it is {_described(value)}")


def _directive_or_string(value: Any, location: Location) -> None:
    kind = _kind(value)
    if kind == "directive":
        _validate_directive(value, location)
    elif kind != "string":
        raise issue(location, f"should be a string or a mapping directive but it is {_described(value)}")


def _directive_or_object(value: Any, location: Location) -> None:
    kind = _kind(value)
    if kind == "directive":
        _validate_directive(value, location)
    elif kind == "object":
        _validate_object(value, location)
    else:
        raise issue(location, f"should be a object or a mapping directive but it is {_described(value)}")


def _string(value: Any, location: Location) -> None:
    if _kind(value) != "string":
        raise issue(location, f"should be a string but it is {_described(value)}")


def _string_of_length(minimum: int, maximum: int) -> Validator:
    def check(value: Any, location: Location) -> None:
        _string(value, location)
        if utf16_length(value) < minimum:
            raise issue(location, f"should be a string of length {minimum} or greater")
        if utf16_length(value) > maximum:
            raise issue(location, f"should be a string of length {maximum} or less")
    return check


def _one_of(*allowed: str) -> Validator:
    def check(value: Any, location: Location) -> None:
        _string(value, location)
        # Segment compares in lower case here, though the directives compare exactly.
        if value.lower() not in allowed:
            raise issue(location, f"should be one of {', '.join(allowed)} but it is {json_stringify(value)}")
    return check


def _boolean(value: Any, location: Location) -> None:
    if _kind(value) != "boolean":
        raise issue(location, f"should be a boolean but it is {_described(value)}")


def _array(value: Any, location: Location) -> None:
    if not isinstance(value, list):
        raise issue(location, f"should be an array but it is {_described(value)}")


def _validate_object(value: Any, location: Location) -> None:
    if _kind(value) != "object":
        raise issue(location, f"should be an object but it is {_described(value)}")
    errors: list[MappingIssue] = []
    for key, item in value.items():
        try:
            validate_at(item, location + (key,))
        except MappingKitError as error:
            errors.extend(error.errors)
    if errors:
        raise MappingKitError(errors)


def _object_with_fields(value: Any, location: Location, fields: Sequence[Field]) -> None:
    """An object of arguments: every member is validated as a mapping, then each named field."""
    _validate_object(value, location)
    errors: list[MappingIssue] = []
    for field, check, required in fields:
        try:
            if field in value:
                check(value[field], location + (field,))
            elif required:
                raise issue(location, f'should have field "{field}" but it doesn\'t')
        except MappingKitError as error:
            errors.extend(error.errors)
    if errors:
        raise MappingKitError(errors)


def _if(value: Any, location: Location) -> None:
    _object_with_fields(value, location, [
        ("exists", _directive_or_raw, False),
        ("then", _directive_or_raw, False),
        ("else", _directive_or_raw, False)])


def _case(value: Any, location: Location) -> None:
    _object_with_fields(value, location, [
        ("operator", _string, False),
        ("value", _directive_or_string, False)])


def _replace(value: Any, location: Location) -> None:
    _object_with_fields(value, location, [
        ("pattern", _string_of_length(1, MAX_PATTERN_LENGTH), True),
        ("replacement", _string_of_length(0, MAX_REPLACEMENT_LENGTH), False),
        ("value", _directive_or_string, True),
        ("ignorecase", _boolean, False),
        ("global", _boolean, False)])


def _array_path(value: Any, location: Location) -> None:
    _array(value, location)
    # Both items are reported at the directive's own location, as Segment does.
    _directive_or_string(value[0] if value else UNDEFINED, location)
    if len(value) > 1:
        validate_at(value[1], location)


def _json(value: Any, location: Location) -> None:
    _object_with_fields(value, location, [
        ("value", _directive_or_raw, True),
        ("mode", _one_of("encode", "decode"), True)])


def _flatten(value: Any, location: Location) -> None:
    _object_with_fields(value, location, [
        ("separator", _string, False),
        ("value", _directive_or_raw, True)])


def _merge(value: Any, location: Location) -> None:
    _object_with_fields(value, location, [
        ("direction", _one_of("left", "right"), False),
        ("objects", _array, True)])
    # Segment reports these at the root ("/"); the objects' own location is more use.
    for index, item in enumerate(value["objects"]):
        _directive_or_object(item, location + ("objects", str(index)))


def _transform(value: Any, location: Location) -> None:
    _object_with_fields(value, location, [
        ("apply", _directive_or_object, True),
        ("mapping", _directive_or_object, True)])


_DIRECTIVES: dict[str, Validator] = {
    "@if": _if,
    "@case": _case,
    "@replace": _replace,
    "@arrayPath": _array_path,
    "@path": _directive_or_string,
    "@json": _json,
    "@flatten": _flatten,
    "@merge": _merge,
    "@template": _directive_or_string,
    "@literal": _directive_or_raw,
    "@transform": _transform,
    "@excludeWhenNull": _directive_or_raw,
    "@liquid": _string,
}
