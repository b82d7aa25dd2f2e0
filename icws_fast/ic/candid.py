"""Candid: the IC's interface description language and its binary encoding.

Types come from Candid text (:func:`parse_type`, :func:`parse_args`, :func:`parse_did`);
:func:`encode` and :func:`decode` translate between argument tuples and ``DIDL`` messages.

Python mapping of values (encode takes it, decode returns it):

* ``null`` and ``reserved`` -> ``None``; ``bool`` -> ``bool``; ``nat``, ``int`` and the fixed-width
  integers -> ``int``; ``float32`` / ``float64`` -> ``float``; ``text`` -> ``str``;
  ``principal`` -> :class:`~icws_fast.ic.principal.Principal`.
* ``opt T`` -> ``None`` or the value. When ``T`` itself admits ``None`` (``T`` is ``null``,
  ``reserved`` or an ``opt``), a present value is wrapped in :class:`Some`, so that ``opt opt nat``
  keeps ``null`` (``None``), ``opt null`` (``Some(None)``) and ``opt opt 5`` (``Some(5)``) apart.
  Encoding requires the same wrapping at exactly the same places.
* ``blob`` / ``vec nat8`` -> ``bytes`` (encode also takes ``bytearray``, ``memoryview`` or a list of
  ints); any other ``vec`` -> ``list`` (encode takes any list or tuple).
* ``record`` -> ``dict`` keyed by field name, or by ``int`` for numeric field ids
  (``record { 5 : nat }`` -> ``{5: ...}``). A tuple record (field ids exactly ``0..n-1`` and no
  names, e.g. ``record { nat; text }``) -> ``tuple`` (encode also takes a list). Encoding lets a
  field of type ``opt``/``null``/``reserved`` be left out of the dict (it encodes as ``null``).
* ``variant`` -> one-key ``dict`` (``{"Ok": None}`` for a tag without payload).
* ``func`` reference -> :class:`FuncRef` ``(principal, method)``; ``service`` reference ->
  :class:`~icws_fast.ic.principal.Principal`.

Decoding follows the Candid specification's coercion rules: extra arguments and record fields are
skipped, missing arguments and record fields of type ``opt``/``null``/``reserved`` read as
``None``, ``nat`` decodes at ``int``, a service reference at ``principal``, and a value that does not
coerce at an ``opt`` type becomes ``None``. A decoder is compiled once per (message type table,
expected types) pair and cached, so steady-state decoding of a stream of same-typed messages does
not interpret types again. Decoding is metered against hostile input: type tables, nesting depth
and the number of decoded elements (including zero-sized ones such as ``vec null``) are bounded,
and every failure raises :class:`~icws_fast.errors.CandidError`.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar

from icws_fast.errors import CandidError, DecodeError
from icws_fast.ic.leb128 import decode_leb128, decode_sleb128, leb128, sleb128
from icws_fast.ic.principal import MAX_LENGTH as PRINCIPAL_MAX_LENGTH
from icws_fast.ic.principal import Principal

__all__ = [
    "BLOB",
    "BOOL",
    "EMPTY",
    "FLOAT32",
    "FLOAT64",
    "INT",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "MAGIC",
    "NAT",
    "NAT8",
    "NAT16",
    "NAT32",
    "NAT64",
    "NULL",
    "PRINCIPAL",
    "RESERVED",
    "TEXT",
    "DidFile",
    "Field",
    "FuncRef",
    "FuncType",
    "FutureType",
    "NamedType",
    "OptType",
    "PrimType",
    "RecordType",
    "ServiceType",
    "Some",
    "Type",
    "VariantType",
    "VecType",
    "decode",
    "encode",
    "idl_hash",
    "parse_args",
    "parse_did",
    "parse_type",
]

_T = TypeVar("_T")

MAGIC: Final = b"DIDL"
#: Deepest value nesting a decode accepts (each level costs the decoder about one Python frame).
MAX_DEPTH: Final = 256
#: Deepest type nesting accepted in Candid text and in a message's type table.
MAX_TYPE_DEPTH: Final = 100
#: Largest type table a message may declare.
MAX_TYPE_TABLE: Final = 10_000
#: Element budget of one decode: vector elements and zero-sized records, skipped ones included.
#: Anything that consumes input bytes is already bounded by the input; this bounds the rest.
ELEMENT_BUDGET_BASE: Final = 100_000
ELEMENT_BUDGET_PER_BYTE: Final = 4
_MAX_FIELD_ID: Final = 0xFFFF_FFFF
_MODE_CODES: Final = {"query": 1, "oneway": 2, "composite_query": 3}
_MODE_NAMES: Final = {code: name for name, code in _MODE_CODES.items()}

# Opcodes of the type table (sleb128 values).
_OPT, _VEC, _RECORD, _VARIANT, _FUNC, _SERVICE = -18, -19, -20, -21, -22, -23
_FUTURE_BELOW: Final = -24  # opcodes below this are future types


# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------


class Type:
    """A Candid type. Instances are immutable once built and compare by identity."""

    __slots__ = ()

    def __str__(self) -> str:
        return _Printer(None).show(self)

    def __repr__(self) -> str:
        return f"<candid {_describe(self)}>"


class PrimType(Type):
    """A primitive type; one shared instance per type (``NAT``, ``TEXT``, ...)."""

    __slots__ = ("code", "name")

    def __init__(self, name: str, code: int) -> None:
        self.name = name
        self.code = code


NULL: Final = PrimType("null", -1)
BOOL: Final = PrimType("bool", -2)
NAT: Final = PrimType("nat", -3)
INT: Final = PrimType("int", -4)
NAT8: Final = PrimType("nat8", -5)
NAT16: Final = PrimType("nat16", -6)
NAT32: Final = PrimType("nat32", -7)
NAT64: Final = PrimType("nat64", -8)
INT8: Final = PrimType("int8", -9)
INT16: Final = PrimType("int16", -10)
INT32: Final = PrimType("int32", -11)
INT64: Final = PrimType("int64", -12)
FLOAT32: Final = PrimType("float32", -13)
FLOAT64: Final = PrimType("float64", -14)
TEXT: Final = PrimType("text", -15)
RESERVED: Final = PrimType("reserved", -16)
EMPTY: Final = PrimType("empty", -17)
PRINCIPAL: Final = PrimType("principal", -24)
_PRIMS: Final = (
    NULL,
    BOOL,
    NAT,
    INT,
    NAT8,
    NAT16,
    NAT32,
    NAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    FLOAT32,
    FLOAT64,
    TEXT,
    RESERVED,
    EMPTY,
    PRINCIPAL,
)
_PRIM_BY_CODE: Final = {p.code: p for p in _PRIMS}
_PRIM_BY_NAME: Final = {p.name: p for p in _PRIMS}
# Fixed-width numbers: struct format letter (little-endian) and inclusive value range.
_FIXED: Final[dict[PrimType, tuple[str, int, int]]] = {
    NAT8: ("B", 0, 0xFF),
    NAT16: ("H", 0, 0xFFFF),
    NAT32: ("I", 0, 0xFFFF_FFFF),
    NAT64: ("Q", 0, 0xFFFF_FFFF_FFFF_FFFF),
    INT8: ("b", -0x80, 0x7F),
    INT16: ("h", -0x8000, 0x7FFF),
    INT32: ("i", -0x8000_0000, 0x7FFF_FFFF),
    INT64: ("q", -0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
}
_FLOATS: Final = {FLOAT32: "f", FLOAT64: "d"}


class OptType(Type):
    """``opt inner``."""

    __slots__ = ("inner",)

    def __init__(self, inner: Type) -> None:
        self.inner = inner


class VecType(Type):
    """``vec inner`` (``blob`` is ``vec nat8``)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Type) -> None:
        self.inner = inner


class Field(NamedTuple):
    """A record or variant field: its id (the hash of its name), its Python key and its type.

    ``key`` is the field name for named fields and the id (an ``int``) for numeric and positional
    ones; it is the dict key of record values and variant values.
    """

    id: int
    key: str | int
    type: Type


