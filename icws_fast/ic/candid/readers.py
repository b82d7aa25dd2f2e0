"""The leaf readers of the decoder: values whose reading needs no other decoder.

Every reader has the decoder signature ``(data, pos, state, depth) -> (value, end)``: primitives, references
(principal, func), future values, and vectors of fixed-width numbers read in one step. Lengths are read with
:func:`~icws_fast.ic.leb128.decode_length`, which refuses any that would run past the message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from icws_fast.errors import CandidError
from icws_fast.ic.candid.types import (
    BOOL,
    FIXED_WIDTH,
    FLOATS,
    INT,
    NAT,
    NULL,
    PRINCIPAL,
    TEXT,
    FuncRef,
    PrimType,
    Type,
)
from icws_fast.ic.leb128 import decode_leb128, decode_length, decode_sleb128
from icws_fast.ic.principal import MAX_LENGTH as PRINCIPAL_MAX_LENGTH
from icws_fast.ic.principal import Principal

__all__ = [
    "PRIM_DECODERS",
    "Decoder",
    "State",
    "const_none",
    "dec_blob",
    "dec_bool_vec",
    "dec_func",
    "dec_future",
    "dec_principal",
    "packed_code",
    "packed_vec",
    "skip_packed_vec",
]


class State:
    """Per-call mutable state: the remaining element budget."""

    # No __init__: the caller sets ``budget``, which spares a Python call on every decode.
    __slots__ = ("budget",)
    budget: int


#: ``(data, pos, state, depth) -> (value, end)``: reads one value at ``data[pos:]``, ``depth`` levels deep.
Decoder: TypeAlias = Callable[[bytes, int, State, int], tuple[Any, int]]


def const_none(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    """``null`` and ``reserved``: no bytes, the value ``None``."""
    return None, pos


def dec_bool(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    b = data[pos]
    if b > 1:
        raise CandidError(f"invalid bool byte {b}")
    return b == 1, pos + 1


def dec_nat(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    return decode_leb128(data, pos)


def dec_int(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    b = data[pos]
    if b < 0x80:
        return (b - 0x80 if b & 0x40 else b), pos + 1
    return decode_sleb128(data, pos)


def _struct_decoder(code: str) -> Decoder:
    s = struct.Struct("<" + code)
    unpack_from = s.unpack_from
    size = s.size

    def dec_fixed(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        return unpack_from(data, pos)[0], pos + size

    return dec_fixed


def dec_text(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    n, pos = decode_length(data, pos, "text")
    end = pos + n
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise CandidError("text is not valid UTF-8") from None


def dec_principal(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    if data[pos] != 1:
        raise CandidError("opaque or malformed principal reference")
    n, pos = decode_length(data, pos + 1, "principal")
    if n > PRINCIPAL_MAX_LENGTH:
        raise CandidError(f"principal of {n} bytes is longer than {PRINCIPAL_MAX_LENGTH}")
    end = pos + n
    return Principal(data[pos:end]), end


def dec_func(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    if data[pos] != 1:
        raise CandidError("opaque or malformed func reference")
    principal, pos = dec_principal(data, pos + 1, st, depth)
    method, pos = dec_text(data, pos, st, depth)
    return FuncRef(principal, method), pos


def dec_future(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    # Two counts, then the bytes: the first count is the length, so it is checked after the second.
    m, pos = decode_leb128(data, pos)
    _refs, pos = decode_leb128(data, pos)
    end = pos + m
    if end > len(data):
        raise CandidError("future value overshoots the message")
    return None, end


PRIM_DECODERS: Final[dict[PrimType, Decoder]] = {
    NULL: const_none,
    BOOL: dec_bool,
    NAT: dec_nat,
    INT: dec_int,
    TEXT: dec_text,
    PRINCIPAL: dec_principal,
    **{t: _struct_decoder(code) for t, (code, _lo, _hi) in FIXED_WIDTH.items()},
    **{t: _struct_decoder(code) for t, code in FLOATS.items()},
}


def packed_code(t: Type) -> str | None:
    """The struct letter of a fixed-width number type, else None."""
    if not isinstance(t, PrimType):
        return None
    if t in FIXED_WIDTH:
        return FIXED_WIDTH[t][0]
    return FLOATS.get(t)


def dec_blob(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    """``vec nat8`` as ``bytes``, sliced in one step."""
    n, pos = decode_length(data, pos, "blob")
    end = pos + n
    return data[pos:end], end


def packed_vec(code: str) -> Decoder:
    """A vector of fixed-width numbers (struct letter ``code``) as a list, unpacked in one step."""
    size = struct.calcsize("<" + code)

    def dec_packed(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        n, pos = decode_length(data, pos, "vector", size)
        return list(struct.unpack_from(f"<{n}{code}", data, pos)), pos + n * size

    return dec_packed


def skip_packed_vec(size: int) -> Decoder:
    """Skips a vector of ``size``-byte numbers: every bit pattern is valid, so it jumps over the whole vector."""

    def skip_packed(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
        n, pos = decode_length(data, pos, "vector", size)
        return None, pos + n * size

    return skip_packed


def dec_bool_vec(data: bytes, pos: int, st: State, depth: int) -> tuple[Any, int]:
    """``vec bool`` checked and read in one step."""
    n, pos = decode_length(data, pos, "vector")
    end = pos + n
    chunk = data[pos:end]
    if chunk.translate(None, b"\x00\x01"):
        raise CandidError("invalid bool byte in vector")
    return [b == 1 for b in chunk], end
