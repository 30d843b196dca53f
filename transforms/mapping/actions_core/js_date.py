"""Whether JavaScript's `new Date(text)` gives a date, as V8 (Node.js) decides.

Segment's `date-like` format (the check on a datetime field such as Loops'
createdAt) gives every string dayjs cannot read itself to `new Date(text)`,
so what it accepts is V8's date parser: an ES5 ISO date-time string first,
then a lenient "legacy" reading (month names, am/pm, zone names, words before
the first number ignored: `new Date("hello 1")` is 1 January 2001). This
module follows the decisions of V8's src/date/dateparser (its tokenizer, the
ES5 reading, the legacy loop and its day, time and zone composers) and the
Date constructor's range check; it computes no date, only whether there is one.

A date without a zone is local time in JavaScript; it is taken as UTC here,
which can change the answer only within a day of the ends of the Date range
(the years -271821 and 275760).
"""
from dataclasses import dataclass
from typing import Optional

# The largest time a Date holds, in milliseconds either side of 1970.
MAX_TIME_MS = 8.64e15
# V8 builds a number from its first nine digits and skips the others.
_MAX_SIGNIFICANT_DIGITS = 9
# JavaScript's white space, and the ASCII line ends; U+2028 and U+2029 are read as words.
_WHITESPACE = frozenset([*map(ord, '\t\n\v\f\r \u00a0\u1680\u202f\u205f\u3000\ufeff'),
                         *range(0x2000, 0x200b)])
_SYMBOLS = frozenset(map(ord, ':-+.)'))
# A zone offset in seconds must be a V8 small integer (31 bits and a sign on
# 64-bit Node.js); V8 adds it up in 32-bit unsigned arithmetic, wrapping around.
_SMI_MAX = 2 ** 31 - 1
_UINT32 = 2 ** 32

