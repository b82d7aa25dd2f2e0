"""The type table of a ``DIDL`` message: written by the encoder, read (and validated) by the decoder.

A message starts with the magic, a table of composite types (children referred to by index, so the
graph may be cyclic) and the argument types. :func:`encode_header` writes it for a tuple of types;
:func:`read_header` parses a hostile one into :mod:`.types` objects, bounding its size and checking
every index, opcode, field order and length against the message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final, NamedTuple

from icws_fast.errors import CandidError
from icws_fast.ic.candid.types import (
    MAX_FIELD_ID,
    MODE_CODES,
    NULL,
    PRIM_BY_CODE,
    Field,
    FuncType,
    FutureType,
    NamedType,
    OptType,
    PrimType,
    RecordType,
    ServiceType,
    Type,
    VariantType,
    VecType,
    describe,
    resolve,
)
from icws_fast.ic.leb128 import decode_leb128, decode_length, decode_sleb128, leb128, number_text, sleb128

__all__ = ["MAGIC", "MAX_TYPE_TABLE", "Header", "encode_header", "read_header"]

MAGIC: Final = b"DIDL"
#: Largest type table a message may declare.
MAX_TYPE_TABLE: Final = 10_000

# Opcodes of the type table (sleb128 values).
_OPT, _VEC, _RECORD, _VARIANT, _FUNC, _SERVICE = -18, -19, -20, -21, -22, -23
_FUTURE_BELOW: Final = -24  # opcodes below this are future types
_MODE_NAMES: Final = {code: name for name, code in MODE_CODES.items()}


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
            target = resolve(t)
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
            parts.append(bytes(MODE_CODES[m] for m in t.modes))
            return b"".join(parts)
        if isinstance(t, ServiceType):
            parts = [sleb128(_SERVICE), leb128(len(t.methods))]
            for name, method in t.methods.items():
                if not isinstance(resolve(method), FuncType):
                    raise CandidError(f"method {name!r} does not have a function type")
                raw = name.encode("utf-8")
                parts += [leb128(len(raw)), raw, self.ref(method)]
            return b"".join(parts)
        raise CandidError(f"cannot encode values of type {describe(t)}")

    def header(self, types: Sequence[Type]) -> bytes:
        refs = [self.ref(t) for t in types]
        return b"".join([MAGIC, leb128(len(self.entries)), *self.entries, leb128(len(refs)), *refs])


def encode_header(types: Sequence[Type]) -> bytes:
    """The magic, type table and argument types of a message of ``types``."""
    return _TableBuilder(types).header(types)


class Header(NamedTuple):
    """A parsed message header: the argument types, the whole table, and the offset of the first value."""

    args: tuple[Type, ...]
    table: tuple[Type, ...]
    end: int


def read_header(data: bytes) -> Header:
    """Parse and validate the type table and argument types that follow the magic."""
    size = len(data)
    n, pos = decode_length(data, 4, "type table")
    if n > MAX_TYPE_TABLE:
        raise CandidError(f"type table of {n} entries is too large")
    raw: list[tuple[int, Any]] = []

    def typeref(p: int) -> tuple[int, int]:
        ref, p = decode_sleb128(data, p)
        if ref >= 0:
            if ref >= n:
                raise CandidError(f"type index {number_text(ref)} out of range")
        elif ref not in PRIM_BY_CODE:
            raise CandidError(f"invalid type opcode {number_text(ref)} in a type reference")
        return ref, p

    for _ in range(n):
        op, pos = decode_sleb128(data, pos)
        if op in (_OPT, _VEC):
            ref, pos = typeref(pos)
            raw.append((op, ref))
        elif op in (_RECORD, _VARIANT):
            k, pos = decode_length(data, pos, "field list")
            fields: list[tuple[int, int]] = []
            last = -1
            for _ in range(k):
                fid, pos = decode_leb128(data, pos)
                if fid > MAX_FIELD_ID:
                    raise CandidError(f"field id {number_text(fid)} larger than 2**32-1")
                if fid <= last:
                    raise CandidError("record/variant fields not strictly sorted by id")
                last = fid
                ref, pos = typeref(pos)
                fields.append((fid, ref))
            raw.append((op, fields))
        elif op == _FUNC:
            k, pos = decode_length(data, pos, "function arguments")
            args = []
            for _ in range(k):
                ref, pos = typeref(pos)
                args.append(ref)
            k, pos = decode_length(data, pos, "function results")
            rets = []
            for _ in range(k):
                ref, pos = typeref(pos)
                rets.append(ref)
            k, pos = decode_length(data, pos, "function annotations")
            modes = data[pos : pos + k]
            pos += k
            if any(m not in _MODE_NAMES for m in modes):
                raise CandidError("unknown function annotation")
            raw.append((op, (args, rets, [_MODE_NAMES[m] for m in modes])))
        elif op == _SERVICE:
            k, pos = decode_length(data, pos, "service methods")
            methods: list[tuple[str, int]] = []
            last_name = b""
            for i in range(k):
                ln, pos = decode_length(data, pos, "method name")
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
            k, pos = decode_length(data, pos, "future type")
            pos += k
            raw.append((op, None))
        else:
            raise CandidError(f"invalid type table entry opcode {number_text(op)}")

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
        return table[ref] if ref >= 0 else PRIM_BY_CODE[ref]

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

    nargs, pos = decode_length(data, pos, "argument types")
    arg_types = []
    for _ in range(nargs):
        ref, pos = typeref(pos)
        arg_types.append(get(ref))
    if pos > size:
        raise CandidError("truncated type table")
    return Header(tuple(arg_types), tuple(table), pos)