class RecordType(Type):
    """``record { ... }``; ``fields`` are sorted by id. ``is_tuple`` selects the tuple value form."""

    __slots__ = ("fields", "is_tuple")

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields: tuple[Field, ...] = tuple(sorted(fields, key=lambda f: f.id))
        self.is_tuple = bool(self.fields) and all(f.key == i for i, f in enumerate(self.fields))


class VariantType(Type):
    """``variant { ... }``; ``fields`` are sorted by id."""

    __slots__ = ("fields",)

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields: tuple[Field, ...] = tuple(sorted(fields, key=lambda f: f.id))


class FuncType(Type):
    """``func (args) -> (rets) modes``; ``modes`` holds ``query``/``oneway``/``composite_query``."""

    __slots__ = ("args", "modes", "rets")

    def __init__(self, args: Sequence[Type], rets: Sequence[Type], modes: Sequence[str] = ()) -> None:
        self.args: tuple[Type, ...] = tuple(args)
        self.rets: tuple[Type, ...] = tuple(rets)
        self.modes: tuple[str, ...] = tuple(modes)


class ServiceType(Type):
    """``service { ... }``; ``methods`` maps method names (sorted) to their function types."""

    __slots__ = ("methods",)

    def __init__(self, methods: Mapping[str, Type]) -> None:
        self.methods: dict[str, Type] = dict(sorted(methods.items(), key=lambda kv: kv[0].encode()))