# V8's keyword table: a word's lower-cased first three letters (a shorter word
# is padded with nothing), what it is, and its value. Only month names may be
# longer than their three letters ("january", "janxyz").
_MONTH, _AM_PM, _ZONE, _TIME_SEPARATOR, _WORD = 'month', 'am_pm', 'zone', 'T', 'word'
_KEYWORDS = (
    [(name, _MONTH, number) for number, name in enumerate(
        ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'), 1)]
    + [('am', _AM_PM, 0), ('pm', _AM_PM, 12), ('ut', _ZONE, 0), ('utc', _ZONE, 0), ('z', _ZONE, 0),
       ('gmt', _ZONE, 0), ('cdt', _ZONE, -5), ('cst', _ZONE, -6), ('edt', _ZONE, -4),
       ('est', _ZONE, -5), ('mdt', _ZONE, -6), ('mst', _ZONE, -7), ('pdt', _ZONE, -7),
       ('pst', _ZONE, -8), ('t', _TIME_SEPARATOR, 0)])


@dataclass(frozen=True)
class _Token:
    kind: str            # 'number', 'symbol', 'space', 'unknown', 'end', 'invalid' or a keyword kind
    value: object = None  # the number, the symbol character, or the keyword's value
    length: int = 0      # characters read (UTF-16 code units, as in JavaScript)

    def is_number(self, length: Optional[int] = None) -> bool:
        return self.kind == 'number' and (length is None or self.length == length)

    def is_symbol(self, symbol: str) -> bool:
        return self.kind == 'symbol' and self.value == symbol

    @property
    def is_sign(self) -> bool:
        return self.kind == 'symbol' and self.value in '+-'

    @property
    def sign(self) -> int:
        return 1 if self.value == '+' else -1

    @property
    def is_keyword(self) -> bool:
        return self.kind in (_MONTH, _AM_PM, _ZONE, _TIME_SEPARATOR, _WORD)

    @property
    def is_z(self) -> bool:
        return self.kind == _ZONE and self.length == 1 and self.value == 0


_END = _Token('end')
_INVALID = _Token('invalid')


def is_valid_date(text: str) -> bool:
    """Whether `new Date(text)` is a valid date in Node.js (not `Invalid Date`)."""
    units = _utf16_units(text)
    parsed = _parse(_Scanner(_tokens(units)))
    return parsed is not None and _in_range(*parsed)


def _utf16_units(text: str) -> list[int]:
    encoded = text.encode('utf-16-le', 'surrogatepass')
    units = [int.from_bytes(encoded[index:index + 2], 'little') for index in range(0, len(encoded), 2)]
    # V8 reads a NUL character as the end of the string.
    return units[:units.index(0)] if 0 in units else units


def _tokens(units: list[int]) -> list[_Token]:
    """The whole string as V8's DateStringTokenizer reads it, ending with `end`."""
    tokens = []
    position, count = 0, len(units)
    while position < count:
        unit = units[position]
        start = position
        if 0x30 <= unit <= 0x39:
            position = _after_digits(units, position)
            digits = units[start:position]
            # Leading zeros do not count among the significant digits.
            significant = ''.join(map(chr, digits)).lstrip('0')[:_MAX_SIGNIFICANT_DIGITS]
            tokens.append(_Token('number', int(significant or '0'), len(digits)))
        elif unit in _SYMBOLS:
            tokens.append(_Token('symbol', chr(unit), 1))
            position += 1
        elif unit in _WHITESPACE:
            tokens.append(_Token('space', None, 1))
            position += 1
        elif unit >= 0x41:
            # A "word" is any run of characters from 'A' up, non-ASCII ones included.
            while position < count and units[position] >= 0x41 and units[position] not in _WHITESPACE:
                position += 1
            tokens.append(_keyword(units[start:position]))
        elif unit == 0x28:
            position = _after_parentheses(units, position)
            tokens.append(_Token('unknown', None, 1))
        else:
            tokens.append(_Token('unknown', None, 1))
            position += 1
    tokens.append(_END)
    return tokens


def _after_digits(units: list[int], position: int) -> int:
    while position < len(units) and 0x30 <= units[position] <= 0x39:
        position += 1
    return position


def _keyword(word: list[int]) -> _Token:
    # V8 lower-cases by setting bit 0x20, on any character.
    prefix = ''.join(chr(unit | 0x20) for unit in word[:3])
    for name, kind, value in _KEYWORDS:
        if prefix == name and (len(word) <= 3 or kind == _MONTH):
            return _Token(kind, value, len(word))
    return _Token(_WORD, 0, len(word))


def _after_parentheses(units: list[int], position: int) -> int:
    """Skips a parenthesised part, nested ones included, or the rest of the string."""
    balance = 0
    while True:
        unit = units[position]
        if unit == 0x29:
            balance -= 1
        elif unit == 0x28:
            balance += 1
        position += 1
        if balance <= 0 or position >= len(units):
            return position


class _Scanner:
    """V8's one-token lookahead over the tokens."""

    def __init__(self, tokens: list[_Token]):
        self._tokens = tokens
        self._index = 0

    def peek(self) -> _Token:
        return self._tokens[min(self._index, len(self._tokens) - 1)]

    def next(self) -> _Token:
        token = self.peek()
        self._index += 1
        return token

    def skip(self, symbol: str) -> bool:
        if self.peek().is_symbol(symbol):
            self._index += 1
            return True
        return False


def _is_month(value: int) -> bool:
    return 1 <= value <= 12


def _is_day(value: int) -> bool:
    return 1 <= value <= 31


def _is_hour(value: int) -> bool:
    return 0 <= value <= 23


def _is_minute(value: int) -> bool:
    return 0 <= value <= 59


class _Day:
    def __init__(self):
        self.parts: list[int] = []
        self.named_month: Optional[int] = None
        self.iso = False

    def add(self, value: int) -> bool:
        if len(self.parts) == 3:
            return False
        self.parts.append(value)
        return True

    def write(self) -> Optional[tuple[int, int, int]]:
        """(year, month 1-12, day) or None."""
        if not self.parts:
            return None
        first, second, third = self.parts + [1] * (3 - len(self.parts))
        year = 0
        if self.named_month is None:
            # V8 pads the parts to three before it looks, so a lone number is a month.
            if self.iso or not _is_day(first):
                year, month, day = first, second, third
            else:
                month, day, year = first, second, third
        else:
            month = self.named_month
            year, day = (first, second) if not _is_day(first) else (second, first)
        if not self.iso:
            if 0 <= year <= 49:
                year += 2000
            elif 50 <= year <= 99:
                year += 1900
        if not _is_month(month) or not _is_day(day):
            return None
        return year, month, day


class _Time:
    def __init__(self):
        self.parts: list[int] = []
        self.hour_offset: Optional[int] = None

    @property
    def empty(self) -> bool:
        return not self.parts

    def expecting(self, value: int) -> bool:
        index = len(self.parts)
        return ((index == 1 and _is_minute(value)) or (index == 2 and _is_minute(value))
                or (index == 3 and 0 <= value <= 999))

    def add(self, value: int) -> bool:
        if len(self.parts) == 4:
            return False
        self.parts.append(value)
        return True

    def add_final(self, value: int) -> bool:
        if not self.add(value):
            return False
        self.parts += [0] * (4 - len(self.parts))
        return True

    def write(self) -> Optional[tuple[int, int, int, int]]:
        hour, minute, second, millisecond = self.parts + [0] * (4 - len(self.parts))
        if self.hour_offset is not None:
            if not 0 <= hour <= 12:
                return None
            hour = hour % 12 + self.hour_offset
        if not (_is_hour(hour) and _is_minute(minute) and _is_minute(second) and 0 <= millisecond <= 999):
            # Midnight at the end of a day, 24:00:00.000, is allowed.
            if (hour, minute, second, millisecond) != (24, 0, 0, 0):
                return None
        return hour, minute, second, millisecond


class _Zone:
    def __init__(self):
        self.sign: Optional[int] = None
        self.hour: Optional[int] = None
        self.minute: Optional[int] = None

    def set(self, offset_hours: int) -> None:
        self.sign = -1 if offset_hours < 0 else 1
        self.hour = abs(offset_hours)
        self.minute = 0

    @property
    def empty(self) -> bool:
        return self.hour is None

    @property
    def is_utc(self) -> bool:
        return self.hour == 0 and self.minute == 0

    def expecting(self, value: int) -> bool:
        return self.hour is not None and self.minute is None and _is_minute(value)

    def write(self) -> tuple[bool, Optional[int]]:
        """(valid, offset in seconds or None for local time)."""
        if self.sign is None:
            return True, None
        seconds = ((self.hour or 0) * 3600 + (self.minute or 0) * 60) % _UINT32
        if seconds > _SMI_MAX:
            return False, None
        return True, self.sign * seconds


def _read_milliseconds(token: _Token) -> int:
    """The first three digits of a fraction, from its value and its digit count."""
    number, length = token.value, token.length
    if length < 3:
        return number * (100 if length == 1 else 10)
    return number // 10 ** (min(length, _MAX_SIGNIFICANT_DIGITS) - 3)


def _parse_es5(scanner: _Scanner, day: _Day, time: _Time, zone: _Zone) -> _Token:
    """V8's ParseES5DateTime: `end` when the whole string is an ES5 date-time,
    `invalid` when it cannot be a date, else the token the legacy reading goes on from."""
    if scanner.peek().is_sign:
        sign_token = scanner.next()
        if not scanner.peek().is_number(6):
            return sign_token
        year = scanner.next().value
        if sign_token.sign < 0 and year == 0:
            return sign_token
        day.add(sign_token.sign * year)
    elif scanner.peek().is_number(4):
        day.add(scanner.next().value)
    else:
        return scanner.next()
    if scanner.skip('-'):
        if not (scanner.peek().is_number(2) and _is_month(scanner.peek().value)):
            return scanner.next()
        day.add(scanner.next().value)
        if scanner.skip('-'):
            if not (scanner.peek().is_number(2) and _is_day(scanner.peek().value)):
                return scanner.next()
            day.add(scanner.next().value)
    if scanner.peek().kind != _TIME_SEPARATOR:
        if scanner.peek().kind != 'end':
            return scanner.next()
    elif not _parse_es5_time(scanner, time, zone):
        return _INVALID
    if zone.empty and time.empty:
        zone.set(0)
    day.iso = True
    return _END


def _parse_es5_time(scanner: _Scanner, time: _Time, zone: _Zone) -> bool:
    """`T`HH:mm[:ss[.sss]][Z|(+|-)hh:mm] to the end of the string."""
    scanner.next()
    if not (scanner.peek().is_number(2) and 0 <= scanner.peek().value <= 24):
        return False
    hour_is_24 = scanner.peek().value == 24
    time.add(scanner.next().value)
    if not scanner.skip(':'):
        return False
    if not (scanner.peek().is_number(2) and _is_minute(scanner.peek().value)
            and not (hour_is_24 and scanner.peek().value > 0)):
        return False
    time.add(scanner.next().value)
    if scanner.skip(':'):
        if not (scanner.peek().is_number(2) and _is_minute(scanner.peek().value)
                and not (hour_is_24 and scanner.peek().value > 0)):
            return False
        time.add(scanner.next().value)
        if scanner.skip('.'):
            if not scanner.peek().is_number() or (hour_is_24 and scanner.peek().value > 0):
                return False
            time.add(_read_milliseconds(scanner.next()))
    if scanner.peek().is_z:
        scanner.next()
        zone.set(0)
    elif scanner.peek().is_sign:
        zone.sign = scanner.next().sign
        if scanner.peek().is_number(4):
            hour, minute = divmod(scanner.next().value, 100)
            if not (_is_hour(hour) and _is_minute(minute)):
                return False
            zone.hour, zone.minute = hour, minute
        else:
            if not (scanner.peek().is_number(2) and _is_hour(scanner.peek().value)):
                return False
            zone.hour = scanner.next().value
            if not scanner.skip(':'):
                return False
            if not (scanner.peek().is_number(2) and _is_minute(scanner.peek().value)):
                return False
            zone.minute = scanner.next().value
    return scanner.peek().kind == 'end'


def _parse(scanner: _Scanner) -> Optional[tuple]:
    """V8's DateParser::Parse: (year, month, day, hour, minute, second, ms,
    offset seconds or None), or None where V8 gives no date."""
    day, time, zone = _Day(), _Time(), _Zone()
    token = _parse_es5(scanner, day, time, zone)
    if token.kind == 'invalid':
        return None
    has_read_number = bool(day.parts)
    while token.kind != 'end':
        if token.is_number():
            has_read_number = True
            if not _legacy_number(token.value, scanner, day, time, zone):
                return None
        elif token.is_keyword:
            if token.kind == _AM_PM and not time.empty:
                time.hour_offset = token.value
            elif token.kind == _MONTH:
                day.named_month = token.value
                scanner.skip('-')
            elif token.kind == _ZONE and has_read_number:
                zone.set(token.value)
            elif has_read_number or scanner.peek().is_number():
                # A word after the first number is garbage; one before it must not touch it.
                return None
        elif token.is_sign and (zone.is_utc or not time.empty):
            has_read_number = True
            if not _legacy_offset(token.sign, scanner, zone):
                return None
        elif (token.is_sign or token.is_symbol(')')) and has_read_number:
            return None
        token = scanner.next()
    date, clock = day.write(), time.write()
    zone_valid, offset = zone.write()
    if date is None or clock is None or not zone_valid:
        return None
    return (*date, *clock, offset)


def _legacy_number(number: int, scanner: _Scanner, day: _Day, time: _Time, zone: _Zone) -> bool:
    if scanner.skip(':'):
        if scanner.skip(':'):
            if not time.empty:
                return False
            time.add(number)
            time.add(0)
        else:
            if not time.add(number):
                return False
            if scanner.peek().is_symbol('.'):
                scanner.next()
    # V8 consumes the '.' even when the time does not take the number.
    elif scanner.skip('.') and time.expecting(number):
        time.add(number)
        if not scanner.peek().is_number():
            return False
        time.add_final(_read_milliseconds(scanner.next()))
    elif zone.expecting(number):
        zone.minute = number
    elif time.expecting(number):
        time.add_final(number)
        following = scanner.peek()
        if not (following.kind in ('end', 'space') or following.is_z or following.is_sign):
            return False
    else:
        if not day.add(number):
            return False
        scanner.skip('-')
    return True


def _legacy_offset(sign: int, scanner: _Scanner, zone: _Zone) -> bool:
    """A UTC offset after UTC or a time: +hh, +hhmm or +hh:."""
    zone.sign = sign
    number, length = 0, 0
    if scanner.peek().is_number():
        token = scanner.next()
        number, length = token.value, token.length
    if scanner.peek().is_symbol(':'):
        zone.hour, zone.minute = number, None
    elif length in (1, 2):
        zone.hour, zone.minute = number, 0
    elif length in (3, 4):
        zone.hour, zone.minute = divmod(number, 100)
    else:
        return False
    return True


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (day may pass the month's end)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _in_range(year: int, month: int, day: int, hour: int, minute: int, second: int, millisecond: int,
              offset: Optional[int]) -> bool:
    milliseconds = (_days_from_civil(year, month, day) * 86_400_000
                    + ((hour * 60 + minute) * 60 + second) * 1000 + millisecond)
    if offset is not None:
        milliseconds -= offset * 1000
    return abs(milliseconds) <= MAX_TIME_MS
