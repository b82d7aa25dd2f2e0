"""Encoding argument tuples as ``DIDL`` messages.

An encoder is compiled once per type tuple (cached with the message header), so encoding a stream of
same-typed values does not interpret types again. A value that does not fit its type raises
:class:`~icws_fast.errors.CandidError` naming the value and the type.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

from icws_fast.errors import CandidError
from icws_fast.ic.candid.parser import as_types
from icws_fast.ic.candid.types import (
    BOOL,
    FIXED_WIDTH,
    FLOATS,
    INT,
    NAT,
    NAT8,
    NULL,
    PRINCIPAL,
    RESERVED,
    TEXT,
    FuncType,
    NamedType,
    OptType,
    PrimType,
    RecordType,
    ServiceType,
    Some,
    Type,
    VariantType,
    VecType,
    describe,
    nullable,
    resolve,
)
from icws_fast.ic.candid.typetable import encode_header
from icws_fast.ic.leb128 import leb128, sleb128
from icws_fast.ic.principal import Principal

__all__ = ["encode"]

_Encoder: TypeAlias = Callable[[Any, bytearray], None]


def _forward_encoder(cell: list[_Encoder]) -> _Encoder:
    """An encoder for a recursive name whose definition is still being compiled (``cell`` gets it)."""

    def enc_forward(v: Any, out: bytearray) -> None:
        cell[0](v, out)

    return enc_forward


def _fail_encode(t: Type, value: Any, why: str = "") -> CandidError:
    return CandidError(f"cannot encode {_shown(value)} as {describe(t)}" + (f": {why}" if why else ""))


def _shown(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, for error messages."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's int-to-text limit (4300 digits), maybe inside a container
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 80 else text[:77] + "..."


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
        raise CandidError(f"cannot encode values of type {describe(t)}")

    def opt(self, t: OptType) -> _Encoder:
        inner = self.compile(t.inner)
        wrapped = nullable(t.inner)

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
        if resolve(t.inner) is NAT8:

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
        steps = [(f.key, self.compile(f.type), nullable(f.type)) for f in t.fields]
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
            for key, enc, may_omit in steps:
                if key in v:
                    found += 1
                    enc(v[key], out)
                elif may_omit:
                    enc(None, out)
                else:
                    raise _fail_encode(t, v, f"missing field {key!r}")
            if found != len(v):
                unknown = sorted(k if isinstance(k, str) else _shown(k) for k in v.keys() - keys)
                raise _fail_encode(t, v, f"unknown fields {unknown}")

        return enc_record

    def variant(self, t: VariantType) -> _Encoder:
        tags = {f.key: (leb128(i), self.compile(f.type)) for i, f in enumerate(t.fields)}

        def enc_variant(v: Any, out: bytearray) -> None:
            if not _is_mapping(v) or len(v) != 1:
                raise _fail_encode(t, v, "expected a dict with exactly one key")
            ((key, payload),) = v.items()
            tag = tags.get(key)
            if tag is None:
                raise _fail_encode(t, v, f"unknown tag {_shown(key)}")
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
    if t in FIXED_WIDTH:
        code, lo, hi = FIXED_WIDTH[t]
        pack = struct.Struct("<" + code).pack

        def enc_fixed(v: Any, out: bytearray) -> None:
            if not _is_int(v) or not lo <= v <= hi:
                raise _fail_encode(t, v)
            out += pack(v)

        return enc_fixed
    if t in FLOATS:
        pack_float = struct.Struct("<" + FLOATS[t]).pack

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
    compiler = _EncoderCompiler()
    return _EncodePlan(encode_header(types), tuple(compiler.compile(t) for t in types))


def encode(types: Sequence[Type] | str, values: Sequence[Any]) -> bytes:
    """Encode ``values`` (one per type) as a Candid message of the argument types ``types``.

    ``types`` is a list of types (e.g. from :func:`parse_args`) or Candid text such as
    ``"(nat, opt text)"``. A value that does not fit its type raises :class:`CandidError`.
    """
    plan = _encode_plan(as_types(types))
    if len(values) != len(plan.encoders):
        raise CandidError(f"{len(values)} values for {len(plan.encoders)} types")
    out = bytearray(plan.header)
    try:
        for enc, value in zip(plan.encoders, values, strict=True):
            enc(value, out)
    except RecursionError:
        raise CandidError("value nested too deeply to encode") from None
    return bytes(out)
