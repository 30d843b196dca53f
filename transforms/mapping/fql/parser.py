"""Segment's filter query language (FQL) for destination triggers, read and evaluated
the way Segment's `@segment/destination-subscriptions` package does it
(segmentio/action-destinations, packages/destination-subscriptions, on the lexer of
`@segment/fql-ts` 1.10), so that a trigger copied from a Segment destination selects
the same events here as there.

    condition = parse_fql('type = "track" and properties.plan = "pro"')
    matches(condition, event)      # Segment's validate(): does this call match
    generate_fql(condition)        # Segment's generateFql(): the FQL text again

A condition tree is plain dicts shaped as Segment's `Subscription`: a group
`{"type": "group", "operator": "and"|"or", "children": [...]}` whose children are groups
or conditions such as `{"type": "event-property", "name": "plan", "operator": "=",
"value": "pro"}` (types: event-type, event, name, userId, event-property, event-trait,
event-context; value-free operators: exists, not_exists, is_true, is_false).

Segment's reading has rules that look like accidents; they are kept, because a trigger
must select the same events here as in Segment:
- `=` and `!=` compare text only: `properties.n = "5"` does not match the number 5, and
  `!=` matches whatever is not that exact text (a missing field, a number).
- `<`, `<=`, `>`, `>=` and `= 5` / `!= 5` match numbers only, never numeric strings.
- `contains()` and `match()` match strings only; `match()` knows only a leading or a
  trailing `*` (ends_with / starts_with).
- One `and`/`or` word rules a whole level: `a and b or c` is `a or b or c` (the last word
  wins). Words the parser does not know are skipped, not refused.
- Parentheses do not nest: the first `)` closes the open `(`.
- `=` / `!=` against `null` are exists tests, except on `type` and `event`.
Segment returns `{"error": Error}` for an unreadable trigger; parse_fql raises FqlError.
The tokens come from lexer.py, which keeps the rules of Segment's lexer.
"""
import re
from collections import deque
from operator import eq, ge, gt, le, lt, ne
from typing import Any

from transforms.core.javascript import (UNDEFINED, format_number, is_truthy, to_double, to_number,
                                        to_string)
from transforms.mapping.fql.lexer import FqlError, Token, lex

Condition = dict[str, Any]


# Which event field each condition type reads.
_TOP_LEVEL_FIELDS = {'event-type': 'type', 'event': 'event', 'name': 'name', 'userId': 'userId'}
_PATH_FIELDS = {'event-property': 'properties', 'event-trait': 'traits', 'event-context': 'context'}
_FIELD_TYPES = {field: kind for kind, field in {**_TOP_LEVEL_FIELDS, **_PATH_FIELDS}.items()}

# Segment looks trigger words up in a plain JavaScript object, so the names every such
# object inherits count as fields too: they take an operator and a value and make no
# condition.
_INHERITED_NAMES = frozenset({
    'constructor', '__defineGetter__', '__defineSetter__', 'hasOwnProperty',
    '__lookupGetter__', '__lookupSetter__', 'isPrototypeOf', 'propertyIsEnumerable',
    'toString', 'valueOf', '__proto__', 'toLocaleString'})

_FIELD_WORDS = frozenset(_FIELD_TYPES) | _INHERITED_NAMES
_FUNCTIONS = ('contains', 'match')

# The value-free tests Segment's parser recognises, per condition type: none on type and
# event (`event = null` compares with the text "null"), `= true`/`= false` not on name.
_NULL_TESTS = {('!=', 'null'): 'exists', ('=', 'null'): 'not_exists'}
_BOOLEAN_TESTS = {('=', 'true'): 'is_true', ('=', 'false'): 'is_false'}
_VALUE_FREE_TESTS = {
    'event-type': {}, 'event': {}, 'name': _NULL_TESTS,
    'userId': {**_NULL_TESTS, **_BOOLEAN_TESTS},
    **{kind: {**_NULL_TESTS, **_BOOLEAN_TESTS} for kind in _PATH_FIELDS}}
_NUMBER_TESTS = {'=': 'number_equals', '!=': 'number_not_equals'}


# --- Parsing: Segment's parseFql ------------------------------------------------------

