"""JavaScript's value rules, for the ports of Segment's TypeScript that must decide as it does.

Segment's filter language (transforms/mapping/fql), its Mapping Kit
(transforms/mapping/mapping_kit), its action checks (mapping/actions_core) and
its reading of a call's `integrations` (transforms/segment/integrations.py)
run on Node, and several of their rules are plain JavaScript: which values are
truthy, how a value becomes a string or a number, what JSON.stringify writes,
and that `undefined` (a missing value) is not `null`. This module states those
rules once, for the values a JSON payload holds in Python (dict, list, str,
int, float, bool, None) plus UNDEFINED, the stand-in for `undefined`.

Numbers: JavaScript has only doubles. format_number and to_string keep an
int's every digit (a payload holds it exactly, and rounding it would only
lose data); a port that must compare or print as JavaScript does converts
first with to_double.
"""
import json
import math
import re
from decimal import Decimal
from typing import Any


class _Undefined:
    """JavaScript's `undefined`: a value that is missing, as opposed to null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Any = _Undefined()


def type_name(value: Any) -> str:
    """The type name Segment's realTypeOf() gives a value ('object', 'array', 'null'...)."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    # Not a JSON value (a tuple, a datetime...): named so that validation can refuse it.
    return type(value).__name__.lower()


def is_truthy(value: Any) -> bool:
    """JavaScript truthiness: empty lists and dicts are truthy, 0, NaN and '' are not."""
    if value is UNDEFINED or value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def utf16_length(text: str) -> int:
    """A string's JavaScript `.length`, which counts UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def format_number(number: float) -> str:
    """A number as JavaScript's String(number) writes it (1.0 -> '1', 1e-07 -> '1e-7').

    Integers keep every digit: JavaScript would round those beyond 2**53, but a
    Python payload holds them exactly and rounding them would only lose data.
    """
    if isinstance(number, int):
        return str(number)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    # repr() gives the shortest digits that round-trip, as JavaScript does.
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    count = len(digits)
    point = count + exponent  # the number is 0.<digits> * 10**point
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        mantissa = digits if count == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"
    return sign + text


def to_double(number: int | float) -> float:
    """A number as JavaScript holds it: a double (an int beyond the doubles
    is Infinity, with its sign)."""
    try:
        return float(number)
    except OverflowError:
        return math.copysign(math.inf, number)


_WHITESPACE = ('\t\n\v\f\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff'
               + ''.join(chr(code) for code in range(0x2000, 0x200b)))
_DECIMAL = re.compile(r'[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)')
_RADIX = re.compile(r'0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)')


def to_number(value: Any) -> float:
    """JavaScript's Number(value) for JSON values (undefined, objects and
    text that is not a number are NaN; null and blank text are 0)."""
    if value is None:
        return 0.0
    if isinstance(value, (bool, int, float)):
        return to_double(value)
    if not isinstance(value, str):
        return math.nan
    text = value.strip(_WHITESPACE)
    if text == '':
        return 0.0
    if _DECIMAL.fullmatch(text):
        return float(text)
    if _RADIX.fullmatch(text):
        return to_double(int(text[2:], {'x': 16, 'o': 8, 'b': 2}[text[1].lower()]))
    return math.nan


def to_string(value: Any) -> str:
    """JavaScript's String(value)."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if item is None or item is UNDEFINED else to_string(item)
                        for item in value)
    return "[object Object]"


def loosely_equals_empty_string(value: Any) -> bool:
    """JavaScript's `value == ''` for a value that is neither null nor undefined.

    Segment's @if "blank" test uses it, so 0, false, [] and [''] count as blank.
    """
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, (str, list)):
        return to_string(value) == ""
    return False


def json_stringify(value: Any) -> Any:
    """JSON.stringify(value): compact, unicode kept, undefined members left out.

    Returns UNDEFINED for UNDEFINED, as JSON.stringify returns undefined.
    """
    if value is UNDEFINED:
        return UNDEFINED
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        items = ("null" if item is UNDEFINED else json_stringify(item) for item in value)
        return "[" + ",".join(items) + "]"
    if isinstance(value, dict):
        members = (f"{json.dumps(key, ensure_ascii=False)}:{json_stringify(value[key])}"
                   for key in property_order(value) if value[key] is not UNDEFINED)
        return "{" + ",".join(members) + "}"
    raise TypeError(f"cannot encode a {type_name(value)} as JSON")


def property_order(obj: dict) -> list[str]:
    """The order JavaScript lists an object's keys in: array-index keys ("0", "7")
    first, ascending, then the others as they were added."""
    indexes = sorted((key for key in obj if _is_array_index(key)), key=int)
    return indexes + [key for key in obj if not _is_array_index(key)]


def _is_array_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and int(key) < 2 ** 32 - 1


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_parse(text: str) -> Any:
    """JSON.parse(text); raises ValueError where JavaScript throws a SyntaxError."""
    return json.loads(text, parse_constant=_refuse_constant)


def remove_undefined(value: Any) -> Any:
    """Segment's removeUndefined(): object members that are undefined are dropped.

    JavaScript keeps `undefined` items inside arrays, which JSON then writes as
    null; None is the closest Python value, so that is what they become here.
    """
    if isinstance(value, list):
        return [None if item is UNDEFINED else remove_undefined(item) for item in value]
    if isinstance(value, dict):
        return {key: remove_undefined(item) for key, item in value.items() if item is not UNDEFINED}
    return value
