"""Segment's Mapping Kit: the directive language of Segment Actions field mappings, in Python.

A port of segmentio/action-destinations' packages/core/src/mapping-kit. A
mapping is JSON whose raw values are copied to the output and whose
directives, objects with one @-prefixed key, take values from the payload:

    transform({"email": {"@path": "$.traits.email"}, "source": "segment"}, event)
    -> {"email": "peter@example.com", "source": "segment"}

Every directive of Segment's README is here: @if, @path, @template, @literal,
@arrayPath, @case, @replace, @merge, @transform, @flatten, @json, @liquid and
@excludeWhenNull. A value that is missing (JavaScript's `undefined`, not
null) removes its key from the output. The behaviour, quirks included, is
Segment's: see tests/data/segment/mapping_kit_*.json for its own cases.
"""
import re
from typing import Any, Callable, Optional

from transforms.core.javascript import (UNDEFINED, is_truthy, json_parse, json_stringify,
                                        loosely_equals_empty_string, property_order,
                                        remove_undefined, to_string, type_name, utf16_length)
from transforms.mapping.mapping_kit.liquid import LiquidTemplateError, evaluate_liquid
from transforms.mapping.mapping_kit.paths import flatten_object, get_path, render_template
from transforms.mapping.mapping_kit.validate import (MAX_PATTERN_LENGTH, MAX_REPLACEMENT_LENGTH,
                                                     Location, MappingIssue, MappingKitError,
                                                     pointer, validate_at, validate_mapping)

__all__ = ["MappingIssue", "MappingKitError", "prepare_mapping", "transform", "transform_batch",
           "transform_validated", "validate_mapping"]

# Segment's hook for a destination-wide directive: the other fields become its "mapping".
ROOT_DIRECTIVE_KEY = "__segment_internal_directive"

Directive = Callable[[Any, Any, Location], Any]


def transform(mapping: Any, payload: Optional[dict] = None) -> Any:
    """Segment's transform(mapping, data): the mapping resolved against the payload.

    The mapping is validated first (MappingKitError lists every issue); a
    directive that fails on this payload raises MappingKitError too. The result
    is an object for an object mapping; a mapping that is a single directive
    gives that directive's value, None where JavaScript would give undefined.
    """
    result = _transform(mapping, {} if payload is None else payload, ())
    return None if result is UNDEFINED else result


def transform_batch(mapping: Any, payloads: list) -> list:
    """Segment's transformBatch(): one mapping, validated once, over many payloads."""
    if not isinstance(payloads, list):
        raise _failure((), f"data must be an array, got {type_name(payloads)}")
    to_process = _mapping_to_process(mapping)
    validate_mapping(to_process)
    return remove_undefined([_resolve(to_process, payload, ()) for payload in payloads])


def prepare_mapping(mapping: Any) -> dict:
    """The mapping as transform() runs it, validated as transform() validates it.

    Raises MappingKitError. Give the result to transform_validated(), which
    then skips the validation that transform() repeats on every call.
    """
    to_process = _mapping_to_process(mapping)
    validate_mapping(to_process)
    return to_process


def transform_validated(prepared: dict, payload: dict) -> Any:
    """transform() of a mapping that prepare_mapping() returned, without validating it again.

    For a mapping applied to many payloads one at a time (every event of a
    stream): validating is close to half of transform()'s time on a typical
    field mapping.
    """
    if not isinstance(payload, dict):
        raise _failure((), f"data must be an object, got {type_name(payload)}")
    result = remove_undefined(_resolve(prepared, payload, ()))
    return None if result is UNDEFINED else result


def _transform(mapping: Any, payload: Any, location: Location) -> Any:
    if not isinstance(payload, dict):
        raise _failure(location, f"data must be an object, got {type_name(payload)}")
    to_process = _mapping_to_process(mapping)
    validate_at(to_process, location)
    return remove_undefined(_resolve(to_process, payload, location))