def parse_fql(text: str) -> Condition:
    """Segment's `parseFql`: the condition tree of an FQL trigger, always a group at the
    top. Raises FqlError where Segment returns `{error}`."""
    condition = _parse(deque(_join_paths(lex(text))))
    if condition is None:
        raise FqlError(f'no condition in {text!r}: a condition starts with type, event, name, '
                       f'userId, properties., traits., context., contains( or match(')
    if condition['type'] != 'group':
        return {'type': 'group', 'operator': 'and', 'children': [condition]}
    return condition


def _join_paths(tokens: list[Token]) -> list[Token]:
    """Merges `word . word` into one word, so `properties.a.b` is a single token."""
    joined: list[Token] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if (token.kind == 'dot' and joined and joined[-1].kind == 'ident'
                and following is not None and following.kind == 'ident'):
            previous = joined.pop()
            joined.append(Token('ident', f'{previous.text}.{following.text}', previous.position))
            index += 2
        else:
            joined.append(token)
            index += 1
    return joined


def _take(tokens: deque) -> Token | None:
    return tokens.popleft() if tokens else None


def _parse(tokens: deque) -> Condition | None:
    conditions = []
    operator = 'and'
    token = _take(tokens)
    while token is not None and token.kind != 'eos':
        condition = None
        if token.kind == 'ident' and token.text.split('.')[0] in _FIELD_WORDS:
            condition = _comparison(token, tokens)
        elif token.kind == 'ident' and token.text in _FUNCTIONS:
            condition = _function(token, tokens, negate=False)
        elif (token.kind == 'operator' and token.text == '!' and tokens
                and tokens[0].kind == 'ident' and tokens[0].text in _FUNCTIONS):
            condition = _function(_take(tokens), tokens, negate=True)
        elif token.kind == 'parenleft':
            condition = _group(token, tokens)
        elif token.kind == 'conditional':
            operator = token.text
        if condition is not None:
            conditions.append(condition)
        token = _take(tokens)
    if len(conditions) > 1:
        return {'type': 'group', 'operator': operator, 'children': conditions}
    return conditions[0] if conditions else None


def _comparison(field: Token, tokens: deque) -> Condition | None:
    operator = _take(tokens)
    if operator is None:
        raise FqlError(f'Operator token is missing after {field.text!r} '
                       f'at position {field.position}')
    value = _take(tokens)
    if value is None:
        raise FqlError(f'Value token is missing: {field.text!r} at position {field.position} '
                       f'has no operator and value after it')
    root = field.text.split('.')[0]
    kind = _FIELD_TYPES.get(root)
    if kind is None:  # an inherited name, see _INHERITED_NAMES
        return None
    head: Condition = {'type': kind}
    if kind in _PATH_FIELDS:
        head['name'] = field.text.removeprefix(root + '.')
    test = _VALUE_FREE_TESTS[kind].get((operator.text, value.text))
    if test is not None:
        return {**head, 'operator': test}
    if kind not in _PATH_FIELDS:
        return {**head, 'operator': operator.text, 'value': _js_string(_token_value(value))}
    if value.kind == 'number' and operator.text in _NUMBER_TESTS:
        return {**head, 'operator': _NUMBER_TESTS[operator.text], 'value': _token_value(value)}
    return {**head, 'operator': operator.text, 'value': _token_value(value)}


def _function(function: Token, tokens: deque, negate: bool) -> Condition | None:
    """`contains(field, "text")` or `match(field, "glob")`. Segment takes the
    punctuation tokens on trust, without looking at them."""
    _take(tokens)  # (
    field = _take(tokens)
    if field is None:
        raise FqlError(f'{function.text}() at position {function.position} '
                       f'is missing a 1st argument')
    _take(tokens)  # ,
    argument = _take(tokens)
    if argument is None:
        raise FqlError(f'{function.text}() at position {function.position} '
                       f'is missing a 2nd argument')
    _take(tokens)  # )
    head = _function_field(field.text)
    if head is None:  # `contains(type, "x")`: Segment makes no condition of it
        return None
    text = _js_string(_token_value(argument))
    prefix = 'not_' if negate else ''
    if function.text == 'contains':
        return {**head, 'operator': prefix + 'contains', 'value': text}
    if argument.text.endswith('*"'):
        return {**head, 'operator': prefix + 'starts_with', 'value': text[:-1]}
    return {**head, 'operator': prefix + 'ends_with', 'value': text[1:]}


