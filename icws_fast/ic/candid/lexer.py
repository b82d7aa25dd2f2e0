"""Candid text split into tokens, shared by the type parser (:mod:`.parser`) and the value parser (:mod:`.values`).

One tokenizer serves both grammars, so a literal (a number with ``_`` separators, a quoted text with
``\\n``, ``\\XX`` and ``\\u{...}`` escapes, a comment) reads the same in a ``.did`` file and in an argument
value. Every failure raises :class:`~icws_fast.errors.CandidError` with the offset of the offending text.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple, NoReturn

from icws_fast.errors import CandidError

__all__ = ["Token", "TokenCursor", "integer", "tokenize"]

_TOKEN: Final = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
    # Signs, fractions and exponents only occur in values; the type parser accepts plain naturals.
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F_]*|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]+)?))
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<text>"(?:[^"\\]|\\.)*")
  | (?P<punct>->|[(){};:,=.])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPE: Final = re.compile(r"\\(u\{[0-9a-fA-F_]+\}|[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", '"': b'"', "'": b"'"}
_HEX_INTEGER: Final = re.compile(r"[+-]?0[xX][0-9a-fA-F]+")
_DECIMAL_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
#: Longest integer literal read (digits, without separators): far beyond any Candid value a person
#: types, and short of the cost of converting hostile megabyte-long digit strings.
_MAX_DIGITS: Final = 400


class Token(NamedTuple):
    kind: str  # "num" | "id" | "text" | "punct" | "eof"
    value: str  # as written (a text keeps its quotes)
    offset: int
    data: bytes = b""  # a text's bytes, escapes resolved (not necessarily UTF-8: ``blob "\ff"``)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, whitespace and comments dropped, ending with an ``eof`` token."""
    if not isinstance(text, str):
        raise CandidError("Candid source must be a str")
    tokens: list[Token] = []
    pos, end = 0, len(text)
    while pos < end:
        if text.startswith("/*", pos):
            pos = _skip_block_comment(text, pos)
            continue
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CandidError(f"unexpected character {text[pos]!r} at offset {pos}")
        kind = m.lastgroup
        assert kind is not None
        if kind == "text":
            tokens.append(Token("text", m.group(), pos, _unescape(m.group()[1:-1], pos)))
        elif kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", end))
    return tokens


def _skip_block_comment(text: str, pos: int) -> int:
    """The offset after the (possibly nested) block comment starting at ``pos``."""
    depth, i = 0, pos
    while i < len(text):
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise CandidError(f"unterminated comment at offset {pos}")


def _unescape(body: str, offset: int) -> bytes:
    """The bytes of a string literal body: ``\\XX`` escapes are raw bytes, ``\\u{...}`` UTF-8."""
    out = bytearray()
    last = 0
    for m in _ESCAPE.finditer(body):
        out += body[last : m.start()].encode("utf-8", "surrogatepass")
        esc = m.group(1)
        if esc.startswith("u{"):
            try:
                out += chr(int(esc[2:-1].replace("_", ""), 16)).encode("utf-8")
            except (ValueError, OverflowError):
                raise CandidError(f"bad unicode escape \\{esc} in string at offset {offset}") from None
        elif len(esc) == 2:
            out.append(int(esc, 16))
        elif esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc]
        elif esc == "u":
            raise CandidError(f"bad unicode escape in string at offset {offset}: write \\u{{hex digits}}")
        else:
            raise CandidError(f"bad escape \\{esc} in string at offset {offset}")
        last = m.end()
    out += body[last:].encode("utf-8", "surrogatepass")
    return bytes(out)


def integer(token: str) -> int | None:
    """The value of an integer literal (decimal or ``0x`` hex, optional sign and ``_``); None if not one."""
    digits = token.replace("_", "")
    if len(digits) > _MAX_DIGITS:
        return None
    if _HEX_INTEGER.fullmatch(digits):
        magnitude = int(digits.lstrip("+-")[2:], 16)
        return -magnitude if digits.startswith("-") else magnitude
    if _DECIMAL_INTEGER.fullmatch(digits):
        return int(digits)
    return None


class TokenCursor:
    """A position in a token list, with the lookahead and error helpers both parsers use."""

    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def at(self, value: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind in ("punct", "id") and tok.value == value

    def accept(self, value: str) -> bool:
        if self.at(value):
            self.i += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            self.fail(f"expected {value!r}")

    def fail(self, what: str) -> NoReturn:
        tok = self.peek()
        found = "end of input" if tok.kind == "eof" else repr(tok.value)
        raise CandidError(f"{what} at offset {tok.offset}, found {found}")

    def unread(self, tok: Token) -> None:
        """Step back over ``tok`` (just taken by :meth:`next`) so that errors point at it."""
        if tok.kind != "eof":
            self.i -= 1

    def end(self) -> None:
        if self.peek().kind != "eof":
            self.fail("expected end of input")

    def text(self, tok: Token) -> str:
        """A text token's string; its escapes must form UTF-8."""
        try:
            return tok.data.decode("utf-8")
        except UnicodeDecodeError:
            raise CandidError(f"string at offset {tok.offset} is not UTF-8") from None