class NamedType(Type):
    """A reference to a type definition ``type name = ...``; recursion goes through these."""

    __slots__ = ("_definition", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._definition: Type | None = None

    @property
    def definition(self) -> Type:
        if self._definition is None:
            raise CandidError(f"type {self.name!r} is not defined")
        return self._definition


class FutureType(Type):
    """A type of a later Candid version found in a message's type table; its values are skipped."""

    __slots__ = ("opcode",)

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode


BLOB: Final = VecType(NAT8)


@dataclass(frozen=True, slots=True)
class Some:
    """A present ``opt`` value whose content type itself admits ``None`` (``null``, ``reserved``, ``opt``)."""

    value: Any


class FuncRef(NamedTuple):
    """A Candid ``func`` reference value: a method of a canister."""

    principal: Principal
    method: str


@dataclass(frozen=True)
class DidFile:
    """A parsed ``.did`` source: its named types, its service and the service's init arguments."""

    types: dict[str, Type] = field(default_factory=dict)
    service: ServiceType | None = None
    init: tuple[Type, ...] | None = None


def idl_hash(name: str) -> int:
    """The id of a field named ``name``: its UTF-8 bytes folded as ``h = h * 223 + byte`` mod 2**32."""
    h = 0
    for byte in name.encode("utf-8"):
        h = (h * 223 + byte) & 0xFFFF_FFFF
    return h


def _resolve(t: Type) -> Type:
    """Follow names to the underlying type (parsing guarantees alias chains end)."""
    while isinstance(t, NamedType):
        t = t.definition
    return t


def _nullable(t: Type) -> bool:
    """Whether ``null <: t``: ``t`` is ``null``, ``reserved`` or an ``opt``."""
    t = _resolve(t)
    return t is NULL or t is RESERVED or isinstance(t, OptType)


class _Printer:
    """Candid text of a type. ``limit`` caps the nodes printed: wire types from a message can be
    cyclic without names and exponentially wide, so error messages print them bounded."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def show(self, t: Type) -> str:
        if self.left is not None:
            if self.left <= 0:
                return "…"
            self.left -= 1
        if isinstance(t, (PrimType, NamedType)):
            return t.name
        if isinstance(t, OptType):
            return f"opt {self.show(t.inner)}"
        if isinstance(t, VecType):
            return f"vec {self.show(t.inner)}"
        if isinstance(t, RecordType) and t.is_tuple:
            return "record { " + self.join("; ", [f.type for f in t.fields], self.show) + " }"
        if isinstance(t, (RecordType, VariantType)):
            kind = "record" if isinstance(t, RecordType) else "variant"
            return f"{kind} {{ " + self.join("; ", t.fields, self.field) + " }"
        if isinstance(t, FuncType):
            return "func " + self.func(t)
        if isinstance(t, ServiceType):
            methods = (
                f"{_show_key(n)} : {self.func(m) if isinstance(m, FuncType) else self.show(m)}"
                for n, m in t.methods.items()
            )
            return "service { " + "; ".join(methods) + " }"
        if isinstance(t, FutureType):
            return f"<future type {t.opcode}>"
        raise TypeError(f"not a Candid type: {t!r}")

    def join(self, sep: str, items: Sequence[_T], render: Callable[[_T], str]) -> str:
        """Render ``items`` in turn, ending with an ellipsis once the node budget is spent."""
        out: list[str] = []
        for item in items:
            if self.left is not None and self.left <= 0:
                out.append("…")
                break
            out.append(render(item))
        return sep.join(out)

    def field(self, f: Field) -> str:
        return f"{_show_key(f.key)} : {self.show(f.type)}"

    def method(self, item: tuple[str, Type]) -> str:
        name, t = item
        return f"{_show_key(name)} : {self.func(t) if isinstance(t, FuncType) else self.show(t)}"

    def func(self, t: FuncType) -> str:
        args = self.join(", ", t.args, self.show)
        rets = self.join(", ", t.rets, self.show)
        return f"({args}) -> ({rets})" + "".join(" " + m for m in t.modes)


def _describe(t: Type) -> str:
    """A bounded rendering of ``t`` for error messages."""
    return _Printer(48).show(t)


def _show_key(key: str | int) -> str:
    if isinstance(key, int) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return str(key)
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Candid text: types and .did files
# --------------------------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<num>0[xX][0-9a-fA-F][0-9a-fA-F_]*|[0-9][0-9_]*)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<text>"(?:[^"\\]|\\.)*")
  | (?P<punct>->|[(){};:,=.])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPE: Final = re.compile(r"\\(u\{[0-9a-fA-F_]+\}|[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", '"': b'"', "'": b"'"}
_KEYWORDS: Final = frozenset(
    {"type", "import", "service", "func", "opt", "vec", "record", "variant", "blob", "query", "oneway"}
    | {"composite_query"}
)


class _Tok(NamedTuple):
    kind: str  # "num" | "id" | "text" | "punct" | "eof"
    value: str
    offset: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
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
            tokens.append(_Tok("text", _unescape(m.group()[1:-1], pos), pos))
        elif kind != "ws":
            tokens.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Tok("eof", "", end))
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


def _unescape(body: str, offset: int) -> str:
    """Decode a Candid string literal body; ``\\XX`` escapes are raw bytes, the result must be UTF-8."""
    out = bytearray()
    last = 0
    for m in _ESCAPE.finditer(body):
        out += body[last : m.start()].encode("utf-8", "surrogatepass")
        esc = m.group(1)
        if esc.startswith("u{"):
            try:
                out += chr(int(esc[2:-1].replace("_", ""), 16)).encode("utf-8")
            except (ValueError, OverflowError):
                raise CandidError(f"bad unicode escape in string at offset {offset}") from None
        elif len(esc) == 2:
            out.append(int(esc, 16))
        elif esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc]
        else:
            raise CandidError(f"bad escape \\{esc} in string at offset {offset}")
        last = m.end()
    out += body[last:].encode("utf-8", "surrogatepass")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise CandidError(f"string at offset {offset} is not valid UTF-8") from None


class _Env:
    """Type definitions being parsed: one :class:`NamedType` per name, defined or not yet."""

    def __init__(self, base: _Env | None = None) -> None:
        self.names: dict[str, NamedType] = dict(base.names) if base else {}

    def ref(self, name: str) -> NamedType:
        named = self.names.get(name)
        if named is None:
            named = self.names[name] = NamedType(name)
        return named

    def check(self) -> None:
        """Every referenced name is defined, and no alias chain loops without a constructor."""
        for name, named in self.names.items():
            if named._definition is None:
                raise CandidError(f"type {name!r} is not defined")
        for named in self.names.values():
            seen: set[int] = set()
            t: Type = named
            while isinstance(t, NamedType):
                if id(t) in seen:
                    raise CandidError(f"type {named.name!r} is defined as itself")
                seen.add(id(t))
                t = t.definition


class _Parser:
    def __init__(self, text: str, env: _Env) -> None:
        if not isinstance(text, str):
            raise CandidError("Candid source must be a str")
        self.toks = _tokenize(text)
        self.i = 0
        self.env = env

    # -- token helpers -------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> _Tok:
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

    def fail(self, what: str) -> None:
        tok = self.peek()
        found = "end of input" if tok.kind == "eof" else repr(tok.value)
        raise CandidError(f"{what} at offset {tok.offset}, found {found}")

    def unread(self, tok: _Tok) -> None:
        """Step back over ``tok`` (just taken by :meth:`next`) so that errors point at it."""
        if tok.kind != "eof":
            self.i -= 1

    def end(self) -> None:
        if self.peek().kind != "eof":
            self.fail("expected end of input")

    def name(self) -> str:
        tok = self.next()
        if tok.kind not in ("id", "text"):
            self.unread(tok)
            self.fail("expected a name")
        return tok.value

    def nat(self) -> int:
        tok = self.next()
        if tok.kind != "num":
            self.unread(tok)
            self.fail("expected a number")
        digits = tok.value.replace("_", "")
        if len(digits) > 40:
            self.i -= 1
            self.fail("number too large")
        return int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10)

    # -- grammar -------------------------------------------------------------------------
    def datatype(self, depth: int = 0) -> Type:
        if depth > MAX_TYPE_DEPTH:
            self.fail("type nested too deeply")
        d = depth + 1
        tok = self.next()
        if tok.kind != "id":
            self.unread(tok)
            self.fail("expected a type")
        word = tok.value
        prim = _PRIM_BY_NAME.get(word)
        if prim is not None:
            return prim
        if word == "opt":
            return OptType(self.datatype(d))
        if word == "vec":
            return VecType(self.datatype(d))
        if word == "blob":
            return BLOB
        if word == "record":
            return self.record(d)
        if word == "variant":
            return self.variant(d)
        if word == "func":
            return self.functype(d)
        if word == "service":
            return self.actortype(d)
        if word in _KEYWORDS:
            self.i -= 1
            self.fail("expected a type")
        return self.env.ref(word)

    def field_label(self) -> tuple[int, str | int] | None:
        """``name :`` or ``nat :`` ahead: consume it and return (id, key); else None."""
        tok = self.peek()
        if not self.at(":", 1):
            return None
        if tok.kind == "num":
            field_id = self.nat()
            if field_id > _MAX_FIELD_ID:
                self.fail("field id larger than 2**32-1")
            self.next()
            return field_id, field_id
        if tok.kind in ("id", "text"):
            self.next()
            self.next()
            return idl_hash(tok.value), tok.value
        return None

    def record(self, depth: int) -> RecordType:
        self.expect("{")
        fields: list[Field] = []
        next_id = 0
        while not self.accept("}"):
            label = self.field_label()
            if label is None:
                if next_id > _MAX_FIELD_ID:
                    self.fail("field id larger than 2**32-1")
                fid: int = next_id
                key: str | int = next_id
            else:
                fid, key = label
            fields.append(Field(fid, key, self.datatype(depth)))
            next_id = fid + 1
            if not self.accept(";"):
                self.expect("}")
                break
        return RecordType(_unique_fields(self, fields))

    def variant(self, depth: int) -> VariantType:
        self.expect("{")
        fields: list[Field] = []
        while not self.accept("}"):
            label = self.field_label()
            if label is not None:
                fields.append(Field(label[0], label[1], self.datatype(depth)))
            elif self.peek().kind == "num":
                fid = self.nat()
                if fid > _MAX_FIELD_ID:
                    self.fail("field id larger than 2**32-1")
                fields.append(Field(fid, fid, NULL))
            else:
                tag = self.name()
                fields.append(Field(idl_hash(tag), tag, NULL))
            if not self.accept(";"):
                self.expect("}")
                break
        return VariantType(_unique_fields(self, fields))

    def tuple(self, depth: int) -> list[Type]:
        """``( argtype, ... )`` where an argument may carry a name (``(to : principal)``)."""
        self.expect("(")
        types: list[Type] = []
        while not self.accept(")"):
            if self.peek().kind in ("id", "text") and self.at(":", 1):
                self.next()
                self.next()
            types.append(self.datatype(depth))
            if not self.accept(","):
                self.expect(")")
                break
        return types

    def functype(self, depth: int) -> FuncType:
        args = self.tuple(depth)
        self.expect("->")
        rets = self.tuple(depth)
        modes: list[str] = []
        while self.peek().kind == "id" and self.peek().value in _MODE_CODES:
            modes.append(self.next().value)
        if len(modes) > 1:
            self.fail("a function takes at most one of query, composite_query, oneway")
        if "oneway" in modes and rets:
            self.fail("a oneway function has no results")
        return FuncType(args, rets, modes)

    def actortype(self, depth: int) -> ServiceType:
        self.expect("{")
        methods: dict[str, Type] = {}
        while not self.accept("}"):
            name = self.name()
            self.expect(":")
            if name in methods:
                self.fail(f"duplicate method {name!r}")
            methods[name] = self.functype(depth) if self.at("(") else self.datatype(depth)
            if not self.accept(";"):
                self.expect("}")
                break
        return ServiceType(methods)

    def definitions(self) -> DidFile:
        """A whole .did source: ``type`` definitions, then optionally the service."""
        service: Type | None = None
        init: list[Type] | None = None
        while self.peek().kind != "eof":
            if self.accept("type"):
                tok = self.next()
                if tok.kind != "id" or tok.value in _KEYWORDS or tok.value in _PRIM_BY_NAME:
                    self.unread(tok)
                    self.fail("expected a type name")
                named = self.env.ref(tok.value)
                if named._definition is not None:
                    self.fail(f"type {tok.value!r} defined twice")
                self.expect("=")
                named._definition = self.datatype()
            elif self.accept("import"):
                self.fail("imports are not supported")
            elif self.accept("service"):
                if service is not None:
                    self.fail("more than one service")
                if self.peek().kind == "id" and not self.at(":"):
                    self.next()
                self.expect(":")
                if self.at("("):
                    init = self.tuple(0)
                    self.expect("->")
                service = self.actortype(0) if self.at("{") else self.datatype()
            else:
                self.fail("expected 'type' or 'service'")
            if not self.accept(";") and self.peek().kind != "eof":
                self.fail("expected ';'")
        self.env.check()
        resolved: ServiceType | None = None
        if service is not None:
            target = _resolve(service)
            if not isinstance(target, ServiceType):
                raise CandidError("the service of a .did file must have a service type")
            for name, method in target.methods.items():
                if not isinstance(_resolve(method), FuncType):
                    raise CandidError(f"method {name!r} does not have a function type")
            resolved = target
        types: dict[str, Type] = dict(self.env.names)
        return DidFile(types, resolved, tuple(init) if init is not None else None)


def _unique_fields(parser: _Parser, fields: list[Field]) -> list[Field]:
    ids = [f.id for f in fields]
    if len(set(ids)) != len(ids):
        parser.fail("duplicate field id (or field names whose hashes collide)")
    return fields


@functools.lru_cache(maxsize=64)
def _parse_defs(defs: str | None) -> _Env:
    env = _Env()
    if defs is not None:
        _Parser(defs, env).definitions()
    return env


@functools.lru_cache(maxsize=512)
def _parse_type_cached(text: str, defs: str | None) -> Type:
    env = _Env(_parse_defs(defs))
    parser = _Parser(text, env)
    t = parser.datatype()
    parser.end()
    env.check()
    return t


@functools.lru_cache(maxsize=512)
def _parse_args_cached(text: str, defs: str | None) -> tuple[Type, ...]:
    env = _Env(_parse_defs(defs))
    parser = _Parser(text, env)
    types = parser.tuple(0)
    parser.end()
    env.check()
    return tuple(types)


def parse_type(text: str, defs: str | None = None) -> Type:
    """Parse one Candid type, e.g. ``"record { text : text; timestamp : nat64 }"``.

    ``defs`` is .did text whose ``type X = ...;`` definitions the expression may name. Results are
    cached: the same ``(text, defs)`` gives the same :class:`Type` object (and so hits the
    encoder/decoder caches).
    """
    return _parse_type_cached(text, defs)


def parse_args(text: str, defs: str | None = None) -> list[Type]:
    """Parse an argument tuple type such as ``"(nat, opt text)"`` (arguments may be named)."""
    return list(_parse_args_cached(text, defs))


def parse_did(text: str) -> DidFile:
    """Parse a .did source: type definitions and an optional service (with method annotations)."""
    return _Parser(text, _Env()).definitions()


def _as_types(types: Sequence[Type] | str) -> tuple[Type, ...]:
    if isinstance(types, str):
        return _parse_args_cached(types, None)
    result = tuple(types)
    for t in result:
        if not isinstance(t, Type):
            raise TypeError(f"expected Candid types, got {type(t).__name__}")
    return result


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

_Encoder: TypeAlias = Callable[[Any, bytearray], None]


def _recursive_names(roots: Sequence[Type]) -> set[NamedType]:
    """The named types reachable from ``roots`` that reach themselves (they need a table slot first)."""

    def children(t: Type) -> Iterator[Type]:
        if isinstance(t, NamedType):
            yield t.definition
        elif isinstance(t, (OptType, VecType)):
            yield t.inner
        elif isinstance(t, (RecordType, VariantType)):
            yield from (f.type for f in t.fields)
        elif isinstance(t, FuncType):
            yield from t.args
            yield from t.rets
        elif isinstance(t, ServiceType):
            yield from t.methods.values()

    def reachable(start: Type) -> dict[int, Type]:
        seen: dict[int, Type] = {}
        stack = [start]
        while stack:
            t = stack.pop()
            if id(t) not in seen:
                seen[id(t)] = t
                stack.extend(children(t))
        return seen

    everything: dict[int, Type] = {}
    for root in roots:
        everything.update(reachable(root))
    return {t for t in everything.values() if isinstance(t, NamedType) and id(t) in reachable(t.definition)}


class _TableBuilder:
    """Builds a message's type table: children before parents, identical entries shared."""

    def __init__(self, roots: Sequence[Type]) -> None:
        self.recursive = _recursive_names(roots)
        self.entries: list[bytes] = []
        self.by_bytes: dict[bytes, int] = {}
        self.by_name: dict[NamedType, int] = {}

    def ref(self, t: Type) -> bytes:
        """``I(t)``: a primitive's opcode or the index of ``t``'s table entry."""
        if isinstance(t, NamedType):
            index = self.by_name.get(t)
            if index is not None:
                return sleb128(index)
            if t not in self.recursive:
                return self.ref(t.definition)
            target = _resolve(t)
            index = self.by_name[t] = len(self.entries)
            self.entries.append(b"")  # reserved so that the definition can refer to itself
            self.entries[index] = self.entry(target)
            return sleb128(index)
        if isinstance(t, PrimType):
            return sleb128(t.code)
        body = self.entry(t)
        index = self.by_bytes.get(body)
        if index is None:
            index = self.by_bytes[body] = len(self.entries)
            self.entries.append(body)
        return sleb128(index)

    def entry(self, t: Type) -> bytes:
        if isinstance(t, OptType):
            return sleb128(_OPT) + self.ref(t.inner)
        if isinstance(t, VecType):
            return sleb128(_VEC) + self.ref(t.inner)
        if isinstance(t, (RecordType, VariantType)):
            parts = [sleb128(_RECORD if isinstance(t, RecordType) else _VARIANT), leb128(len(t.fields))]
            for f in t.fields:
                parts.append(leb128(f.id))
                parts.append(self.ref(f.type))
            return b"".join(parts)
        if isinstance(t, FuncType):
            parts = [sleb128(_FUNC), leb128(len(t.args))]
            parts += [self.ref(a) for a in t.args]
            parts.append(leb128(len(t.rets)))
            parts += [self.ref(r) for r in t.rets]
            parts.append(leb128(len(t.modes)))
            parts.append(bytes(_MODE_CODES[m] for m in t.modes))
            return b"".join(parts)
        if isinstance(t, ServiceType):
            parts = [sleb128(_SERVICE), leb128(len(t.methods))]
            for name, method in t.methods.items():
                if not isinstance(_resolve(method), FuncType):
                    raise CandidError(f"method {name!r} does not have a function type")
                raw = name.encode("utf-8")
                parts += [leb128(len(raw)), raw, self.ref(method)]
            return b"".join(parts)
        raise CandidError(f"cannot encode values of type {_describe(t)}")

    def header(self, types: Sequence[Type]) -> bytes:
        refs = [self.ref(t) for t in types]
        return b"".join([MAGIC, leb128(len(self.entries)), *self.entries, leb128(len(refs)), *refs])


def _forward_encoder(cell: list[_Encoder]) -> _Encoder:
    """An encoder for a recursive name whose definition is still being compiled (``cell`` gets it)."""

    def enc_forward(v: Any, out: bytearray) -> None:
        cell[0](v, out)

    return enc_forward


def _fail_encode(t: Type, value: Any, why: str = "") -> CandidError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CandidError(f"cannot encode {shown} as {_describe(t)}" + (f": {why}" if why else ""))


def _is_int(v: Any) -> bool:
    return type(v) is int or (isinstance(v, int) and not isinstance(v, bool))


def _is_mapping(v: Any) -> bool:
    return type(v) is dict or isinstance(v, Mapping)


class _EncoderCompiler:
    def __init__(self) -> None:
        self.named: dict[NamedType, list[_Encoder]] = {}

    def compile(self, t: Type) -> _Encoder:
        if isinstance(t, NamedType):
            cell = self.named.get(t)
            if cell is None:
                cell = self.named[t] = []
                cell.append(self.compile(t.definition))
                return cell[0]
            if cell:
                return cell[0]
            return _forward_encoder(cell)
        if isinstance(t, PrimType):
            return _prim_encoder(t)
        if isinstance(t, OptType):
            return self.opt(t)
        if isinstance(t, VecType):
            return self.vec(t)
        if isinstance(t, RecordType):
            return self.record(t)
        if isinstance(t, VariantType):
            return self.variant(t)
        if isinstance(t, FuncType):
            return functools.partial(_encode_func, t)
        if isinstance(t, ServiceType):
            return functools.partial(_encode_service, t)
        raise CandidError(f"cannot encode values of type {_describe(t)}")

    def opt(self, t: OptType) -> _Encoder:
        inner = self.compile(t.inner)
        wrapped = _nullable(t.inner)

        def enc_opt(v: Any, out: bytearray) -> None:
            if v is None:
                out.append(0)
                return
            if wrapped:
                if not isinstance(v, Some):
                    raise _fail_encode(t, v, "a present value of this opt type must be wrapped in Some")
                v = v.value
            out.append(1)
            inner(v, out)

        return enc_opt

    def vec(self, t: VecType) -> _Encoder:
        if _resolve(t.inner) is NAT8:

            def enc_blob(v: Any, out: bytearray) -> None:
                if isinstance(v, (list, tuple)):
                    try:
                        v = bytes(v)
                    except (ValueError, TypeError):
                        raise _fail_encode(t, v, "elements must be ints in 0..255") from None
                elif not isinstance(v, (bytes, bytearray, memoryview)):
                    raise _fail_encode(t, v, "expected bytes")
                out += leb128(len(v))
                out += v

            return enc_blob
        inner = self.compile(t.inner)

        def enc_vec(v: Any, out: bytearray) -> None:
            if not isinstance(v, (list, tuple)):
                raise _fail_encode(t, v, "expected a list")
            out += leb128(len(v))
            for item in v:
                inner(item, out)

        return enc_vec

    def record(self, t: RecordType) -> _Encoder:
        steps = [(f.key, self.compile(f.type), _nullable(f.type)) for f in t.fields]
        keys = frozenset(f.key for f in t.fields)
        n = len(steps)
        if t.is_tuple:
            encoders = [enc for _, enc, _ in steps]

            def enc_tuple(v: Any, out: bytearray) -> None:
                if _is_mapping(v) and v.keys() <= keys:
                    v = [v.get(i) for i in range(n)]
                if not isinstance(v, (list, tuple)) or len(v) != n:
                    raise _fail_encode(t, v, f"expected a tuple of {n}")
                for enc, item in zip(encoders, v, strict=True):
                    enc(item, out)

            return enc_tuple

        def enc_record(v: Any, out: bytearray) -> None:
            if not _is_mapping(v):
                raise _fail_encode(t, v, "expected a dict")
            found = 0
            for key, enc, nullable in steps:
                if key in v:
                    found += 1
                    enc(v[key], out)
                elif nullable:
                    enc(None, out)
                else:
                    raise _fail_encode(t, v, f"missing field {key!r}")
            if found != len(v):
                raise _fail_encode(t, v, f"unknown fields {sorted(map(str, v.keys() - keys))}")

        return enc_record

    def variant(self, t: VariantType) -> _Encoder:
        tags = {f.key: (leb128(i), self.compile(f.type)) for i, f in enumerate(t.fields)}

        def enc_variant(v: Any, out: bytearray) -> None:
            if not _is_mapping(v) or len(v) != 1:
                raise _fail_encode(t, v, "expected a dict with exactly one key")
            ((key, payload),) = v.items()
            tag = tags.get(key)
            if tag is None:
                raise _fail_encode(t, v, f"unknown tag {key!r}")
            out += tag[0]
            tag[1](payload, out)

        return enc_variant


def _prim_encoder(t: PrimType) -> _Encoder:
    if t is NULL:

        def enc_null(v: Any, out: bytearray) -> None:
            if v is not None:
                raise _fail_encode(t, v)

        return enc_null
    if t is RESERVED:
        return lambda v, out: None  # reserved carries no data: any value encodes as nothing
    if t is BOOL:

        def enc_bool(v: Any, out: bytearray) -> None:
            if v is True:
                out.append(1)
            elif v is False:
                out.append(0)
            else:
                raise _fail_encode(t, v)

        return enc_bool
    if t is NAT:

        def enc_nat(v: Any, out: bytearray) -> None:
            if not _is_int(v) or v < 0:
                raise _fail_encode(t, v)
            if v < 0x80:
                out.append(v)
            else:
                out += leb128(v)

        return enc_nat
    if t is INT:

        def enc_int(v: Any, out: bytearray) -> None:
            if not _is_int(v):
                raise _fail_encode(t, v)
            out += sleb128(v)

        return enc_int
    if t in _FIXED:
        code, lo, hi = _FIXED[t]
        pack = struct.Struct("<" + code).pack

        def enc_fixed(v: Any, out: bytearray) -> None:
            if not _is_int(v) or not lo <= v <= hi:
                raise _fail_encode(t, v)
            out += pack(v)

        return enc_fixed
    if t in _FLOATS:
        pack_float = struct.Struct("<" + _FLOATS[t]).pack

        def enc_float(v: Any, out: bytearray) -> None:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise _fail_encode(t, v)
            try:
                out += pack_float(v)
            except (OverflowError, struct.error):
                raise _fail_encode(t, v, "out of range") from None

        return enc_float
    if t is TEXT:

        def enc_text(v: Any, out: bytearray) -> None:
            if not isinstance(v, str):
                raise _fail_encode(t, v)
            try:
                raw = v.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail_encode(t, v, "not encodable as UTF-8") from None
            out += leb128(len(raw))
            out += raw

        return enc_text
    if t is PRINCIPAL:
        return functools.partial(_encode_principal, t)

    def enc_empty(v: Any, out: bytearray) -> None:
        raise _fail_encode(t, v, "the type has no values")

    return enc_empty


def _encode_principal(t: Type, v: Any, out: bytearray) -> None:
    if not isinstance(v, Principal):
        raise _fail_encode(t, v, "expected a Principal")
    raw = v.bytes
    out.append(1)
    out += leb128(len(raw))
    out += raw


def _encode_func(t: FuncType, v: Any, out: bytearray) -> None:
    if not isinstance(v, tuple) or len(v) != 2 or not isinstance(v[1], str):
        raise _fail_encode(t, v, "expected a FuncRef(principal, method)")
    out.append(1)
    _encode_principal(t, v[0], out)
    try:
        raw = v[1].encode("utf-8")
    except UnicodeEncodeError:
        raise _fail_encode(t, v, "method name not encodable as UTF-8") from None
    out += leb128(len(raw))
    out += raw


def _encode_service(t: ServiceType, v: Any, out: bytearray) -> None:
    _encode_principal(t, v, out)


class _EncodePlan(NamedTuple):
    header: bytes
    encoders: tuple[_Encoder, ...]


@functools.lru_cache(maxsize=1024)
def _encode_plan(types: tuple[Type, ...]) -> _EncodePlan:
    header = _TableBuilder(types).header(types)
    compiler = _EncoderCompiler()
    return _EncodePlan(header, tuple(compiler.compile(t) for t in types))


def encode(types: Sequence[Type] | str, values: Sequence[Any]) -> bytes:
    """Encode ``values`` (one per type) as a Candid message of the argument types ``types``.

    ``types`` is a list of types (e.g. from :func:`parse_args`) or Candid text such as
    ``"(nat, opt text)"``. A value that does not fit its type raises :class:`CandidError`.
    """
    plan = _encode_plan(_as_types(types))
    if len(values) != len(plan.encoders):
        raise CandidError(f"{len(values)} values for {len(plan.encoders)} types")
    out = bytearray(plan.header)
    try:
        for enc, value in zip(plan.encoders, values, strict=True):
            enc(value, out)
    except RecursionError:
        raise CandidError("value nested too deeply to encode") from None
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Decoding: the message header (type table)
# --------------------------------------------------------------------------------------------


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 count or id (small in any valid message)."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    return decode_leb128(data, pos)


class _Header(NamedTuple):
    args: tuple[Type, ...]
    table: tuple[Type, ...]
    end: int


def _read_header(data: bytes) -> _Header:
    """Parse and validate the type table and argument types that follow the magic."""
    size = len(data)
    n, pos = _leb(data, 4)
    if n > MAX_TYPE_TABLE or n > size - pos:
        raise CandidError(f"type table of {n} entries is too large")
    raw: list[tuple[int, Any]] = []

    def typeref(p: int) -> tuple[int, int]:
        ref, p = decode_sleb128(data, p)
        if ref >= 0:
            if ref >= n:
                raise CandidError(f"type index {ref} out of range")
        elif ref not in _PRIM_BY_CODE:
            raise CandidError(f"invalid type opcode {ref} in a type reference")
        return ref, p

    def count(p: int) -> tuple[int, int]:
        k, p = _leb(data, p)
        if k > size - p:
            raise CandidError(f"count {k} overshoots the message")
        return k, p

    for _ in range(n):
        op, pos = decode_sleb128(data, pos)
        if op in (_OPT, _VEC):
            ref, pos = typeref(pos)
            raw.append((op, ref))
        elif op in (_RECORD, _VARIANT):
            k, pos = count(pos)
            fields: list[tuple[int, int]] = []
            last = -1
            for _ in range(k):
                fid, pos = _leb(data, pos)
                if fid > _MAX_FIELD_ID:
                    raise CandidError(f"field id {fid} larger than 2**32-1")
                if fid <= last:
                    raise CandidError("record/variant fields not strictly sorted by id")
                last = fid
                ref, pos = typeref(pos)
                fields.append((fid, ref))
            raw.append((op, fields))
        elif op == _FUNC:
            k, pos = count(pos)
            args = []
            for _ in range(k):
                ref, pos = typeref(pos)
                args.append(ref)
            k, pos = count(pos)
            rets = []
            for _ in range(k):
                ref, pos = typeref(pos)
                rets.append(ref)
            k, pos = count(pos)
            modes = data[pos : pos + k]
            pos += k
            if any(m not in _MODE_NAMES for m in modes):
                raise CandidError("unknown function annotation")
            raw.append((op, (args, rets, [_MODE_NAMES[m] for m in modes])))
        elif op == _SERVICE:
            k, pos = count(pos)
            methods: list[tuple[str, int]] = []
            last_name = b""
            for i in range(k):
                ln, pos = count(pos)
                name = data[pos : pos + ln]
                pos += ln
                if i and name <= last_name:
                    raise CandidError("service methods not strictly sorted by name")
                last_name = name
                try:
                    text = name.decode("utf-8")
                except UnicodeDecodeError:
                    raise CandidError("service method name is not UTF-8") from None
                ref, pos = typeref(pos)
                methods.append((text, ref))
            raw.append((op, methods))
        elif op < _FUTURE_BELOW:
            k, pos = count(pos)
            pos += k
            raw.append((op, None))
        else:
            raise CandidError(f"invalid type table entry opcode {op}")

    # Build the (possibly cyclic) type graph: allocate every entry, then fill in references.
    table: list[Type] = []
    for op, _body in raw:
        if op == _OPT:
            table.append(OptType(NULL))
        elif op == _VEC:
            table.append(VecType(NULL))
        elif op == _RECORD:
            table.append(RecordType(()))
        elif op == _VARIANT:
            table.append(VariantType(()))
        elif op == _FUNC:
            table.append(FuncType((), ()))
        elif op == _SERVICE:
            table.append(ServiceType({}))
        else:
            table.append(FutureType(op))

    def get(ref: int) -> Type:
        return table[ref] if ref >= 0 else _PRIM_BY_CODE[ref]

    for t, (_op, body) in zip(table, raw, strict=True):
        if isinstance(t, (OptType, VecType)):
            t.inner = get(body)
        elif isinstance(t, (RecordType, VariantType)):
            # Wire fields carry no names: the Python key is the id (a wire tuple is thus `is_tuple`).
            t.fields = tuple(Field(fid, fid, get(ref)) for fid, ref in body)
            if isinstance(t, RecordType):
                t.is_tuple = bool(t.fields) and all(f.id == i for i, f in enumerate(t.fields))
        elif isinstance(t, FuncType):
            args, rets, modes = body
            t.args = tuple(map(get, args))
            t.rets = tuple(map(get, rets))
            t.modes = tuple(modes)
        elif isinstance(t, ServiceType):
            for name, ref in body:
                method = get(ref)
                if not isinstance(method, FuncType):
                    raise CandidError(f"service method {name!r} does not have a function type")
                t.methods[name] = method

    nargs, pos = count(pos)
    arg_types = []
    for _ in range(nargs):
        ref, pos = typeref(pos)
        arg_types.append(get(ref))
    if pos > size:
        raise CandidError("truncated type table")
    return _Header(tuple(arg_types), tuple(table), pos)


# --------------------------------------------------------------------------------------------
# Decoding: compiled decoders
# --------------------------------------------------------------------------------------------


class _Mismatch(CandidError):
    """A well-formed value that does not coerce to the expected type (an enclosing ``opt`` recovers)."""


class _State:
    """Per-call mutable state: the remaining element budget."""

    __slots__ = ("budget",)

    def __init__(self, budget: int) -> None:
        self.budget = budget


_Decoder: TypeAlias = Callable[[bytes, int, _State, int], tuple[Any, int]]

_TOO_DEEP: Final = "Candid value nested too deeply"
_OVER_BUDGET: Final = "Candid message decodes to too many elements"


def _forward_decoder(cell: list[_Decoder]) -> _Decoder:
    """A decoder for a recursive pair still being compiled; ``cell`` receives the real one."""

    def dec_forward(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        return cell[0](data, pos, st, depth)

    return dec_forward


def _discarding(dec: _Decoder) -> _Decoder:
    """``dec`` with its value dropped: skipping a value still validates it."""

    def dec_discard(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        return None, dec(data, pos, st, depth)[1]

    return dec_discard


def _const_none(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    return None, pos


def _mismatch(wire: Type, expected: Type) -> _Decoder:
    message = f"a value of type {_describe(wire)} does not fit type {_describe(expected)}"

    def dec_mismatch(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        raise _Mismatch(message)

    return dec_mismatch


def _no_value(wire: Type) -> _Decoder:
    message = f"type {_describe(wire)} has no values"

    def dec_no_value(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        raise CandidError(message)

    return dec_no_value


def _dec_bool(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    b = data[pos]
    if b > 1:
        raise CandidError(f"invalid bool byte {b}")
    return b == 1, pos + 1


def _dec_nat(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    return decode_leb128(data, pos)


def _dec_int(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    b = data[pos]
    if b < 0x80:
        return (b - 0x80 if b & 0x40 else b), pos + 1
    return decode_sleb128(data, pos)


def _struct_decoder(code: str) -> _Decoder:
    s = struct.Struct("<" + code)
    unpack_from = s.unpack_from
    size = s.size

    def dec_fixed(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        return unpack_from(data, pos)[0], pos + size

    return dec_fixed


def _dec_text(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    n = data[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = decode_leb128(data, pos)
    end = pos + n
    if end > len(data):
        raise CandidError("text overshoots the message")
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise CandidError("text is not valid UTF-8") from None


def _dec_principal(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    if data[pos] != 1:
        raise CandidError("opaque or malformed principal reference")
    n, pos = _leb(data, pos + 1)
    end = pos + n
    if n > PRINCIPAL_MAX_LENGTH or end > len(data):
        raise CandidError(f"principal of {n} bytes is invalid or overshoots the message")
    return Principal(data[pos:end]), end


def _dec_func(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    if data[pos] != 1:
        raise CandidError("opaque or malformed func reference")
    principal, pos = _dec_principal(data, pos + 1, st, depth)
    method, pos = _dec_text(data, pos, st, depth)
    return FuncRef(principal, method), pos


def _dec_future(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    m, pos = _leb(data, pos)
    _refs, pos = _leb(data, pos)
    end = pos + m
    if end > len(data):
        raise CandidError("future value overshoots the message")
    return None, end


_PRIM_DECODERS: Final[dict[PrimType, _Decoder]] = {
    NULL: _const_none,
    BOOL: _dec_bool,
    NAT: _dec_nat,
    INT: _dec_int,
    TEXT: _dec_text,
    PRINCIPAL: _dec_principal,
    **{t: _struct_decoder(code) for t, (code, _lo, _hi) in _FIXED.items()},
    **{t: _struct_decoder(code) for t, code in _FLOATS.items()},
}


def _zero_sized_records(table: Sequence[Type]) -> set[int]:
    """Ids of the wire records whose values take no bytes (only null/reserved/such records inside)."""
    zero = {id(t) for t in table if isinstance(t, RecordType)}
    changed = True
    while changed:
        changed = False
        for t in table:
            if id(t) in zero and isinstance(t, RecordType):
                for f in t.fields:
                    ft = f.type
                    if not (ft is NULL or ft is RESERVED or id(ft) in zero):
                        zero.discard(id(t))
                        changed = True
                        break
    return zero


class _DecoderCompiler:
    """Compiles decoders for (wire type, expected type) pairs of one message header."""

    def __init__(self, table: Sequence[Type]) -> None:
        self.zero_sized = _zero_sized_records(table)
        self.pairs: dict[tuple[int, int], list[_Decoder]] = {}
        self.skips: dict[int, list[_Decoder]] = {}
        self.subtypes: dict[tuple[int, int], bool] = {}
        self.depth = 0

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_TYPE_DEPTH:
            raise CandidError("Candid type nested too deeply")

    # -- skipping ------------------------------------------------------------------------
    def skip(self, w: Type) -> _Decoder:
        cell = self.skips.get(id(w))
        if cell is not None:
            return cell[0] if cell else _forward_decoder(cell)
        cell = self.skips[id(w)] = []
        self._enter()
        try:
            cell.append(self._skip(w))
        finally:
            self.depth -= 1
        return cell[0]

    def _skip(self, w: Type) -> _Decoder:
        if isinstance(w, PrimType):
            if w is EMPTY:
                return _no_value(w)
            if w is RESERVED or w is NULL:
                return _const_none
            return _discarding(_PRIM_DECODERS[w])  # skipping validates the value like decoding
        if isinstance(w, FutureType):
            return _dec_future
        if isinstance(w, FuncType):
            return _discarding(_dec_func)
        if isinstance(w, ServiceType):
            return _discarding(_dec_principal)
        if isinstance(w, OptType):
            return self._opt_skip(self.skip(w.inner))
        if isinstance(w, VecType):
            code = _packed_code(w.inner)
            if code is not None:
                # Every bit pattern of a fixed-width number is valid: jump over the whole vector.
                return _skip_packed_vec(struct.calcsize("<" + code))
            return self._vec(self.skip(w.inner), as_bytes=False, discard=True)
        if isinstance(w, RecordType):
            return self._record(w, [(None, self.skip(f.type)) for f in w.fields], None, False)
        if isinstance(w, VariantType):
            return self._variant([(None, self.skip(f.type)) for f in w.fields], discard=True)
        raise CandidError(f"unsupported wire type {_describe(w)}")

    @staticmethod
    def _opt_skip(inner: _Decoder) -> _Decoder:
        def skip_opt(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
            tag = data[pos]
            if tag == 0:
                return None, pos + 1
            if tag != 1:
                raise CandidError(f"invalid opt tag {tag}")
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            return None, inner(data, pos + 1, st, depth + 1)[1]

        return skip_opt

    # -- decoding at an expected type ----------------------------------------------------
    def decoder(self, w: Type, e: Type) -> _Decoder:
        e = _resolve(e)
        key = (id(w), id(e))
        cell = self.pairs.get(key)
        if cell is not None:
            return cell[0] if cell else _forward_decoder(cell)
        cell = self.pairs[key] = []
        self._enter()
        try:
            cell.append(self._decoder(w, e))
        finally:
            self.depth -= 1
        return cell[0]

    def _decoder(self, w: Type, e: Type) -> _Decoder:
        if w is EMPTY:
            return _no_value(w)
        if e is RESERVED:
            return self.skip(w)
        if isinstance(e, OptType):
            return self._opt(w, e)
        if isinstance(e, PrimType):
            if w is e or (e is INT and w is NAT):
                return _PRIM_DECODERS.get(e, _const_none)
            if e is PRINCIPAL and isinstance(w, ServiceType):
                return _dec_principal
            return _mismatch(w, e)
        if isinstance(e, VecType) and isinstance(w, VecType):
            return self._vec_at(w, e)
        if isinstance(e, RecordType) and isinstance(w, RecordType):
            return self._record_at(w, e)
        if isinstance(e, VariantType) and isinstance(w, VariantType):
            table: list[tuple[Any, _Decoder]] = []
            expected = {f.id: f for f in e.fields}
            unknown_tag: _Decoder | None = None
            for wf in w.fields:
                ef = expected.get(wf.id)
                if ef is None:
                    unknown_tag = unknown_tag or _mismatch(w, e)
                    table.append((wf.id, unknown_tag))  # only a value using this tag fails
                else:
                    table.append((ef.key, self.decoder(wf.type, ef.type)))
            return self._variant(table, discard=False)
        if isinstance(e, FuncType) and isinstance(w, FuncType):
            return _dec_func if self.subtype(w, e) else _mismatch(w, e)
        if isinstance(e, ServiceType) and isinstance(w, ServiceType):
            return _dec_principal if self.subtype(w, e) else _mismatch(w, e)
        return _mismatch(w, e)

    def _opt(self, w: Type, e: OptType) -> _Decoder:
        wrap = _nullable(e.inner)
        if w is NULL or w is RESERVED:
            return _const_none
        if isinstance(w, FutureType):
            return _dec_future
        if isinstance(w, OptType):
            inner = self.decoder(w.inner, e.inner)
            skip_inner = self.skip(w.inner)

            def dec_opt(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
                tag = data[pos]
                if tag == 0:
                    return None, pos + 1
                if tag != 1:
                    raise CandidError(f"invalid opt tag {tag}")
                if depth >= MAX_DEPTH:
                    raise CandidError(_TOO_DEEP)
                try:
                    v, end = inner(data, pos + 1, st, depth + 1)
                except _Mismatch:
                    return None, skip_inner(data, pos + 1, st, depth + 1)[1]
                return (Some(v) if wrap else v), end

            return dec_opt
        # A plain value at an opt type: present if it coerces to the content type, else null.
        inner = self.decoder(w, e.inner)
        skip_value = self.skip(w)

        def dec_as_opt(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            try:
                v, end = inner(data, pos, st, depth + 1)
            except _Mismatch:
                return None, skip_value(data, pos, st, depth + 1)[1]
            return (Some(v) if wrap else v), end

        return dec_as_opt

    def _vec_at(self, w: VecType, e: VecType) -> _Decoder:
        wi, ei = w.inner, _resolve(e.inner)
        code = _packed_code(wi)
        if wi is ei and code is not None:
            return _packed_vec(code, as_bytes=ei is NAT8)
        if wi is BOOL and ei is BOOL:
            return _dec_bool_vec
        return self._vec(self.decoder(wi, ei), as_bytes=ei is NAT8, discard=False)

    @staticmethod
    def _vec(elem: _Decoder, *, as_bytes: bool, discard: bool) -> _Decoder:
        def dec_vec(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
            n = data[pos]
            if n < 0x80:
                pos += 1
            else:
                n, pos = decode_leb128(data, pos)
            budget = st.budget - n
            if budget < 0:
                raise CandidError(_OVER_BUDGET)
            st.budget = budget
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            d = depth + 1
            if discard:
                for _ in range(n):
                    pos = elem(data, pos, st, d)[1]
                return None, pos
            out: list[Any] = []
            append = out.append
            for _ in range(n):
                v, pos = elem(data, pos, st, d)
                append(v)
            return (bytes(out) if as_bytes else out), pos

        return dec_vec

    def _record_at(self, w: RecordType, e: RecordType) -> _Decoder:
        expected = {f.id: f for f in e.fields}
        steps: list[tuple[Any, _Decoder]] = []
        for wf in w.fields:
            ef = expected.pop(wf.id, None)
            if ef is None:
                steps.append((None, self.skip(wf.type)))
            else:
                steps.append((ef.key, self.decoder(wf.type, ef.type)))
        missing = list(expected.values())
        for ef in missing:
            if not _nullable(ef.type):
                return _mismatch(w, e)
        defaults = {ef.key: None for ef in missing}
        return self._record(w, steps, defaults, e.is_tuple, len(e.fields))

    def _record(
        self,
        w: RecordType,
        steps: list[tuple[Any, _Decoder]],
        defaults: dict[Any, None] | None,
        as_tuple: bool,
        n_expected: int = 0,
    ) -> _Decoder:
        charge = id(w) in self.zero_sized
        keyed = tuple(steps)
        skip_only = defaults is None
        if not skip_only and not as_tuple and all(key is not None for key, _ in keyed):
            return _record_all_fields(keyed, defaults, charge)

        def dec_record(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            if charge:
                # Zero-sized records consume no input, so meter them like vector elements.
                st.budget -= 1
                if st.budget < 0:
                    raise CandidError(_OVER_BUDGET)
            d = depth + 1
            if skip_only:
                for _key, f in keyed:
                    pos = f(data, pos, st, d)[1]
                return None, pos
            out: dict[Any, Any] = dict(defaults) if defaults else {}
            for key, f in keyed:
                v, pos = f(data, pos, st, d)
                if key is not None:
                    out[key] = v
            if as_tuple:
                return tuple(out[i] for i in range(n_expected)), pos
            return out, pos

        return dec_record

    @staticmethod
    def _variant(table: list[tuple[Any, _Decoder]], *, discard: bool) -> _Decoder:
        entries = tuple(table)
        n = len(entries)

        def dec_variant(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
            i = data[pos]
            if i < 0x80:
                pos += 1
            else:
                i, pos = decode_leb128(data, pos)
            if i >= n:
                raise CandidError(f"variant index {i} out of range")
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            key, f = entries[i]
            v, pos = f(data, pos, st, depth + 1)
            return (None if discard else {key: v}), pos

        return dec_variant

    # -- subtyping (for reference values) ------------------------------------------------
    def subtype(self, w: Type, e: Type) -> bool:
        """``w <: e`` per the specification, coinductively (pairs under test are assumed true)."""
        e = _resolve(e)
        w = _resolve(w)
        key = (id(w), id(e))
        known = self.subtypes.get(key)
        if known is not None:
            return known
        self.subtypes[key] = True
        self._enter()
        try:
            result = self._subtype(w, e)
        finally:
            self.depth -= 1
        self.subtypes[key] = result
        return result

    def _subtype(self, w: Type, e: Type) -> bool:
        if e is RESERVED or w is EMPTY or w is e:
            return True
        if isinstance(e, OptType):
            return True  # with the special opt rules, every type is a subtype of every opt
        if isinstance(e, PrimType):
            return (e is INT and w is NAT) or (e is PRINCIPAL and isinstance(w, ServiceType))
        if isinstance(e, VecType) and isinstance(w, VecType):
            return self.subtype(w.inner, e.inner)
        if isinstance(e, RecordType) and isinstance(w, RecordType):
            return self._fields_subtype(w.fields, e.fields)
        if isinstance(e, VariantType) and isinstance(w, VariantType):
            expected = {f.id: f.type for f in e.fields}
            return all(f.id in expected and self.subtype(f.type, expected[f.id]) for f in w.fields)
        if isinstance(e, FuncType) and isinstance(w, FuncType):
            if set(w.modes) != set(e.modes):
                return False
            args_ok = self._fields_subtype(_positional(e.args), _positional(w.args))
            return args_ok and self._fields_subtype(_positional(w.rets), _positional(e.rets))
        if isinstance(e, ServiceType) and isinstance(w, ServiceType):
            return all(
                name in w.methods and self.subtype(w.methods[name], method) for name, method in e.methods.items()
            )
        return False

    def _fields_subtype(self, w_fields: Sequence[Field], e_fields: Sequence[Field]) -> bool:
        wire = {f.id: f.type for f in w_fields}
        for f in e_fields:
            if f.id in wire:
                if not self.subtype(wire[f.id], f.type):
                    return False
            elif not _nullable(f.type):
                return False
        return True


def _record_all_fields(
    keyed: tuple[tuple[Any, _Decoder], ...], defaults: dict[Any, None] | None, charge: bool
) -> _Decoder:
    """A record decoder for the common case: every wire field is wanted, the value is a dict."""

    def dec_record_all(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        if depth >= MAX_DEPTH:
            raise CandidError(_TOO_DEEP)
        if charge:
            st.budget -= 1
            if st.budget < 0:
                raise CandidError(_OVER_BUDGET)
        d = depth + 1
        out: dict[Any, Any] = {}
        for key, f in keyed:
            out[key], pos = f(data, pos, st, d)
        if defaults:
            out.update(defaults)
        return out, pos

    return dec_record_all


def _packed_code(t: Type) -> str | None:
    """The struct letter of a fixed-width number type, else None."""
    if not isinstance(t, PrimType):
        return None
    if t in _FIXED:
        return _FIXED[t][0]
    return _FLOATS.get(t)


def _positional(types: Sequence[Type]) -> tuple[Field, ...]:
    return tuple(Field(i, i, t) for i, t in enumerate(types))


def _packed_vec(code: str, *, as_bytes: bool) -> _Decoder:
    size = struct.calcsize("<" + code)

    def dec_packed(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        n = data[pos]
        if n < 0x80:
            pos += 1
        else:
            n, pos = decode_leb128(data, pos)
        end = pos + n * size
        if end > len(data):
            raise CandidError("vector overshoots the message")
        if as_bytes:
            return data[pos:end], end
        return list(struct.unpack_from(f"<{n}{code}", data, pos)), end

    return dec_packed


def _skip_packed_vec(size: int) -> _Decoder:
    def skip_packed(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
        n = data[pos]
        if n < 0x80:
            pos += 1
        else:
            n, pos = decode_leb128(data, pos)
        end = pos + n * size
        if end > len(data):
            raise CandidError("vector overshoots the message")
        return None, end

    return skip_packed


def _dec_bool_vec(data: bytes, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    n = data[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = decode_leb128(data, pos)
    end = pos + n
    if end > len(data):
        raise CandidError("vector overshoots the message")
    chunk = data[pos:end]
    if chunk.translate(None, b"\x00\x01"):
        raise CandidError("invalid bool byte in vector")
    return [b == 1 for b in chunk], end


class _Compiled(NamedTuple):
    header: bytes  # the message bytes after the magic up to the first value
    decoders: tuple[_Decoder, ...]


class _DecodePlan:
    """The compiled decoders of one expected type tuple, for the few headers recently seen."""

    __slots__ = ("recent", "types")
    KEEP = 8

    def __init__(self, types: tuple[Type, ...]) -> None:
        self.types = types
        self.recent: list[_Compiled] = []

    def compiled_for(self, data: bytes) -> _Compiled:
        for i, compiled in enumerate(self.recent):
            # Header parsing is prefix-determined, so an identical prefix means an identical header.
            if data.startswith(compiled.header, 4):
                if i:
                    self.recent.insert(0, self.recent.pop(i))
                return compiled
        compiled = self._compile(data)
        self.recent.insert(0, compiled)
        del self.recent[self.KEEP :]
        return compiled

    def _compile(self, data: bytes) -> _Compiled:
        header = _read_header(data)
        compiler = _DecoderCompiler(header.table)
        decoders: list[_Decoder] = []
        for i, expected in enumerate(self.types):
            if i < len(header.args):
                decoders.append(compiler.decoder(header.args[i], expected))
            elif _nullable(expected):
                decoders.append(_const_none)  # a missing argument of opt/null/reserved type reads as null
            else:
                raise CandidError(f"missing argument {i} of type {_describe(expected)}")
        decoders += [compiler.skip(w) for w in header.args[len(self.types) :]]
        return _Compiled(data[4 : header.end], tuple(decoders))


@functools.lru_cache(maxsize=1024)
def _decode_plan(types: tuple[Type, ...]) -> _DecodePlan:
    return _DecodePlan(types)


def decode(data: bytes | bytearray | memoryview, types: Sequence[Type] | str) -> list[Any]:
    """Decode a Candid message at the expected argument types ``types``; one value per type.

    ``types`` is a list of types (e.g. from :func:`parse_args`) or Candid text. Extra arguments in
    the message are skipped; missing ones of type ``opt``/``null``/``reserved`` read as ``None``.
    Anything malformed, over a limit or not coercible raises :class:`CandidError`.
    """
    expected = _as_types(types)
    raw = bytes(data)
    if not raw.startswith(MAGIC):
        raise CandidError("not a Candid message (no DIDL magic)")
    try:
        compiled = _decode_plan(expected).compiled_for(raw)
        st = _State(ELEMENT_BUDGET_BASE + ELEMENT_BUDGET_PER_BYTE * len(raw))
        pos = 4 + len(compiled.header)
        values: list[Any] = []
        for dec in compiled.decoders:
            value, pos = dec(raw, pos, st, 0)
            values.append(value)
    except _Mismatch as exc:
        raise CandidError(str(exc)) from None
    except CandidError:
        raise
    except DecodeError as exc:  # a truncated LEB128 number, from the shared decoder
        raise CandidError(str(exc)) from None
    except (IndexError, struct.error):
        raise CandidError("truncated Candid message") from None
    except RecursionError:
        raise CandidError(_TOO_DEEP) from None
    if pos != len(raw):
        raise CandidError(f"{len(raw) - pos} trailing bytes after the Candid arguments")
    return values[: len(expected)]