def _function_field(word: str) -> Condition | None:
    if word in ('event', 'name', 'userId'):
        return {'type': word}
    for kind, root in _PATH_FIELDS.items():
        if word.startswith(root):
            return {'type': kind, 'name': word.removeprefix(root + '.')}
    return None


def _group(opening: Token, tokens: deque) -> Condition:
    inside: deque = deque()
    token = _take(tokens)
    while token is None or token.kind != 'parenright':
        if token is None:
            raise FqlError(f"'(' at position {opening.position} is not closed (in FQL the "
                           f"first ')' closes the open '(', parentheses do not nest)")
        inside.append(token)
        token = _take(tokens)
    inside.append(Token('eos', 'eos', token.position))
    condition = _parse(inside)
    if condition is None:
        # Segment keeps an empty slot here, which makes validate() throw when it gets there.
        raise FqlError(f'the parentheses at position {opening.position} hold no condition')
    return condition


def _token_value(token: Token) -> str | int | float | bool:
    if token.kind == 'string':  # Segment strips double quotes only: 'x' keeps its quotes
        return token.text.removeprefix('"').removesuffix('"')
    if token.kind == 'number':
        return _plain_number(to_number(token.text))
    if token.kind == 'ident' and token.text in ('true', 'false'):
        return token.text == 'true'
    return token.text


# --- Matching: Segment's validate -----------------------------------------------------

def matches(condition: Condition, event: Any) -> bool:
    """Segment's `validate`: whether `event` (a Segment call as parsed JSON) matches the
    condition tree. No event (None) matches nothing, nor does a failed parse `{"error"}`.
    Raises FqlError for a field path made only of dots and brackets, where Segment
    throws."""
    if is_truthy(condition.get('error', UNDEFINED)) or event is None:
        return False
    return _group_matches(condition, event)


def _group_matches(group: Condition, event: Any) -> bool:
    if group.get('operator') == 'and':
        return all(_condition_matches(child, event) for child in group['children'])
    if group.get('operator') == 'or':
        return any(_condition_matches(child, event) for child in group['children'])
    return False


def _condition_matches(condition: Condition, event: Any) -> bool:
    kind = condition.get('type')
    if kind == 'group':
        return _group_matches(condition, event)
    if kind in _TOP_LEVEL_FIELDS:
        actual = _js_member(event, _TOP_LEVEL_FIELDS[kind])
    elif kind in _PATH_FIELDS:
        actual = _js_path(_js_member(event, _PATH_FIELDS[kind]), condition.get('name', UNDEFINED))
    else:
        return False
    return _compare(actual, condition.get('operator'), condition.get('value', UNDEFINED))


_NUMBER_COMPARISONS = {'number_equals': eq, 'number_not_equals': ne,
                       '<': lt, '<=': le, '>': gt, '>=': ge}
_TEXT_TESTS = {
    'contains': lambda actual, text: text in actual,
    'not_contains': lambda actual, text: text not in actual,
    'starts_with': str.startswith,
    'not_starts_with': lambda actual, text: not actual.startswith(text),
    'ends_with': str.endswith,
    'not_ends_with': lambda actual, text: not actual.endswith(text)}


def _compare(actual: Any, operator: Any, expected: Any) -> bool:
    if operator == '=':
        return isinstance(actual, str) and actual == _js_string(expected)
    if operator == '!=':
        return not (isinstance(actual, str) and actual == _js_string(expected))
    if operator in _NUMBER_COMPARISONS:
        return _is_js_number(actual) and _NUMBER_COMPARISONS[operator](
            to_number(actual), to_number(expected))
    if operator in _TEXT_TESTS:
        return isinstance(actual, str) and _TEXT_TESTS[operator](actual, _js_string(expected))
    if operator == 'exists':
        return actual is not UNDEFINED and actual is not None
    if operator == 'not_exists':
        return actual is UNDEFINED or actual is None
    if operator == 'is_true':
        return actual is True
    if operator == 'is_false':
        return actual is False
    return False


_PATH_KEY = re.compile(r'[^[.\]]+')
_ARRAY_INDEX = re.compile(r'0|[1-9][0-9]*')


def _js_path(root: Any, path: Any) -> Any:
    """Segment's get(): `a.b[0].c` read step by step; a step from a falsy value (0, '',
    false, null) stays on that value, as JavaScript's `value && value[key]` does."""
    if not is_truthy(path):
        return UNDEFINED
    keys = _PATH_KEY.findall(path)
    if not keys:
        raise FqlError(f'the field path {path!r} names no field')
    value = root
    for key in keys:
        if is_truthy(value):
            value = _js_member(value, key)
    return value


