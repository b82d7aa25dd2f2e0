"""CBOR (RFC 8949) as the IC uses it.

Encoding writes the self-describe tag 55799 first (as agents and serde_cbor's
``self_describe()`` do), definite lengths only, map keys in the order given.
Decoding is strict: it accepts the self-describe tag, rejects trailing bytes,
lengths that overshoot the input, nesting deeper than ``max_depth``, duplicate
map keys, bignums over :data:`MAX_BIGNUM_BYTES` and reserved encodings, and raises only
:class:`~icws_fast.errors.CborError`.

Python mapping: ``bytes`` <-> byte string, ``str`` <-> text, ``int`` <-> integer
(bignum tags 2/3 beyond 64 bits), ``list`` <-> array (tuples encode as arrays),
``dict`` <-> map, ``bool``/``None``/``float`` <-> simple values and floats, and
:class:`Tag` for any other tag. A :class:`~icws_fast.ic.principal.Principal`
encodes as its bytes, as serde does in binary formats.
"""

from __future__ import annotations

import struct
from typing import Any, Final, NamedTuple

from icws_fast import _ext
from icws_fast.errors import CborError
from icws_fast.ic.principal import Principal

SELF_DESCRIBE_TAG: Final = 55799
SELF_DESCRIBE_PREFIX: Final = b"\xd9\xd9\xf7"
DEFAULT_MAX_DEPTH: Final = 256
#: Longest bignum magnitude decoded (512 bits; the IC's widest integers are 128 bits). Longer ones are
#: rejected: an int of thousands of digits makes every later str() or f-string of it raise ValueError.
MAX_BIGNUM_BYTES: Final = 64
_BREAK: Final = 0xFF


class Tag(NamedTuple):
    """A tagged value other than self-describe and bignums."""

    tag: int
    value: Any


def write_head(major: int, argument: int) -> bytes:
    """The head of a CBOR item (RFC 8949 section 3) in its shortest form.

    ``major`` is the major type (0-7) and ``argument`` its unsigned argument (an integer's value, a
    string's length in bytes, an array's or a map's count, a tag number), below 2**64. The compiled
    encoders write the same bytes (``head_size`` / ``write_head`` in ``icws_fast/_ext/_cbor.pxd``).
    """
    m = major << 5
    if argument < 24:
        return bytes((m | argument,))
    if argument < 0x100:
        return bytes((m | 24, argument))
    if argument < 0x10000:
        return bytes((m | 25,)) + argument.to_bytes(2, "big")
    if argument < 0x100000000:
        return bytes((m | 26,)) + argument.to_bytes(4, "big")
    return bytes((m | 27,)) + argument.to_bytes(8, "big")


def read_head(data: bytes, pos: int = 0) -> tuple[int, int, int]:
    """``(major type, argument, offset after the head)`` of the definite-length head at ``data[pos]``.

    For code that reads a CBOR structure it knows without decoding it (e.g. where a value lies in a
    frame). :class:`~icws_fast.errors.CborError` when the head is truncated, or when its additional
    information is reserved (28-30) or indefinite (31), with :func:`decode`'s wording.
    """
    end = len(data)
    if pos >= end:
        raise CborError(f"truncated CBOR: need 1 bytes at offset {pos}, have 0")
    ib = data[pos]
    major, info = ib >> 5, ib & 0x1F
    if info < 24:
        return major, info, pos + 1
    if info == 31:
        raise CborError(f"indefinite length at offset {pos} where a definite head is needed")
    if info > 27:
        raise CborError(f"reserved additional information {info} at offset {pos}")
    width = 1 << (info - 24)
    start = pos + 1
    if width > end - start:
        raise CborError(f"truncated CBOR: need {width} bytes at offset {start}, have {end - start}")
    return major, int.from_bytes(data[start : start + width], "big"), start + width


def _encode_into(out: list[bytes], obj: Any) -> None:
    if obj is True:
        out.append(b"\xf5")
    elif obj is False:
        out.append(b"\xf4")
    elif obj is None:
        out.append(b"\xf6")
    elif isinstance(obj, int):
        if 0 <= obj < 1 << 64:
            out.append(write_head(0, obj))
        elif -(1 << 64) <= obj < 0:
            out.append(write_head(1, -1 - obj))
        else:
            tag, mag = (2, obj) if obj >= 0 else (3, -1 - obj)
            raw = mag.to_bytes((mag.bit_length() + 7) // 8, "big")
            out.append(write_head(6, tag) + write_head(2, len(raw)) + raw)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)  # len() of a memoryview counts items, not bytes
        out.append(write_head(2, len(raw)))
        out.append(raw)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out.append(write_head(3, len(raw)))
        out.append(raw)
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, Tag):
        out.append(write_head(4, len(obj)))
        for item in obj:
            _encode_into(out, item)
    elif isinstance(obj, dict):
        out.append(write_head(5, len(obj)))
        for key, value in obj.items():
            _encode_into(out, key)
            _encode_into(out, value)
    elif isinstance(obj, Tag):
        out.append(write_head(6, obj.tag))
        _encode_into(out, obj.value)
    elif isinstance(obj, Principal):
        raw = obj.bytes
        out.append(write_head(2, len(raw)))
        out.append(raw)
    elif isinstance(obj, float):
        out.append(b"\xfb" + struct.pack(">d", obj))
    else:
        raise TypeError(f"cannot CBOR-encode {type(obj).__name__}")


