"""Candid values written as text — ``(50 : nat64, opt "a", record { x = 1 })`` — typed by the expected types.

Enough of the textual value syntax for canister init arguments given on a command line: numbers
(with ``_`` separators, hex, signs and decimals for floats), ``true``/``false``, ``null``, text
(with ``\\n``, ``\\xx`` and ``\\u{...}`` escapes), ``blob "..."``, ``principal "..."``, ``opt``,
``vec { ... }``, ``record { ... }`` (fields by name or number; positional ones for tuples) and
``variant { ... }``; annotations ``(v : type)`` are accepted and ignored. The result feeds
:func:`icws_fast.ic.candid.encode`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from icws_fast.errors import CandidError, InvalidPrincipal
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<text>"(?:[^"\\]|\\.)*")
      | (?P<number>[+-]?(?:0x[0-9a-fA-F_]+|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?))
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[(){};=:,])
    )""",
    re.VERBOSE,
)
_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_INT_RANGES: Final = {
    "nat8": (0, 1 << 8),
    "nat16": (0, 1 << 16),
    "nat32": (0, 1 << 32),
    "nat64": (0, 1 << 64),
    "int8": (-(1 << 7), 1 << 7),
    "int16": (-(1 << 15), 1 << 15),
    "int32": (-(1 << 31), 1 << 31),
    "int64": (-(1 << 63), 1 << 63),
}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            raise CandidError(f"cannot read Candid value text at {text[pos : pos + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _text_bytes(literal: str) -> bytes:
    """The bytes of a quoted Candid text literal (escapes resolved)."""
    out = bytearray()
    body = literal[1:-1]
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt].encode()
            i += 2
        elif nxt == "u" and body[i + 2 : i + 3] == "{":
            end = body.find("}", i)
            try:
                if end < 0:
                    raise ValueError("unterminated")
                out += chr(int(body[i + 3 : end].replace("_", ""), 16)).encode()
            except (ValueError, OverflowError):
                raise CandidError(f"bad unicode escape in Candid text {literal}") from None
            i = end + 1
        else:
            try:
                out.append(int(body[i + 1 : i + 3], 16))
            except ValueError:
                raise CandidError(f"bad escape {body[i : i + 3]!r} in Candid text {literal}") from None
            i += 3
    return bytes(out)


def _text(literal: str) -> str:
    """A quoted Candid text literal as a string (its escapes must form UTF-8)."""
    try:
        return _text_bytes(literal).decode()
    except UnicodeDecodeError:
        raise CandidError(f"Candid text {literal} is not UTF-8") from None


#: Deepest nesting of parentheses around one value.
_MAX_PARENS: Final = 100