def _js_member(value: Any, key: str) -> Any:
    """`value[key]` for JSON values. Strings and arrays have `length` and indices;
    JavaScript counts strings in UTF-16 code units."""
    if isinstance(value, dict):
        return value.get(key, UNDEFINED)
    if isinstance(value, str):
        value = _utf16_units(value)
    if isinstance(value, list):
        if key == 'length':
            return len(value)
        if _ARRAY_INDEX.fullmatch(key) and int(key) < len(value):
            return value[int(key)]
    return UNDEFINED


def _utf16_units(text: str) -> list[str]:
    encoded = text.encode('utf-16-le', 'surrogatepass')
    return [encoded[index:index + 2].decode('utf-16-le', 'surrogatepass')
            for index in range(0, len(encoded), 2)]


# --- Generating: Segment's generateFql ------------------------------------------------

def generate_fql(condition: Condition) -> str:
    """Segment's `generateFql`: the FQL text of a condition tree (a group). Raises
    FqlError for a failed parse `{"error": ...}` and for an unknown condition type."""
    error = condition.get('error', UNDEFINED)
    if is_truthy(error):
        raise FqlError(str(error))
    text = _group_fql(condition)
    # Segment unwraps a lone top-level group, judging by the parentheses in the whole text.
    if text.startswith('(') and text.endswith(')') and text.count('(') + text.count(')') == 2:
        return text[1:-1]
    return text


def _group_fql(group: Condition) -> str:
    parts = [f'({_group_fql(child)})' if child.get('type') == 'group' else _condition_fql(child)
             for child in group['children']]
    return f" {_js_string(group.get('operator', UNDEFINED))} ".join(parts)


_EXPRESSIONS = {
    'contains': 'contains({field}, {literal})', 'not_contains': '!contains({field}, {literal})',
    'exists': '{field} != null', 'not_exists': '{field} = null',
    'is_true': '{field} = true', 'is_false': '{field} = false',
    'starts_with': 'match({field}, "{text}*")', 'not_starts_with': '!match({field}, "{text}*")',
    'ends_with': 'match({field}, "*{text}")', 'not_ends_with': '!match({field}, "*{text}")',
    '<': '{field} < {number}', '>': '{field} > {number}',
    '<=': '{field} <= {number}', '>=': '{field} >= {number}',
    'number_equals': '{field} = {number}', 'number_not_equals': '{field} != {number}'}


def _condition_fql(condition: Condition) -> str:
    kind = condition.get('type')
    if kind in _TOP_LEVEL_FIELDS:
        field = _TOP_LEVEL_FIELDS[kind]
    elif kind in _PATH_FIELDS:
        field = f"{_PATH_FIELDS[kind]}.{_escape_path(condition.get('name', UNDEFINED))}"
    else:
        raise FqlError(f'Unknown condition type {kind!r}')
    operator = condition.get('operator', UNDEFINED)
    value = condition.get('value', UNDEFINED)
    template = _EXPRESSIONS.get(operator, '{field} {operator} {literal}')
    return template.format(field=field, operator=_js_string(operator), text=_js_string(value),
                           number=format_number(to_number(value)),
                           literal=_fql_literal(value))


def _escape_path(name: Any) -> str:
    """Backslash before anything but letters, digits, `_`, `-` and `.` (dots stay path
    separators): `properties.product\\ 1.price`."""
    if not isinstance(name, str):
        return _js_string(name)
    return re.sub(r'[^a-zA-Z0-9._-]', lambda found: '\\' + found.group(), name)


def _fql_literal(value: Any) -> str:
    """No escaping inside the quotes: Segment writes none."""
    if isinstance(value, (bool, int, float)):
        return _js_string(value)
    return f'"{_js_string(value)}"'


# --- JavaScript's values, as FQL uses them ---------------------------------------------

def _is_js_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _js_string(value: Any) -> str:
    """JavaScript's String(), numbers read as the doubles JavaScript holds."""
    return to_string(to_double(value) if _is_js_number(value) else value)


def _plain_number(number: float) -> int | float:
    """Whole numbers as int, so that a parsed `>= 100` reads as 100, not 100.0."""
    if number.is_integer() and abs(number) <= 2 ** 53:
        return int(number)
    return number
