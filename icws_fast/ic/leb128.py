"""LEB128, the variable-length integers of Candid and of the IC state tree (``/time``, ``reject_code``).

One encoder and one decoder per signedness serve every module. The decoders take hostile input:
they run in time linear in the number's length (however long) and raise
:class:`~icws_fast.errors.DecodeError` on a truncated number, never ``IndexError``.
"""

from __future__ import annotations

import re
from typing import Final

from icws_fast.errors import DecodeError

__all__ = ["decode_leb128", "decode_length", "decode_sleb128", "leb128", "leb128_value", "number_text", "sleb128"]

_END: Final = re.compile(rb"[\x00-\x7f]")
_LOW7: Final = bytes(b & 0x7F for b in range(256))
_BITS7: Final = tuple(f"{i:07b}" for i in range(128))
_TRUNCATED: Final = "truncated LEB128 number"


_ONE_BYTE: Final = tuple(bytes((i,)) for i in range(0x80))


def leb128(n: int) -> bytes:
    """Unsigned LEB128 of a non-negative integer."""
    # Short cuts for one and two bytes: Candid writes a count or length before every vector, text and blob.
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    if 0x80 <= n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0:
        raise ValueError("leb128 takes a non-negative integer")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb128(n: int) -> bytes:
    """Signed LEB128 of an integer."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def decode_leb128(data: bytes, pos: int = 0) -> tuple[int, int]:
    """The unsigned LEB128 number at ``data[pos:]``: ``(value, end)``, ``end`` the index after its last byte."""
    try:
        first = data[pos]
        if first < 0x80:
            return first, pos + 1
        second = data[pos + 1]
        if second < 0x80:  # two bytes: lengths of 128 bytes to 16 KiB, the common case after one byte
            return (first & 0x7F) | second << 7, pos + 2
    except IndexError:
        raise DecodeError(_TRUNCATED) from None
    m = _END.search(data, pos)
    if m is None:
        raise DecodeError(_TRUNCATED)
    end = m.end()
    if end - pos <= 9:
        value, shift = 0, 0
        for byte in data[pos:end]:
            value |= (byte & 0x7F) << shift
            shift += 7
        return value, end
    # Long numbers: shifting into a growing int is quadratic in the length, so join the 7-bit groups
    # as binary text instead, which int() parses in linear time.
    digits = data[pos:end].translate(_LOW7)[::-1]
    return int("".join(map(_BITS7.__getitem__, digits)), 2), end


def decode_length(data: bytes, pos: int, what: str, item_size: int = 1) -> tuple[int, int]:
    """The length prefix at ``data[pos:]``: a LEB128 count of ``item_size``-byte items that must fit in
    the rest of ``data``. Returns ``(count, start)``, ``start`` the index of the first item.

    Raises :class:`~icws_fast.errors.DecodeError` naming ``what`` (e.g. ``"text"``) when the items
    would run past the end of ``data``, so a hostile length is refused before anything is allocated.
    """
    # One and two bytes inline (lengths below 16 KiB): this runs for every text, blob and vector.
    try:
        n = data[pos]
        if n < 0x80:
            pos += 1
        else:
            second = data[pos + 1]
            if second < 0x80:
                n = (n & 0x7F) | second << 7
                pos += 2
            else:
                n, pos = decode_leb128(data, pos)
    except IndexError:
        raise DecodeError(_TRUNCATED) from None
    if n * item_size > len(data) - pos:
        raise DecodeError(f"{what} of length {number_text(n)} overshoots the input ({len(data) - pos} bytes left)")
    return n, pos


def decode_sleb128(data: bytes, pos: int = 0) -> tuple[int, int]:
    """The signed LEB128 number at ``data[pos:]``: ``(value, end)``."""
    value, end = decode_leb128(data, pos)
    if data[end - 1] & 0x40:
        value -= 1 << (7 * (end - pos))
    return value, end


def number_text(n: int) -> str:
    """``n`` for an error message. A few kilobytes of LEB128 encode a number too long for ``str()``
    (Python refuses int-to-text beyond 4300 digits with ``ValueError``), so such numbers show as their size."""
    return str(n) if n.bit_length() <= 128 else f"a {n.bit_length()}-bit number"


def leb128_value(data: bytes) -> int:
    """The unsigned LEB128 number that fills ``data`` exactly (a leaf such as ``/time``)."""
    value, end = decode_leb128(data)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing bytes after a LEB128 number")
    return value
