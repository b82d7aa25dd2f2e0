"""Decoding ``DIDL`` messages at expected types, with the specification's coercions.

A decoder is compiled once per (message type table, expected types) pair and cached, so steady-state
decoding of a stream of same-typed messages does not interpret types again. Decoding is metered
against hostile input: nesting depth and the number of decoded elements (including zero-sized ones
such as ``vec null``) are bounded, and every failure raises :class:`~icws_fast.errors.CandidError`.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from icws_fast.errors import CandidError, DecodeError
from icws_fast.ic.candid.parser import as_types
from icws_fast.ic.candid.readers import (
    PRIM_DECODERS,
    Decoder,
    State,
    const_none,
    dec_blob,
    dec_bool_vec,
    dec_func,
    dec_future,
    dec_principal,
    packed_code,
    packed_vec,
    skip_packed_vec,
)
from icws_fast.ic.candid.types import (
    BOOL,
    EMPTY,
    INT,
    MAX_TYPE_DEPTH,
    NAT,
    NAT8,
    NULL,
    PRINCIPAL,
    RESERVED,
    Field,
    FuncType,
    FutureType,
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
from icws_fast.ic.candid.typetable import MAGIC, read_header
from icws_fast.ic.leb128 import decode_leb128, decode_length, number_text

__all__ = ["ELEMENT_BUDGET_BASE", "ELEMENT_BUDGET_PER_BYTE", "MAX_DEPTH", "decode"]

#: Deepest value nesting a decode accepts (each level costs the decoder about one Python frame).
MAX_DEPTH: Final = 256
#: Element budget of one decode: vector elements and zero-sized records, skipped ones included.
#: Anything that consumes input bytes is already bounded by the input; this bounds the rest.
ELEMENT_BUDGET_BASE: Final = 100_000
ELEMENT_BUDGET_PER_BYTE: Final = 4


class _Mismatch(CandidError):
    """A well-formed value that does not coerce to the expected type (an enclosing ``opt`` recovers)."""


_TOO_DEEP: Final = "Candid value nested too deeply"
_OVER_BUDGET: Final = "Candid message decodes to too many elements"


def _forward_decoder(cell: list[Decoder]) -> Decoder:
    """A decoder for a recursive pair still being compiled; ``cell`` receives the real one."""

    def dec_forward(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        return cell[0](data, pos, st, depth)

    return dec_forward


def _discarding(dec: Decoder) -> Decoder:
    """``dec`` with its value dropped: skipping a value still validates it."""

    def dec_discard(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        return None, dec(data, pos, st, depth)[1]

    return dec_discard


class _MismatchDecoder:
    """The decoder of a (wire, expected) pair that never coerces: it raises :class:`_Mismatch` with ``message``.

    A class, not a closure, so that a record can tell its field's decoder is one and name the field.
    """

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __call__(self, data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        raise _Mismatch(self.message)


def _mismatch(wire: Type, expected: Type, field: str | int | None = None) -> Decoder:
    """A decoder that fails: the types differ (in record field ``field``, when given, by its name)."""
    where = "" if field is None else f"field {field!r}: "
    return _MismatchDecoder(f"{where}a value of type {describe(wire)} does not fit type {describe(expected)}")


def _no_value(wire: Type) -> Decoder:
    message = f"type {describe(wire)} has no values"

    def dec_no_value(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        raise CandidError(message)

    return dec_no_value


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
        self.pairs: dict[tuple[int, int], list[Decoder]] = {}
        self.skips: dict[int, list[Decoder]] = {}
        self.subtypes: dict[tuple[int, int], bool] = {}
        self.depth = 0

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_TYPE_DEPTH:
            raise CandidError("Candid type nested too deeply")

    # -- skipping ------------------------------------------------------------------------
    def skip(self, w: Type) -> Decoder:
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

    def _skip(self, w: Type) -> Decoder:
        if isinstance(w, PrimType):
            if w is EMPTY:
                return _no_value(w)
            if w is RESERVED or w is NULL:
                return const_none
            return _discarding(PRIM_DECODERS[w])  # skipping validates the value like decoding
        if isinstance(w, FutureType):
            return dec_future
        if isinstance(w, FuncType):
            return _discarding(dec_func)
        if isinstance(w, ServiceType):
            return _discarding(dec_principal)
        if isinstance(w, OptType):
            skip_inner = self.skip(w.inner)
            return _opt_value(skip_inner, skip_inner, wrap=False)  # a skipped value is None
        if isinstance(w, VecType):
            code = packed_code(w.inner)
            if code is not None:
                # Every bit pattern of a fixed-width number is valid: jump over the whole vector.
                return skip_packed_vec(struct.calcsize("<" + code))
            return self._vec(self.skip(w.inner), self._min_size(w.inner), as_bytes=False, discard=True)
        if isinstance(w, RecordType):
            return self._record(w, [(None, self.skip(f.type)) for f in w.fields], None, False)
        if isinstance(w, VariantType):
            return self._variant([(None, self.skip(f.type)) for f in w.fields], discard=True)
        raise CandidError(f"unsupported wire type {describe(w)}")

    # -- decoding at an expected type ----------------------------------------------------
    def decoder(self, w: Type, e: Type) -> Decoder:
        e = resolve(e)
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

    def _decoder(self, w: Type, e: Type) -> Decoder:
        if w is EMPTY:
            return _no_value(w)
        if e is RESERVED:
            return self.skip(w)
        if isinstance(e, OptType):
            return self._opt(w, e)
        if isinstance(e, PrimType):
            if w is e or (e is INT and w is NAT):
                return PRIM_DECODERS.get(e, const_none)
            if e is PRINCIPAL and isinstance(w, ServiceType):
                return dec_principal
            return _mismatch(w, e)
        if isinstance(e, VecType) and isinstance(w, VecType):
            return self._vec_at(w, e)
        if isinstance(e, RecordType) and isinstance(w, RecordType):
            return self._record_at(w, e)
        if isinstance(e, VariantType) and isinstance(w, VariantType):
            table: list[tuple[Any, Decoder]] = []
            expected = {f.id: f for f in e.fields}
            unknown_tag: Decoder | None = None
            for wf in w.fields:
                ef = expected.get(wf.id)
                if ef is None:
                    unknown_tag = unknown_tag or _mismatch(w, e)
                    table.append((wf.id, unknown_tag))  # only a value using this tag fails
                else:
                    table.append((ef.key, self.decoder(wf.type, ef.type)))
            return self._variant(table, discard=False)
        if isinstance(e, FuncType) and isinstance(w, FuncType):
            return dec_func if self.subtype(w, e) else _mismatch(w, e)
        if isinstance(e, ServiceType) and isinstance(w, ServiceType):
            return dec_principal if self.subtype(w, e) else _mismatch(w, e)
        return _mismatch(w, e)

    def _opt(self, w: Type, e: OptType) -> Decoder:
        wrap = nullable(e.inner)
        if w is NULL or w is RESERVED:
            return const_none
        if isinstance(w, FutureType):
            return dec_future
        if isinstance(w, OptType):
            return _opt_value(self.decoder(w.inner, e.inner), self.skip(w.inner), wrap)
        # A plain value at an opt type: present if it coerces to the content type, else null.
        inner = self.decoder(w, e.inner)
        skip_value = self.skip(w)

        def dec_as_opt(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            try:
                v, end = inner(data, pos, st, depth + 1)
            except _Mismatch:
                return None, skip_value(data, pos, st, depth + 1)[1]
            return (Some(v) if wrap else v), end

        return dec_as_opt

    def _vec_at(self, w: VecType, e: VecType) -> Decoder:
        wi, ei = w.inner, resolve(e.inner)
        code = packed_code(wi)
        if wi is ei and code is not None:
            return dec_blob if ei is NAT8 else packed_vec(code)
        if wi is BOOL and ei is BOOL:
            return dec_bool_vec
        return self._vec(self.decoder(wi, ei), self._min_size(wi), as_bytes=ei is NAT8, discard=False)

    def _min_size(self, w: Type) -> int:
        """The fewest bytes a value of wire type ``w`` takes: 0 for ``null``, ``reserved`` and zero-sized records."""
        return 0 if w is NULL or w is RESERVED or id(w) in self.zero_sized else 1

    @staticmethod
    def _vec(elem: Decoder, min_size: int, *, as_bytes: bool, discard: bool) -> Decoder:
        def dec_vec(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
            n, pos = decode_length(data, pos, "vector", min_size)
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

    def _record_at(self, w: RecordType, e: RecordType) -> Decoder:
        expected = {f.id: f for f in e.fields}
        steps: list[tuple[Any, Decoder]] = []
        for wf in w.fields:
            ef = expected.pop(wf.id, None)
            if ef is None:
                steps.append((None, self.skip(wf.type)))
            else:
                dec = self.decoder(wf.type, ef.type)
                if isinstance(dec, _MismatchDecoder) and not isinstance(resolve(ef.type), RecordType):
                    dec = _mismatch(wf.type, ef.type, ef.key)  # name the field: the record's type shows hashes
                steps.append((ef.key, dec))
        missing = list(expected.values())
        for ef in missing:
            if not nullable(ef.type):
                return _MismatchDecoder(f"field {ef.key!r} of type {describe(ef.type)} is missing")
        defaults = {ef.key: None for ef in missing}
        return self._record(w, steps, defaults, e.is_tuple, len(e.fields))

    def _record(
        self,
        w: RecordType,
        steps: list[tuple[Any, Decoder]],
        defaults: dict[Any, None] | None,
        as_tuple: bool,
        n_expected: int = 0,
    ) -> Decoder:
        charge = id(w) in self.zero_sized
        keyed = tuple(steps)
        skip_only = defaults is None
        if not (skip_only or as_tuple or charge or defaults) and all(key is not None for key, _ in keyed):
            return _record_exact(keyed)

        def dec_record(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
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
            out: dict[Any, Any] = {}
            for key, f in keyed:
                v, pos = f(data, pos, st, d)
                if key is not None:
                    out[key] = v
            if defaults:
                out.update(defaults)
            if as_tuple:
                return tuple(out[i] for i in range(n_expected)), pos
            return out, pos

        return dec_record

    @staticmethod
    def _variant(table: list[tuple[Any, Decoder]], *, discard: bool) -> Decoder:
        entries = tuple(table)
        n = len(entries)

        def dec_variant(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
            i, pos = decode_leb128(data, pos)
            if i >= n:
                raise CandidError(f"variant index {number_text(i)} out of range")
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            key, f = entries[i]
            v, pos = f(data, pos, st, depth + 1)
            return (None if discard else {key: v}), pos

        return dec_variant

    # -- subtyping (for reference values) ------------------------------------------------
    def subtype(self, w: Type, e: Type) -> bool:
        """``w <: e`` per the specification, coinductively (pairs under test are assumed true)."""
        e = resolve(e)
        w = resolve(w)
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
            elif not nullable(f.type):
                return False
        return True


def _opt_value(inner: Decoder, skip_inner: Decoder, wrap: bool) -> Decoder:
    """An ``opt`` on the wire: null, or a value that reads as null when it does not coerce (``skip_inner``
    then steps over it); ``wrap`` puts a present value in :class:`Some`."""

    def dec_opt(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
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


def _record_exact(keyed: tuple[tuple[Any, Decoder], ...]) -> Decoder:
    """The commonest record decoder: the wire and expected fields are the same, and the record takes bytes.

    Two- and three-field records (a client key, a gateway message) are written out field by field: that
    saves about 6 % of the decode of a ``ws_get_messages`` batch over the loop (instructions counted).
    """
    if len(keyed) == 2:
        (k0, f0), (k1, f1) = keyed

        def dec_record2(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            d = depth + 1
            v0, pos = f0(data, pos, st, d)
            v1, pos = f1(data, pos, st, d)
            return {k0: v0, k1: v1}, pos

        return dec_record2
    if len(keyed) == 3:
        (k0, f0), (k1, f1), (k2, f2) = keyed

        def dec_record3(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
            if depth >= MAX_DEPTH:
                raise CandidError(_TOO_DEEP)
            d = depth + 1
            v0, pos = f0(data, pos, st, d)
            v1, pos = f1(data, pos, st, d)
            v2, pos = f2(data, pos, st, d)
            return {k0: v0, k1: v1, k2: v2}, pos

        return dec_record3

    def dec_record_exact(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        if depth >= MAX_DEPTH:
            raise CandidError(_TOO_DEEP)
        d = depth + 1
        out: dict[Any, Any] = {}
        for key, f in keyed:
            out[key], pos = f(data, pos, st, d)
        return out, pos

    return dec_record_exact


def _positional(types: Sequence[Type]) -> tuple[Field, ...]:
    return tuple(Field(i, i, t) for i, t in enumerate(types))


class _Compiled(NamedTuple):
    header: bytes  # the message bytes after the magic up to the first value
    decoders: tuple[Decoder, ...]


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
        header = read_header(data)
        compiler = _DecoderCompiler(header.table)
        decoders: list[Decoder] = []
        for i, expected in enumerate(self.types):
            if i < len(header.args):
                decoders.append(compiler.decoder(header.args[i], expected))
            elif nullable(expected):
                decoders.append(const_none)  # a missing argument of opt/null/reserved type reads as null
            else:
                raise CandidError(f"missing argument {i} of type {describe(expected)}")
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
    expected = as_types(types)
    raw = bytes(data)
    if not raw.startswith(MAGIC):
        raise CandidError("not a Candid message (no DIDL magic)")
    try:
        compiled = _decode_plan(expected).compiled_for(raw)
        st = State()
        st.budget = ELEMENT_BUDGET_BASE + ELEMENT_BUDGET_PER_BYTE * len(raw)
        pos = 4 + len(compiled.header)
        values: list[Any] = []
        for dec in compiled.decoders:
            value, pos = dec(raw, pos, st, 0)
            values.append(value)
    except _Mismatch as exc:
        raise CandidError(str(exc)) from None
    except CandidError:
        raise
    except DecodeError as exc:  # from icws_fast.ic.leb128 (truncated number, overlong length) or Principal
        raise CandidError(str(exc)) from None
    except (IndexError, struct.error):
        raise CandidError("truncated Candid message") from None
    except RecursionError:
        raise CandidError(_TOO_DEEP) from None
    if pos != len(raw):
        raise CandidError(f"{len(raw) - pos} trailing bytes after the Candid arguments")
    return values[: len(expected)]