class _Reader:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.parens = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise CandidError("Candid value text ends too early")
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        _, got = self.next()
        if got != value:
            raise CandidError(f"expected {value!r} in Candid value text, got {got!r}")

    def accept(self, value: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == value and token[0] != "text":
            self.pos += 1
            return True
        return False

    def skip_annotation(self) -> None:
        """Skip ``: type`` up to the closing parenthesis of ``(value : type)``."""
        depth = 0
        while True:
            token = self.peek()
            if token is None or (depth == 0 and token[1] in (")", ",")):
                return
            depth += {"(": 1, "{": 1, ")": -1, "}": -1}.get(token[1], 0)
            self.pos += 1

    def value(self, t: candid.Type) -> Any:
        t = _resolve(t)
        if self.accept("("):
            self.parens += 1
            if self.parens > _MAX_PARENS:
                raise CandidError("Candid value text nests parentheses too deeply")
            inner = self.value(t)
            self.parens -= 1
            if self.accept(":"):
                self.skip_annotation()
            self.expect(")")
            return inner
        kind, token = self.next()
        if isinstance(t, candid.PrimType):
            return self.primitive(t, kind, token)
        if isinstance(t, candid.OptType):
            if token == "null":
                return None
            if token != "opt":
                raise CandidError(f"expected opt or null for {t}, got {token!r}")
            inner = self.value(t.inner)
            return candid.Some(inner) if inner is None or isinstance(inner, candid.Some) else inner
        if isinstance(t, candid.VecType):
            if token == "blob" and _resolve(t.inner) is candid.NAT8:
                kind, token = self.next()
                if kind != "text":
                    raise CandidError(f"expected a quoted blob, got {token!r}")
                return _text_bytes(token)
            self.keyword(token, "vec")
            items = self.sequence(lambda: self.value(t.inner))
            return bytes(items) if _resolve(t.inner) is candid.NAT8 else items
        if isinstance(t, candid.RecordType):
            self.keyword(token, "record")
            return self.record(t)
        if isinstance(t, candid.VariantType):
            self.keyword(token, "variant")
            self.expect("{")
            name = self.field_key()
            field = _field(t, name)
            value = self.value(field.type) if self.accept("=") else None
            self.accept(";")
            self.expect("}")
            return {field.key: value}
        raise CandidError(f"values of type {t} cannot be written as text here")

    @staticmethod
    def keyword(token: str, expected: str) -> None:
        if token != expected:
            raise CandidError(f"expected {expected} {{ ... }}, got {token!r}")

    def sequence(self, item: Any) -> list[Any]:
        self.expect("{")
        items = []
        while not self.accept("}"):
            items.append(item())
            if not self.accept(";"):
                self.expect("}")
                break
        return items

    def field_key(self) -> str | int:
        kind, token = self.next()
        if kind == "text":
            return _text(token)
        if kind == "number":
            return _integer(token)
        if kind == "word":
            return token
        raise CandidError(f"expected a field name, got {token!r}")

    def record(self, t: candid.RecordType) -> dict[str | int, Any]:
        self.expect("{")
        values: dict[str | int, Any] = {}
        position = 0
        while not self.accept("}"):
            start = self.pos
            key: str | int = position
            try:
                key = self.field_key()
                self.expect("=")
            except CandidError:
                self.pos = start  # a positional (tuple) field
                key = position
            field = _field(t, key)
            values[field.key] = self.value(field.type)
            position += 1
            if not self.accept(";"):
                self.expect("}")
                break
        missing = [f.key for f in t.fields if f.key not in values and not isinstance(_resolve(f.type), candid.OptType)]
        if missing:
            raise CandidError(f"record {t} misses fields {missing}")
        return values

    def primitive(self, t: candid.PrimType, kind: str, token: str) -> Any:
        name = t.name
        if name == "null" and token == "null":
            return None
        if name == "bool" and token in ("true", "false"):
            return token == "true"
        if name == "text" and kind == "text":
            return _text(token)
        if name == "principal" and token == "principal":
            kind, token = self.next()
            try:
                return Principal.from_text(_text(token))
            except InvalidPrincipal as exc:
                raise CandidError(f"bad principal {token}: {exc}") from None
        if kind == "number":
            digits = token.replace("_", "")
            if name in ("float32", "float64"):
                try:
                    return float(digits)
                except ValueError:
                    raise CandidError(f"{token} is not a {name}") from None
            if "." in digits or ("e" in digits.lower() and not digits.lower().startswith(("0x", "-0x", "+0x"))):
                raise CandidError(f"{token} is not an integer ({name})")
            number = _integer(token)
            low, high = _INT_RANGES.get(name, (0 if name == "nat" else None, None))
            if name not in ("nat", "int", *_INT_RANGES):
                raise CandidError(f"a number is not a {name}")
            if (low is not None and number < low) or (high is not None and number >= high):
                raise CandidError(f"{token} is out of range for {name}")
            return number
        raise CandidError(f"expected a {name} value, got {token!r}")


def _integer(token: str) -> int:
    """A decimal or ``0x`` hexadecimal integer literal, with an optional sign and ``_`` separators."""
    digits = token.replace("_", "")
    magnitude = digits.lstrip("+-")
    try:
        value = int(magnitude[2:], 16) if magnitude[:2] in ("0x", "0X") else int(magnitude)
    except ValueError:
        raise CandidError(f"{token} is not an integer") from None
    return -value if digits.startswith("-") else value


def _resolve(t: candid.Type) -> candid.Type:
    while isinstance(t, candid.NamedType):
        t = t.definition
    return t


def _field(t: candid.RecordType | candid.VariantType, key: str | int) -> candid.Field:
    field_id = key if isinstance(key, int) else candid.idl_hash(key)
    for field in t.fields:
        if field.id == field_id:
            return field
    raise CandidError(f"{t} has no field {key!r}")


def parse_values(text: str, types: Sequence[candid.Type]) -> list[Any]:
    """The values of an argument tuple ``(v1, v2, ...)`` written as Candid text, checked against ``types``."""
    reader = _Reader(text)
    values: list[Any] = []
    reader.expect("(")
    while not reader.accept(")"):
        if len(values) == len(types):
            raise CandidError(f"more values than the {len(types)} expected argument(s) in {text!r}")
        values.append(reader.value(types[len(values)]))
        if reader.accept(":"):
            reader.skip_annotation()
        if not reader.accept(","):
            reader.expect(")")
            break
    if reader.peek() is not None:
        raise CandidError(f"unexpected text after the argument tuple in {text!r}")
    missing = [t for t in types[len(values) :] if not isinstance(_resolve(t), candid.OptType) and t is not candid.NULL]
    if missing:
        raise CandidError(f"{text!r} gives {len(values)} value(s); {len(types)} argument(s) expected")
    values.extend(None for _ in types[len(values) :])
    return values


def encode_text(text: str, types: Sequence[candid.Type]) -> bytes:
    """Candid text arguments encoded as a Candid message for ``types``."""
    return candid.encode(list(types), parse_values(text, types))