def _failure(location: Location, message: str) -> MappingKitError:
    return MappingKitError([MappingIssue(pointer(location), message)])


def _spread(mapping: Any) -> dict:
    """JavaScript's {...mapping}: Segment copies the mapping this way, whatever its type."""
    if mapping is None:
        # Segment fails here too, on Object.keys(null).
        raise _failure((), "the mapping is null")
    if isinstance(mapping, dict):
        return dict(mapping)
    if isinstance(mapping, (list, str)):
        return {str(index): item for index, item in enumerate(mapping)}
    return {}


def _mapping_to_process(mapping: Any) -> dict:
    to_process = _spread(mapping)
    if ROOT_DIRECTIVE_KEY not in to_process:
        return to_process
    root = to_process.pop(ROOT_DIRECTIVE_KEY)
    if not isinstance(root, dict) or len(root) > 1:
        raise _failure((ROOT_DIRECTIVE_KEY,), "The root mapping must only have a single directive object")
    name, options = next(iter(root.items()), (None, None))
    if not isinstance(options, dict):
        raise _failure((ROOT_DIRECTIVE_KEY,), "The root directive must be an object")
    return {name: {**options, "mapping": to_process}}


def _is_directive(value: dict) -> bool:
    keys = list(value)
    return (any(key.startswith("@") for key in keys)
            and all(key.startswith("@") or key == "_metadata" for key in keys))


def _resolve(mapping: Any, payload: Any, location: Location) -> Any:
    if isinstance(mapping, dict):
        if _is_directive(mapping):
            name = next(key for key in mapping if key.startswith("@"))
            directive = _DIRECTIVES.get(name)
            if directive is None:
                # Only reachable inside arrays, which validation does not look into.
                raise _failure(location, f"{name} is not a valid directive, got undefined")
            return directive(mapping[name], payload, location + (name,))
        # In JavaScript's key order, so that the output serializes as Segment's does.
        return {key: _resolve(mapping[key], payload, location + (key,)) for key in property_order(mapping)}
    if isinstance(mapping, list):
        return [_resolve(item, payload, location + (str(index),)) for index, item in enumerate(mapping)]
    return mapping


def _argument(options: Any, name: str, location: Location, payload: Any) -> Any:
    """An argument of a directive, resolved against the payload."""
    return _resolve(options.get(name, UNDEFINED), payload, location + (name,))


def _if(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, dict):
        raise _failure(at, '@if requires an object with an "exists" key')
    exists, blank = options.get("exists", UNDEFINED), options.get("blank", UNDEFINED)
    if not is_truthy(exists) and not is_truthy(blank):
        raise _failure(at, '@if requires an "exists" key or a "blank" key')
    if exists is not UNDEFINED:
        value = _argument(options, "exists", at, payload)
        condition = value is not UNDEFINED and value is not None
    else:
        value = _argument(options, "blank", at, payload)
        condition = value is not UNDEFINED and value is not None and not loosely_equals_empty_string(value)
    if condition and options.get("then", UNDEFINED) is not UNDEFINED:
        return _argument(options, "then", at, payload)
    # Segment tests "else" for truthiness, so an else of 0, false, "" or null gives nothing.
    if not condition and is_truthy(options.get("else", UNDEFINED)):
        return _argument(options, "else", at, payload)
    return UNDEFINED


def _case(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, dict):
        raise _failure(at, '@case requires an object with a "operator" key')
    operator = options.get("operator", UNDEFINED)
    if not is_truthy(operator):
        raise _failure(at, '@case requires a "operator" key')
    if not is_truthy(options.get("value", UNDEFINED)):
        return UNDEFINED
    value = _argument(options, "value", at, payload)
    if not isinstance(value, str):
        return value
    if operator == "lower":
        return value.lower()
    if operator == "upper":
        return value.upper()
    raise _failure(at, 'operator key should have a value of "lower" or "upper"')


