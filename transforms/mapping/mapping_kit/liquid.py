"""Segment's @liquid directive, on python-liquid.

Segment renders @liquid with liquidjs and these restrictions (liquid-directive.ts):
templates of at most 1000 characters; the tags case, for, include, layout,
render and tablerow refused; twenty array filters (sort, map, reverse...)
refused; a memory and a time budget. Here the same tags and filters are
refused with Segment's messages, and python-liquid's namespace and output
limits stand in for the memory budget.

Where liquidjs and python-liquid differ, this module follows liquidjs for
what decides the rendered text: values print as JavaScript prints them (1.0
as "1", objects as "[object Object]", arrays as their items run together),
string filters read their input that way too, join and escape are
liquidjs's, unknown filters are ignored, filters only python-liquid has are
unknown here, and liquidjs's json, jsonify, sha256, hmac_sha256 and
to_integer exist. Its other own filters (date_to_string, slugify, push...)
raise rather than being ignored, so that a template never passes a value
through unchanged where Segment would transform it. Filters both have keep
python-liquid's behaviour: integer divided_by floors (Ruby Liquid; liquidjs
divides), size, first and last count an object's members. There is no render
time limit (liquidjs has 500 ms); without loops a template of 1000
characters renders quickly.
"""
import functools
import hashlib
import hmac
import re
from typing import Any, Callable, TextIO

from liquid import BoundTemplate, Environment, Undefined
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.exceptions import FilterError, LiquidError, LiquidSyntaxError
from liquid.stream import TokenStream
from liquid.tag import Tag

from transforms.core.javascript import (UNDEFINED, json_stringify, remove_undefined, to_string,
                                        utf16_length)

MAX_TEMPLATE_LENGTH = 1000
DISABLED_TAGS = ("case", "for", "include", "layout", "render", "tablerow")
DISABLED_FILTERS = (
    "array_to_sentence_string", "concat", "find", "find_exp", "find_index", "find_index_exp",
    "group_by", "group_by_exp", "has", "has_exp", "map", "newline_to_br", "reject", "reject_exp",
    "reverse", "sort", "sort_natural", "uniq", "where_exp", "type")
# python-liquid filters liquidjs does not have: liquidjs would ignore them, as unknown.
_NOT_IN_LIQUIDJS = ("base64_url_safe_decode", "base64_url_safe_encode", "escapejs", "safe", "squish")
_LIQUIDJS_ONLY_UNSUPPORTED = (
    "cgi_escape", "date_to_long_string", "date_to_rfc822", "date_to_string", "date_to_xmlschema",
    "inspect", "normalize_whitespace", "number_of_words", "pop", "push", "raw", "sample", "shift",
    "slugify", "unshift", "uri_escape", "xml_escape")
_JS_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class LiquidTemplateError(ValueError):
    """A @liquid template that is refused or fails to render; the message is Segment's where it has one."""


def liquid_string(value: Any) -> str:
    """A value as liquidjs prints it."""
    if value is None or value is UNDEFINED:
        return ""
    if isinstance(value, list):
        return "".join(liquid_string(item) for item in value)
    if isinstance(value, (bool, int, float, str, dict)):
        return to_string(value)
    # python-liquid's own values (its Undefined, ranges...) print as it prints them.
    return str(value)


class _JsOutputNode(OutputNode):
    def render_to_output(self, context: Any, buffer: TextIO) -> int:
        return buffer.write(liquid_string(self.expression.evaluate(context)))


class _JsEchoNode(EchoNode):
    def render_to_output(self, context: Any, buffer: TextIO) -> int:
        return buffer.write(liquid_string(self.expression.evaluate(context)))


class _JsOutput(Output):
    node_class = _JsOutputNode


class _JsEcho(EchoTag):
    node_class = _JsEchoNode


def _disabled_tag(tag_name: str) -> type[Tag]:
    class DisabledTag(Tag):
        name = tag_name
        block = False

        def parse(self, stream: TokenStream) -> Any:
            raise LiquidSyntaxError(f'tag "{tag_name}" is disabled', token=stream.current)

    return DisabledTag


