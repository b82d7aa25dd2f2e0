"""Candid values written as text — ``(50 : nat64, opt "a", record { x = 1 })`` — read at expected types.

Enough of the textual value syntax for arguments given by a person (a canister's init arguments on a
command line): numbers (``_`` separators, ``0x`` hex, signs; fractions and exponents for floats),
``true``/``false``, ``null``, text, ``blob "..."``, ``principal "..."``, ``opt``, ``vec { ... }``,
``record { ... }`` (fields by name or number; positional ones for tuples) and ``variant { ... }``;
annotations ``(v : type)`` are accepted and skipped. Tokens and escapes are read by :mod:`.lexer`, as
for types. The values follow the package's Python mapping, so they feed :func:`.encoder.encode` at the
same types. The text is untrusted: values (parentheses included) nest at most ``MAX_TYPE_DEPTH`` deep,
and every failure raises :class:`~icws_fast.errors.CandidError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from icws_fast.errors import CandidError, InvalidPrincipal
from icws_fast.ic.candid.lexer import Token, TokenCursor, integer
from icws_fast.ic.candid.types import (
    MAX_TYPE_DEPTH,
    NAT8,
    NULL,
    Field,
    OptType,
    PrimType,
    RecordType,
    Some,
    Type,
    VariantType,
    VecType,
    idl_hash,
    resolve,
)
from icws_fast.ic.principal import Principal

__all__ = ["parse_value_args"]

_INT_RANGES: Final = {
    "nat": (0, None),
    "int": (None, None),
    "nat8": (0, 1 << 8),
    "nat16": (0, 1 << 16),
    "nat32": (0, 1 << 32),
    "nat64": (0, 1 << 64),
    "int8": (-(1 << 7), 1 << 7),
    "int16": (-(1 << 15), 1 << 15),
    "int32": (-(1 << 31), 1 << 31),
    "int64": (-(1 << 63), 1 << 63),
}


class _ValueReader(TokenCursor):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    def skip_annotation(self) -> None:
        """Skip ``: type`` up to the closing parenthesis of ``(value : type)`` (or the next argument)."""
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind == "eof" or (depth == 0 and (self.at(")") or self.at(","))):
                return
            if tok.kind == "punct":
                depth += {"(": 1, "{": 1, ")": -1, "}": -1}.get(tok.value, 0)
            self.i += 1

    def value(self, t: Type) -> Any:
        # Recursive types and parentheses let text nest without bound: cap it before Python's stack.
        if self.depth >= MAX_TYPE_DEPTH:
            self.fail(f"value nested too deeply (more than {MAX_TYPE_DEPTH} levels)")
        self.depth += 1
        value = self.unnested_value(resolve(t))
        self.depth -= 1
        return value

    def unnested_value(self, t: Type) -> Any:
        if self.accept("("):
            inner = self.value(t)
            if self.accept(":"):
                self.skip_annotation()
            self.expect(")")
            return inner
        if isinstance(t, PrimType):
            return self.primitive(t)
        if isinstance(t, OptType):
            if self.accept("null"):
                return None
            if not self.accept("opt"):
                self.fail(f"expected opt or null for {t}")
            inner = self.value(t.inner)
            return Some(inner) if inner is None or isinstance(inner, Some) else inner
        if isinstance(t, VecType):
            if resolve(t.inner) is NAT8 and self.accept("blob"):
                return self.literal("text", "a quoted blob").data
            self.keyword("vec", t)
            items = self.sequence(lambda: self.value(t.inner))
            return bytes(items) if resolve(t.inner) is NAT8 else items
        if isinstance(t, RecordType):
            self.keyword("record", t)
            return self.record(t)
        if isinstance(t, VariantType):
            self.keyword("variant", t)
            self.expect("{")
            field = _field(t, self.field_key())
            value = self.value(field.type) if self.accept("=") else None
            self.accept(";")
            self.expect("}")
            return {field.key: value}
        raise CandidError(f"values of type {t} cannot be written as text")

    def keyword(self, word: str, t: Type) -> None:
        if not self.accept(word):
            self.fail(f"expected {word} for {t}")

    def literal(self, kind: str, what: str) -> Token:
        """The next token, which must be of ``kind``."""
        tok = self.next()
        if tok.kind != kind:
            self.unread(tok)
            self.fail(f"expected {what}")
        return tok

    def sequence(self, item: Callable[[], Any]) -> list[Any]:
        self.expect("{")
        items = []
        while not self.accept("}"):
            items.append(item())
            if not self.accept(";"):
                self.expect("}")
                break
        return items

    def field_key(self) -> str | int:
        tok = self.next()
        if tok.kind == "text":
            return self.text(tok)
        if tok.kind == "id":
            return tok.value
        key = integer(tok.value) if tok.kind == "num" else None
        if key is None:
            self.unread(tok)
            self.fail("expected a field name")
        return key

    def record(self, t: RecordType) -> dict[str | int, Any]:
        self.expect("{")
        values: dict[str | int, Any] = {}
        position = 0
        while not self.accept("}"):
            # ``name =`` or ``number =`` labels a field; anything else is the next positional (tuple) field.
            key: str | int = position
            if self.at("=", 1) and self.peek().kind in ("id", "text", "num"):
                key = self.field_key()
                self.next()
            field = _field(t, key)
            values[field.key] = self.value(field.type)
            position += 1
            if not self.accept(";"):
                self.expect("}")
                break
        missing = [f.key for f in t.fields if f.key not in values and not isinstance(resolve(f.type), OptType)]
        if missing:
            raise CandidError(f"record {t} misses fields {missing}")
        return values

    def primitive(self, t: PrimType) -> Any:
        name = t.name
        tok = self.next()
        if name == "null" and tok.kind == "id" and tok.value == "null":
            return None
        if name == "bool" and tok.kind == "id" and tok.value in ("true", "false"):
            return tok.value == "true"
        if name == "text" and tok.kind == "text":
            return self.text(tok)
        if name == "principal" and tok.kind == "id" and tok.value == "principal":
            literal = self.literal("text", "a quoted principal")
            try:
                return Principal.from_text(self.text(literal))
            except InvalidPrincipal as exc:
                raise CandidError(f"bad principal {literal.value}: {exc}") from None
        if tok.kind == "num" and name in ("float32", "float64"):
            try:
                return float(tok.value.replace("_", ""))
            except ValueError:
                raise CandidError(f"{tok.value} is not a {name}") from None
        if tok.kind == "num" and name in _INT_RANGES:
            number = integer(tok.value)
            if number is None:
                raise CandidError(f"{tok.value} is not an integer ({name})")
            low, high = _INT_RANGES[name]
            if (low is not None and number < low) or (high is not None and number >= high):
                raise CandidError(f"{tok.value} is out of range for {name}")
            return number
        self.unread(tok)
        self.fail(f"expected a {name} value")


def _field(t: RecordType | VariantType, key: str | int) -> Field:
    field_id = key if isinstance(key, int) else idl_hash(key)
    for field in t.fields:
        if field.id == field_id:
            return field
    raise CandidError(f"{t} has no field {key!r}")


def parse_value_args(text: str, types: Sequence[Type]) -> list[Any]:
    """The values of an argument tuple ``(v1, v2, ...)`` written as Candid text, read at ``types``.

    Trailing arguments of type ``opt`` or ``null`` may be left out (they read as ``None``). The result
    is what :func:`~icws_fast.ic.candid.encode` takes for ``types``; :class:`CandidError` for text that
    is malformed, does not fit the types, or gives too many or too few values.
    """
    reader = _ValueReader(text)
    values: list[Any] = []
    reader.expect("(")
    while not reader.accept(")"):
        if len(values) == len(types):
            reader.fail(f"more values than the {len(types)} expected argument(s)")
        values.append(reader.value(types[len(values)]))
        if reader.accept(":"):
            reader.skip_annotation()
        if not reader.accept(","):
            reader.expect(")")
            break
    if reader.peek().kind != "eof":
        reader.fail("unexpected text after the argument tuple")
    missing = [t for t in types[len(values) :] if not isinstance(resolve(t), OptType) and resolve(t) is not NULL]
    if missing:
        raise CandidError(f"{text!r} gives {len(values)} value(s); {len(types)} argument(s) expected")
    values.extend(None for _ in types[len(values) :])
    return values