def _replace_literally(text: str, pattern: str, replacement: str, replace_all: bool, ignore_case: bool,
                       at: Location) -> str:
    if utf16_length(pattern) > MAX_PATTERN_LENGTH:
        raise _failure(at, f'@replace requires a "pattern" less than {MAX_PATTERN_LENGTH} characters')
    if utf16_length(replacement) > MAX_REPLACEMENT_LENGTH:
        raise _failure(at, f'@replace requires a "replacement" less than {MAX_REPLACEMENT_LENGTH} characters')

    def replacement_for(match: re.Match) -> str:
        # JavaScript's String.replace reads $$, $& and $` $' in the replacement string.
        specials = {"$$": "$", "$&": match.group(0), "$`": text[:match.start()], "$'": text[match.end():]}
        return re.sub(r"\$[$&`']", lambda special: specials[special.group(0)], replacement)

    regex = re.compile(re.escape(pattern), re.IGNORECASE if ignore_case else 0)
    return regex.sub(replacement_for, text, count=0 if replace_all else 1)


def _replace(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, dict):
        raise _failure(at, '@replace requires an object with a "pattern" key')
    pattern = options.get("pattern", UNDEFINED)
    if not is_truthy(pattern):
        raise _failure(at, '@replace requires a "pattern" key')
    replacement = _or_default(options.get("replacement", UNDEFINED), "")
    pattern2 = options.get("pattern2", UNDEFINED)
    replacement2 = _or_default(options.get("replacement2", UNDEFINED), "")
    ignore_case = _or_default(options.get("ignorecase", UNDEFINED), False)
    replace_all = _or_default(options.get("global", UNDEFINED), True)
    if not is_truthy(options.get("value", UNDEFINED)):
        return UNDEFINED
    value = _argument(options, "value", at, payload)
    if isinstance(value, (bool, int, float)):
        value = to_string(value)
    if not (isinstance(value, str) and isinstance(pattern, str) and isinstance(replacement, str)
            and isinstance(ignore_case, bool) and isinstance(replace_all, bool)):
        return ""
    replaced = _replace_literally(value, pattern, replacement, replace_all, ignore_case, at)
    if is_truthy(pattern2) and isinstance(pattern2, str) and isinstance(replacement2, str):
        replaced = _replace_literally(replaced, pattern2, replacement2, replace_all, ignore_case, at)
    return replaced


def _or_default(value: Any, default: Any) -> Any:
    """JavaScript's `value ?? default`."""
    return default if value is None or value is UNDEFINED else value


def _array_path(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, list):
        raise _failure(at, f"@arrayPath expected array, got {type_name(options)}")
    path = options[0] if options else UNDEFINED
    shape = options[1] if len(options) > 1 else UNDEFINED
    if isinstance(path, str):
        root = get_path(payload, path.replace("$.", "", 1))
    else:
        root = _resolve(path, payload, at + ("0",))
    if isinstance(root, (dict, list)) and isinstance(shape, dict) and shape:
        items = root if isinstance(root, list) else [root]
        return [_resolve(shape, item, at + ("1",)) for item in items]
    return root


def _string_argument(name: str, options: Any, payload: Any, at: Location) -> str:
    value = _resolve(options, payload, at)
    if not isinstance(value, str):
        raise _failure(at, f"{name}: expected string, got {type_name(value)}")
    return value


def _path(options: Any, payload: Any, at: Location) -> Any:
    return get_path(payload, _string_argument("@path", options, payload, at).replace("$.", "", 1))


def _template(options: Any, payload: Any, at: Location) -> Any:
    return render_template(_string_argument("@template", options, payload, at), payload)


def _literal(options: Any, payload: Any, at: Location) -> Any:
    # Segment resolves the value, so directives inside a @literal still run.
    return _resolve(options, payload, at)


