"""The string formats Segment checks on an action's fields, as its validator does.

Segment validates a payload with AJV and ajv-formats (full mode) plus two
formats of its own (packages/core/src/schema-validation.ts):
- `email`: ajv-formats' full email pattern, ASCII letters in either case;
- `date-like` (every datetime field): a numeric string is read as Unix
  seconds; any other string as dayjs reads it: its own pattern first, then
  JavaScript's `new Date(text)` (js_date.py);
- `text`: anything.
"""
import re
from typing import Callable

from transforms.core.javascript import format_number
from transforms.mapping.actions_core.js_date import MAX_TIME_MS, is_valid_date

# ajv-formats 2.1.1 fullFormats.email. JavaScript's /i without /u folds ASCII
# letters only, hence re.ASCII; fullmatch stands for its ^...$.
_EMAIL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
                    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?",
                    re.IGNORECASE | re.ASCII)

# JavaScript's \s, which dayjs' pattern uses.
_JS_SPACE = '\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff'
# dayjs 1.11 REGEX_PARSE; every string it matches makes a valid date
# (new Date(year, month, ...) carries out-of-range parts over).
_DAYJS = re.compile(r'([0-9]{4})[-/]?([0-9]{1,2})?[-/]?([0-9]{0,2})[Tt' + _JS_SPACE + r']*'
                    r'([0-9]{1,2})?:?([0-9]{1,2})?:?([0-9]{1,2})?[.:]?([0-9]+)?')
# What JavaScript's String(number) can write.
_JS_NUMBER = re.compile(r'-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:e[+-][0-9]+)?')


def is_email(text: str) -> bool:
    return _EMAIL.fullmatch(text) is not None


def is_date_like(text: str) -> bool:
    """Segment's `date-like` check of a string."""
    if text in ('NaN', 'Infinity', '-Infinity'):
        # String(Number(text)) gives the text back, and dayjs.unix() of it is no date.
        return False
    if _JS_NUMBER.fullmatch(text) and format_number(float(text)) == text:
        return abs(float(text) * 1000) <= MAX_TIME_MS
    # dayjs skips its own pattern for a string ending in 'Z', leaving it to new Date().
    if not text.endswith(('Z', 'z')) and _DAYJS.fullmatch(text):
        return True
    return is_valid_date(text)


FORMAT_CHECKS: dict[str, Callable[[str], bool]] = {
    'email': is_email,
    'date-like': is_date_like,
    'text': lambda text: True,
}
