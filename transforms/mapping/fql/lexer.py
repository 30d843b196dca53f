"""The tokens Segment's FQL lexer (`@segment/fql-ts` 1.10, the lexer of Segment's
`@segment/destination-subscriptions`) makes of a trigger, with its rules kept: a keyword
or operator counts only when a space, `,`, `]`, `)` or the end follows it (`<=5` is `<`
then `=`, `orders` is a word), strings have no escapes, a backslash escapes one character
of a word. fql.py parses these tokens.
"""
from dataclasses import dataclass


class FqlError(ValueError):
    """An FQL trigger that Segment could not read either (the message says where)."""


@dataclass(frozen=True)
class Token:
    kind: str      # the token types of @segment/fql-ts: ident, operator, string, ...
    text: str      # the token's value there: strings keep their quotes
    position: int  # where it starts in the trigger, for error messages


def lex(text: str) -> list[Token]:
    """The tokens of `text`, ending with an `eos` token. Raises FqlError where
    fql-ts fails (Segment then has no tokens and no condition)."""
    return _Lexer(text).tokens()


_PUNCTUATION = {'.': 'dot', '[': 'brackleft', ']': 'brackright', ',': 'comma',
                '(': 'parenleft', ')': 'parenright'}
# Words made by their first letter: `a` + `nd` is the conditional `and`, when a
# terminator follows.
_KEYWORDS = {'a': ('nd', 'conditional'), 'o': ('r', 'conditional'), 'n': ('ull', 'null')}


def _is_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _is_digit(char: str) -> bool:
    return len(char) == 1 and '0' <= char <= '9'


def _is_ident_char(char: str) -> bool:
    return _is_letter(char) or _is_digit(char) or char in ('_', '-', '\\')


def _is_terminator(char: str) -> bool:
    """'' is the end of the trigger. Only these three whitespace characters count."""
    return char in ('', ' ', '\t', '\n', ',', ']', ')')


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def tokens(self) -> list[Token]:
        tokens = []
        while True:
            start = self.pos
            char = self._take()
            if char == '':
                tokens.append(Token('eos', 'eos', start))
                return tokens
            if char not in (' ', '\t', '\n'):
                tokens.append(self._token(char, start))

    def _peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ''

    def _take(self) -> str:
        char = self._peek()
        self.pos += len(char)
        return char

    def _token(self, char: str, start: int) -> Token:
        if char == '!' and (_is_letter(self._peek()) or self._peek() == '('):
            return Token('operator', '!', start)
        if _is_letter(char) or char in ('!', '=', '<', '>', '\\', '_'):
            return self._word_or_operator(char, start)
        if _is_digit(char) or char in ('+', '-'):
            return self._number(char, start)
        if char in ('"', "'"):
            return self._string(char, start)
        if char in _PUNCTUATION:
            return Token(_PUNCTUATION[char], char, start)
        raise FqlError(f'invalid character {char!r} at position {start}')

    def _word_or_operator(self, char: str, start: int) -> Token:
        if char == '=':
            return Token('operator', '=', start)
        if char == '!':
            if self._accept('='):
                return Token('operator', '!=', start)
            raise FqlError(f"'!' at position {start} is neither '!=' and a space nor '!' "
                           f"before contains( or match(")
        if char in ('<', '>'):
            return Token('operator', char + '=' if self._accept('=') else char, start)
        if char in _KEYWORDS and self._accept(_KEYWORDS[char][0]):
            return Token(_KEYWORDS[char][1], char + _KEYWORDS[char][0], start)
        return self._ident(char, start)

    def _accept(self, rest: str) -> bool:
        """Takes `rest` if it comes next and a terminator follows it (so `<=5` is `<`
        then `=5`, and `orders` is no `or`)."""
        if self.text.startswith(rest, self.pos) and _is_terminator(self._peek(len(rest))):
            self.pos += len(rest)
            return True
        ahead = self.text[self.pos:]
        if len(ahead) < len(rest) and not any(_is_terminator(char) for char in ahead):
            # fql-ts reads on to the end of the trigger here and does not step back, so a
            # trailing `an` or `nul` reads as `a` or `n`.
            self.pos = len(self.text)
        return False

    def _ident(self, char: str, start: int) -> Token:
        chars = []
        while True:
            if char == '\\':  # escapes any one character: `properties.first\ name`
                if self._peek() == '':
                    raise FqlError(f"'\\' at position {self.pos - 1} escapes nothing")
                char = self._take()
            chars.append(char)
            if not _is_ident_char(self._peek()):
                break
            char = self._take()
        word = ''.join(chars)
        following = self._peek()
        if not (_is_terminator(following) or following in ('.', '(', '=', '!')):
            raise FqlError(f'unexpected {following!r} after {word!r} at position {self.pos}')
        return Token('ident', word, start)

    def _number(self, char: str, start: int) -> Token:
        text = char
        while _is_digit(self._peek()) or self._peek() == '.':
            text += self._take()
            if text.endswith('.') and _is_terminator(self._peek()):
                raise FqlError(f'number {text!r} at position {start} ends with a decimal point')
            if text.count('.') > 1:
                raise FqlError(f'number {text!r} at position {start} has two decimal points')
        return Token('number', text, start)

    def _string(self, quote: str, start: int) -> Token:
        end = self.text.find(quote, self.pos)  # no escapes inside strings
        if end < 0:
            raise FqlError(f'the string opened at position {start} is not closed')
        body = self.text[self.pos:end]
        self.pos = end
        # fql-ts takes the closing quote only when a terminator follows it; otherwise that
        # quote opens the next string too: `"a""b"` is "a", "" and "b".
        if _is_terminator(self._peek(1)):
            self.pos += 1
        return Token('string', quote + body + quote, start)
