"""Candid types: the type objects, the field-name hash, and their Candid text rendering.

Types are built by the text parser (:mod:`.parser`) and by the type-table reader (:mod:`.typetable`);
the encoder and the decoder compile them into per-type functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

from icws_fast.errors import CandidError
from icws_fast.ic.principal import Principal

__all__ = [
    "BLOB",
    "BOOL",
    "EMPTY",
    "FIXED_WIDTH",
    "FLOAT32",
    "FLOAT64",
    "FLOATS",
    "INT",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "KEYWORDS",
    "MAX_FIELD_ID",
    "MAX_TYPE_DEPTH",
    "MODE_CODES",
    "NAT",
    "NAT8",
    "NAT16",
    "NAT32",
    "NAT64",
    "NULL",
    "PRIM_BY_CODE",
    "PRIM_BY_NAME",
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
    "describe",
    "idl_hash",
    "nullable",
    "resolve",
]

_T = TypeVar("_T")

#: Deepest type nesting accepted in Candid text and in a message's type table.
MAX_TYPE_DEPTH: Final = 100
#: Largest record field / variant tag id (ids are 32-bit).
MAX_FIELD_ID: Final = 0xFFFF_FFFF
#: Function annotations and their codes in a type table.
MODE_CODES: Final = {"query": 1, "oneway": 2, "composite_query": 3}
#: The words of the Candid grammar, which cannot be names unless quoted (``record { "type" : nat }``).
KEYWORDS: Final = frozenset(
    {"type", "import", "service", "func", "opt", "vec", "record", "variant", "blob", "principal", "null"}
    | {"query", "oneway", "composite_query", "true", "false"}
)


class Type:
    """A Candid type. Instances are immutable once built and compare by identity."""

    __slots__ = ()

    def __str__(self) -> str:
        return _Printer(None).show(self)

    def __repr__(self) -> str:
        return f"<candid {describe(self)}>"


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
PRIM_BY_CODE: Final = {p.code: p for p in _PRIMS}
PRIM_BY_NAME: Final = {p.name: p for p in _PRIMS}
# Fixed-width numbers: struct format letter (little-endian) and inclusive value range.
FIXED_WIDTH: Final[dict[PrimType, tuple[str, int, int]]] = {
    NAT8: ("B", 0, 0xFF),
    NAT16: ("H", 0, 0xFFFF),
    NAT32: ("I", 0, 0xFFFF_FFFF),
    NAT64: ("Q", 0, 0xFFFF_FFFF_FFFF_FFFF),
    INT8: ("b", -0x80, 0x7F),
    INT16: ("h", -0x8000, 0x7FFF),
    INT32: ("i", -0x8000_0000, 0x7FFF_FFFF),
    INT64: ("q", -0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
}
FLOATS: Final = {FLOAT32: "f", FLOAT64: "d"}


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


def resolve(t: Type) -> Type:
    """Follow names to the underlying type (parsing guarantees alias chains end)."""
    while isinstance(t, NamedType):
        t = t.definition
    return t


def nullable(t: Type) -> bool:
    """Whether ``null <: t``: ``t`` is ``null``, ``reserved`` or an ``opt``."""
    t = resolve(t)
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
            return "service { " + self.join("; ", list(t.methods.items()), self.method) + " }"
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


def describe(t: Type) -> str:
    """A bounded rendering of ``t`` for error messages."""
    return _Printer(48).show(t)


def _show_key(key: str | int) -> str:
    if isinstance(key, int) or (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and key not in KEYWORDS):
        return str(key)
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