def _flatten(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, dict):
        raise _failure(at, '@flatten requires an object with a "separator" key')
    if not is_truthy(options.get("separator", UNDEFINED)):
        raise _failure(at, '@flatten requires a "separator" key')
    separator = _argument(options, "separator", at, payload)
    if not isinstance(separator, str):
        raise _failure(at, "@flatten requires a string separator")
    value = _argument(options, "value", at, payload)
    return flatten_object(value, "", separator, is_truthy(options.get("omitArrays", UNDEFINED)))


def _json(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, dict):
        raise _failure(at, '@json requires an object with a "value" key')
    if not is_truthy(options.get("mode", UNDEFINED)):
        raise _failure(at, '@json requires a "mode" key')
    if not is_truthy(options.get("value", UNDEFINED)):
        raise _failure(at, '@json requires a "value" key')
    value = _argument(options, "value", at, payload)
    if options["mode"] == "encode":
        return json_stringify(value)
    if options["mode"] != "decode":
        return UNDEFINED
    if isinstance(value, str):
        try:
            return json_parse(value)
        except ValueError:
            return value
    return value


def _assign(target: dict, source: Any) -> None:
    """JavaScript's Object.assign(target, source) for a JSON value."""
    if isinstance(source, dict):
        target.update(source)
    elif isinstance(source, (list, str)):
        target.update((str(index), item) for index, item in enumerate(source))


def _merge(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, dict):
        raise _failure(at, '@merge requires an object with an "objects" key and a "direction" key')
    if not is_truthy(options.get("direction", UNDEFINED)):
        raise _failure(at, '@merge requires a "direction" key')
    direction = _argument(options, "direction", at, payload)
    objects = options.get("objects", UNDEFINED)
    if not is_truthy(objects):
        raise _failure(at, '@merge requires a "objects" key')
    if not isinstance(objects, list):
        raise _failure(at, f"@merge: expected opts.array, got {_typeof(objects)}")
    resolved = [_resolve(item, payload, at + ("objects", str(index))) for index, item in enumerate(objects)]
    if direction == "left":
        resolved.reverse()
    merged: dict = {}
    for item in resolved:
        _assign(merged, item)
    return merged


def _typeof(value: Any) -> str:
    """JavaScript's typeof for a JSON value."""
    name = type_name(value)
    return "object" if name in ("null", "array") else name


def _transform_directive(options: Any, payload: Any, at: Location) -> Any:
    if not isinstance(options, dict):
        raise _failure(at, '@transform requires an object with an "apply" key and a "mapping" key')
    if not is_truthy(options.get("mapping", UNDEFINED)):
        raise _failure(at, '@transform requires a "mapping" key')
    if not is_truthy(options.get("apply", UNDEFINED)):
        raise _failure(at, '@transform requires a "apply" key')
    if not isinstance(options["apply"], dict):
        raise _failure(at, '@transform "apply" key should be an object')
    applied = _transform(options["apply"], payload, at + ("apply",))
    return _resolve(options["mapping"], applied, at + ("mapping",))


def _clean_nulls(value: Any) -> Any:
    """Members that are null become undefined, in nested objects too (not inside arrays)."""
    if not isinstance(value, dict):
        return value
    return {key: UNDEFINED if item is None else _clean_nulls(item) for key, item in value.items()}


def _exclude_when_null(options: Any, payload: Any, at: Location) -> Any:
    value = _resolve(options, payload, at)
    return UNDEFINED if value is None else _clean_nulls(value)


def _liquid(options: Any, payload: Any, at: Location) -> Any:
    try:
        return evaluate_liquid(options, payload)
    except LiquidTemplateError as error:
        raise _failure(at, str(error)) from error


_DIRECTIVES: dict[str, Directive] = {
    "@if": _if,
    "@case": _case,
    "@replace": _replace,
    "@arrayPath": _array_path,
    "@path": _path,
    "@template": _template,
    "@literal": _literal,
    "@flatten": _flatten,
    "@json": _json,
    "@merge": _merge,
    "@transform": _transform_directive,
    "@excludeWhenNull": _exclude_when_null,
    "@liquid": _liquid,
}