def encode_pure(obj: Any, *, self_describe: bool = True) -> bytes:
    """Encode ``obj``; prefix the self-describe tag unless ``self_describe`` is false."""
    out: list[bytes] = [SELF_DESCRIBE_PREFIX] if self_describe else []
    _encode_into(out, obj)
    return b"".join(out)


class _Decoder:
    __slots__ = ("data", "end", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.max_depth = max_depth

    def _need(self, n: int) -> int:
        start = self.pos
        if n > self.end - start:
            raise CborError(f"truncated CBOR: need {n} bytes at offset {start}, have {self.end - start}")
        self.pos = start + n
        return start

    def _argument(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            return self.data[self._need(1)]
        if info == 25:
            p = self._need(2)
            return int.from_bytes(self.data[p : p + 2], "big")
        if info == 26:
            p = self._need(4)
            return int.from_bytes(self.data[p : p + 4], "big")
        if info == 27:
            p = self._need(8)
            return int.from_bytes(self.data[p : p + 8], "big")
        raise CborError(f"reserved additional information {info} at offset {self.pos - 1}")

    def _chunks(self, major: int) -> bytes:
        parts: list[bytes] = []
        while True:
            ib = self.data[self._need(1)]
            if ib == _BREAK:
                return b"".join(parts)
            if ib >> 5 != major or ib & 0x1F == 31:
                raise CborError("bad chunk in indefinite-length string")
            n = self._argument(ib & 0x1F)
            p = self._need(n)
            parts.append(self.data[p : p + n])

    def item(self, depth: int) -> Any:
        if depth > self.max_depth:
            raise CborError(f"CBOR nested deeper than {self.max_depth}")
        ib = self.data[self._need(1)]
        major, info = ib >> 5, ib & 0x1F
        if major == 0:
            return self._argument(info)
        if major == 1:
            return -1 - self._argument(info)
        if major in (2, 3):
            if info == 31:
                raw = self._chunks(major)
            else:
                n = self._argument(info)
                p = self._need(n)
                raw = self.data[p : p + n]
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CborError(f"invalid UTF-8 in CBOR text: {exc}") from None
        if major == 4:
            if info == 31:
                items = []
                while self._peek_not_break():
                    items.append(self.item(depth + 1))
                return items
            n = self._argument(info)
            if n > self.end - self.pos:
                raise CborError(f"array of {n} items overshoots the input")
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            result: dict[Any, Any] = {}
            if info == 31:
                while self._peek_not_break():
                    self._map_entry(result, depth)
                return result
            n = self._argument(info)
            if 2 * n > self.end - self.pos:
                raise CborError(f"map of {n} entries overshoots the input")
            for _ in range(n):
                self._map_entry(result, depth)
            return result
        if major == 6:
            tag = self._argument(info)
            if tag == SELF_DESCRIBE_TAG:
                return self.item(depth + 1)
            value = self.item(depth + 1)
            if tag in (2, 3):
                if not isinstance(value, bytes):
                    raise CborError("bignum tag must wrap a byte string")
                if len(value) > MAX_BIGNUM_BYTES:
                    raise CborError(f"bignum of {len(value)} bytes is over the limit of {MAX_BIGNUM_BYTES}")
                mag = int.from_bytes(value, "big")
                return mag if tag == 2 else -1 - mag
            return Tag(tag, value)
        # major 7
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            p = self._need(2)
            return struct.unpack(">e", self.data[p : p + 2])[0]
        if info == 26:
            p = self._need(4)
            return struct.unpack(">f", self.data[p : p + 4])[0]
        if info == 27:
            p = self._need(8)
            return struct.unpack(">d", self.data[p : p + 8])[0]
        if info == 31:
            raise CborError(f"unexpected break at offset {self.pos - 1}")
        raise CborError(f"unsupported simple value {info} at offset {self.pos - 1}")

    def _peek_not_break(self) -> bool:
        if self.pos >= self.end:
            raise CborError("truncated indefinite-length item")
        if self.data[self.pos] == _BREAK:
            self.pos += 1
            return False
        return True

    def _map_entry(self, result: dict[Any, Any], depth: int) -> None:
        key = self.item(depth + 1)
        if not isinstance(key, (str, bytes, int)):
            raise CborError(f"unsupported CBOR map key type {type(key).__name__}")
        if key in result:
            raise CborError(f"duplicate CBOR map key {key!r}")
        result[key] = self.item(depth + 1)


def decode_pure(data: bytes | bytearray | memoryview, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode exactly one CBOR item; trailing bytes are an error."""
    dec = _Decoder(bytes(data), max_depth)
    try:
        value = dec.item(0)
    except RecursionError:
        raise CborError("CBOR nested too deeply") from None
    if dec.pos != dec.end:
        raise CborError(f"{dec.end - dec.pos} trailing bytes after CBOR item")
    return value


# The compiled twins (icws_fast/_ext/_cbor.pyx) take over unless ICWS_FAST_PURE=1.
decode = _ext.twin("_cbor", decode_pure)
encode = _ext.twin("_cbor", encode_pure)