def _refusing_filter(message: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise FilterError(message, token=None)
    return refuse


def _with_js_input(string_filter: Callable[..., Any]) -> Callable[..., Any]:
    """A python-liquid string filter that reads its input as liquidjs prints it (1.0 as "1")."""
    @functools.wraps(string_filter)
    def read_as_liquidjs(value: Any, *args: Any, **kwargs: Any) -> Any:
        return string_filter(liquid_string(value), *args, **kwargs)
    return read_as_liquidjs


def _to_integer(value: Any) -> Any:
    """liquidjs's to_integer, which is JavaScript's Number(value) (hexadecimal and "Infinity" aside)."""
    if value is None:
        return 0
    if isinstance(value, Undefined):
        return float("nan")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    text = liquid_string(value).strip()
    if text == "":
        return 0
    if _JS_NUMBER.fullmatch(text):
        number = float(text)
        return int(number) if number.is_integer() and abs(number) < 2 ** 53 else number
    return float("nan")


def _join(value: Any, separator: Any = None) -> str:
    """liquidjs's join: JavaScript's Array.join, so 1.0 joins as "1" and null as ""."""
    if value is None or isinstance(value, Undefined):
        items = []
    else:
        items = value if isinstance(value, list) else [value]
    glue = " " if separator is None or isinstance(separator, Undefined) else liquid_string(separator)
    return glue.join("" if item is None else to_string(item) for item in items)


_HTML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"}
_HTML_UNESCAPES = {escaped: character for character, escaped in _HTML_ESCAPES.items()}


def _escape(value: Any) -> str:
    """liquidjs's escape, which writes quotes as &#34; and &#39;."""
    return re.sub("[&<>\"']", lambda match: _HTML_ESCAPES[match.group(0)], liquid_string(value))


def _escape_once(value: Any) -> str:
    text = liquid_string(value)
    return _escape(re.sub("&(amp|lt|gt|#34|#39);", lambda match: _HTML_UNESCAPES[match.group(0)], text))


def _sha256(value: Any) -> str:
    return hashlib.sha256(liquid_string(value).encode("utf-8")).hexdigest()


def _hmac_sha256(value: Any, key: Any) -> str:
    return hmac.new(liquid_string(key).encode("utf-8"), liquid_string(value).encode("utf-8"),
                    hashlib.sha256).hexdigest()


def _json(value: Any, *_space: Any) -> str:
    text = json_stringify(value)
    return "" if text is UNDEFINED else text


class _SegmentLiquid(Environment):
    # Stand-ins for liquidjs's memoryLimit of 1e8.
    local_namespace_limit = 100_000_000
    output_stream_limit = 100_000_000

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        for filter_name, function in list(self.filters.items()):
            if function.__module__ == "liquid.builtin.filters.string":
                self.filters[filter_name] = _with_js_input(function)
        self.add_tag(_JsOutput)
        self.add_tag(_JsEcho)
        for tag_name in DISABLED_TAGS:
            self.add_tag(_disabled_tag(tag_name))
        for filter_name in _NOT_IN_LIQUIDJS:
            del self.filters[filter_name]
        for filter_name in DISABLED_FILTERS:
            self.add_filter(filter_name, _refusing_filter(f'filter "{filter_name}" is disabled'))
        for filter_name in _LIQUIDJS_ONLY_UNSUPPORTED:
            self.add_filter(filter_name, _refusing_filter(f'filter "{filter_name}" is not supported'))
        self.add_filter("join", _join)
        self.add_filter("escape", _escape)
        self.add_filter("escape_once", _escape_once)
        self.add_filter("json", _json)
        self.add_filter("jsonify", _json)
        self.add_filter("sha256", _sha256)
        self.add_filter("hmac_sha256", _hmac_sha256)
        self.add_filter("to_integer", _to_integer)


# liquidjs ignores filters it does not know (strictFilters is off by default).
_ENVIRONMENT = _SegmentLiquid(strict_filters=False)


@functools.lru_cache(maxsize=512)
def _parse(template: str) -> BoundTemplate:
    try:
        return _ENVIRONMENT.from_string(template)
    except LiquidError as error:
        raise LiquidTemplateError(error.message) from error


def _checked(template: Any) -> str:
    if not isinstance(template, str):
        raise LiquidTemplateError("liquid template value must be a string")
    if utf16_length(template) > MAX_TEMPLATE_LENGTH:
        raise LiquidTemplateError(f"liquid template values are limited to {MAX_TEMPLATE_LENGTH} characters")
    return template


def evaluate_liquid(template: Any, payload: Any) -> str:
    """Renders a @liquid template against a payload; raises LiquidTemplateError."""
    if _checked(template) == "":
        return ""
    data = remove_undefined(payload)
    try:
        return _parse(template).render(data if isinstance(data, dict) else {})
    except LiquidError as error:
        raise LiquidTemplateError(error.message) from error


def liquid_variable_paths(template: str) -> list[str]:
    """The variable paths a template reads ("properties.test"), first use first.

    Segment's getLiquidKeys() (liquidjs fullVariablesSync); used by getFieldValueKeys().
    """
    variables = [variable for uses in _parse(template).analyze(include_partials=False).variables.values()
                 for variable in uses]
    paths = (str(variable) for variable in sorted(variables, key=lambda variable: variable.span.index))
    return list(dict.fromkeys(paths))
