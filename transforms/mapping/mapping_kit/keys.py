"""Which payload fields a mapping reads, as Segment's getFieldValueKeys() (value-keys.ts) tells.

Segment uses it to learn which fields a mapping needs (for enrichments): the
path of each @path, the placeholders of each @template, the variables of each
@liquid, found through every directive that holds another. It is Segment's
list, with its blind spots: @merge and @transform are not looked into, and
@literal and @excludeWhenNull give nothing.
"""
import re
from typing import Any, Optional

from transforms.core.javascript import is_truthy, property_order
from transforms.mapping.mapping_kit.liquid import liquid_variable_paths

_DIRECTIVE_NAMES = frozenset((
    "@if", "@path", "@template", "@literal", "@arrayPath", "@case", "@replace", "@json",
    "@flatten", "@merge", "@transform", "@excludeWhenNull", "@liquid"))
_TEMPLATE_KEY = re.compile(r"{{(.*?)}}")


def field_value_keys(value: Any) -> list[str]:
    """The payload paths `value` (a mapping or a part of one) reads, in mapping order."""
    if _is_directive(value):
        keys = _directive_keys(value)
        return [key for key in keys if is_truthy(key)] if keys is not None else []
    if isinstance(value, (dict, list)):
        return [key for item in _members(value) for key in field_value_keys(item)]
    return []


def template_keys(template: str) -> list[str]:
    """What stands between each {{ and }} of a template, untrimmed."""
    return _TEMPLATE_KEY.findall(template)


def _is_directive(value: Any) -> bool:
    # Unlike Mapping Kit itself, Segment's key finder accepts other keys beside a directive.
    return isinstance(value, dict) and any(key in _DIRECTIVE_NAMES for key in value)


def _members(value: Any) -> list[Any]:
    return [value[key] for key in property_order(value)] if isinstance(value, dict) else list(value)


def _raw_keys(value: Any) -> list[str]:
    if _is_directive(value):
        return field_value_keys(value)
    if isinstance(value, (dict, list)):
        return [key for item in _members(value) for key in field_value_keys(item)]
    return []


def _arguments(directive: dict, name: str, field: str) -> Optional[dict]:
    """The directive's argument object, if it is an object holding `field`."""
    arguments = directive.get(name)
    return arguments if isinstance(arguments, dict) and field in arguments else None


def _directive_keys(directive: dict) -> Optional[list[str]]:
    """Keys of the first directive kind that matches, in Segment's order; None if none does."""
    if isinstance(directive.get("@arrayPath"), list):
        return [key for item in directive["@arrayPath"] for key in _raw_keys(item)]
    if (case := _arguments(directive, "@case", "operator")) is not None:
        return _raw_keys(case.get("value"))
    if _arguments(directive, "@if", "exists") is not None or _arguments(directive, "@if", "blank") is not None:
        return [key for field in ("blank", "exists", "then", "else")
                for key in _raw_keys(directive["@if"].get(field))]
    if "@literal" in directive:
        return []
    if "@path" in directive:
        # Segment would also list a nested directive object here; only path strings are keys.
        path = directive["@path"]
        return [path] if isinstance(path, str) else []
    if (replace := _arguments(directive, "@replace", "pattern")) is not None:
        return _raw_keys(replace.get("value"))
    if "@template" in directive:
        template = directive["@template"]
        return template_keys(template) if isinstance(template, str) else []
    for name in ("@json", "@flatten"):
        if (arguments := _arguments(directive, name, "value")) is not None:
            return _raw_keys(arguments["value"])
    if "@excludeWhenNull" in directive:
        return []
    if isinstance(directive.get("@liquid"), str):
        return liquid_variable_paths(directive["@liquid"])
    return None
