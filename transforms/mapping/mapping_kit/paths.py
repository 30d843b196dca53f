"""Reading values out of a payload the way Segment's Mapping Kit does.

Three helpers of segmentio/action-destinations' packages/core: get() (the path
lookup behind @path, @arrayPath and @template), render() (the {{a.b}}
placeholders of @template) and flattenObject() (behind @flatten). A value that
is not there is UNDEFINED, never None: null is a value a payload can hold.
"""
import functools
import re
from typing import Any, Union

from transforms.core.javascript import (UNDEFINED, is_truthy, property_order, to_string, type_name,
                                        utf16_length)

# Splits "a.b[0]['c d']" into its keys. A bracket only separates when it holds
# a number or a quoted name, so a key like "[txt] non" stays whole.
_PATH_SEPARATOR = re.compile(r"""\[(?=["'0-9])|\.|(?<=["'0-9])\]+""")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_TRIPLE_PLACEHOLDER = re.compile(r"\{\{\{([^}]+)\}\}\}")
_DOUBLE_PLACEHOLDER = re.compile(r"\{\{([^}]+)\}\}")


@functools.lru_cache(maxsize=4096)
def path_keys(path: str) -> tuple[str, ...]:
    """The keys a dotted/bracketed path walks through, quotes removed.
    (Cached: a mapping reads the same few paths of every call.)"""
    return tuple(re.sub("['\"]", "", chunk) for chunk in _PATH_SEPARATOR.split(path) if chunk)


def property_of(value: Any, key: str) -> Any:
    """JavaScript's `value[key]` for a JSON value: a member, an item, a character or a length."""
    if isinstance(value, dict):
        return value.get(key, UNDEFINED)
    if isinstance(value, (list, str)):
        if key == "length":
            return utf16_length(value) if isinstance(value, str) else len(value)
        if _ARRAY_INDEX.fullmatch(key) and int(key) < len(value):
            return value[int(key)]
    return UNDEFINED


def get_path(data: Any, path: Union[str, list[str], None]) -> Any:
    """Segment's get(data, path): the value at a path, or UNDEFINED.

    '' and '.' are the data itself. Like JavaScript's `a && a[key]`, the walk
    stops at the first value that is falsy and returns it, so the path 'a.b'
    of {"a": 0} is 0 and of {"a": null} is null.
    """
    if path is None or path is UNDEFINED:
        return UNDEFINED
    if path in ("", "."):
        return data
    keys = path if isinstance(path, list) else path_keys(path)
    value = data
    for key in keys:
        if not is_truthy(value):
            return value
        value = property_of(value, key)
    return value


def render_template(template: str, data: Any) -> str:
    """Segment's render(): replaces {{path}} and {{{path}}} with the values at those paths.

    Nothing is HTML-escaped; a missing or null value becomes ''.
    """
    if not isinstance(template, str):
        raise TypeError(
            f'Invalid template! Template should be a "string" but {type_name(template)} was given.')

    def value_of(match: re.Match) -> str:
        value = get_path(data, match.group(1).strip())
        return "" if value is None or value is UNDEFINED else to_string(value)

    return _DOUBLE_PLACEHOLDER.sub(value_of, _TRIPLE_PLACEHOLDER.sub(value_of, template))


def flatten_object(value: Any, prefix: str = "", separator: str = ".",
                   omit_arrays: bool = False) -> dict[str, Any]:
    """Segment's flattenObject(): nested keys joined by separator, arrays by index.

    With omit_arrays, arrays stay whole values. Anything that is not an object
    (or array) is a leaf: {prefix: value}.
    """
    if isinstance(value, dict):
        entries = ((key, value[key]) for key in property_order(value))
    elif isinstance(value, list) and not omit_arrays:
        entries = ((str(index), item) for index, item in enumerate(value))
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in entries:
        flat.update(flatten_object(item, f"{prefix}{separator}{key}" if prefix else key,
                                   separator, omit_arrays))
    return flat
