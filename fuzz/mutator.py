"""A structure-aware mutator: decode the input as CBOR, change its structure, encode it again.

Random byte flips rarely get past a CBOR decoder to the code that reads the decoded
values. This mutator keeps inputs well-formed (most of the time) and changes what a
field holds: a value of every other CBOR type, huge and boundary integers, long and
empty strings, dropped, duplicated and renamed map keys, deeper nesting; byte strings
that are CBOR themselves (certificates, trees, message contents) are mutated the same
way. The encoder can also write what the project's own encoder never does: duplicate
map keys, overlong heads, indefinite lengths, bignums of any size. Inputs that are not
CBOR (Candid, truncated bytes) and one mutation in four go to libFuzzer's byte mutator.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from icws_fast.errors import CborError
from icws_fast.ic import cbor

_SELF_DESCRIBE = cbor.SELF_DESCRIBE_PREFIX
_MAX_NEST = 270  # past the decoders' depth limits (CBOR 256, hash tree 256), so those limits are hit
_MAX_SLOTS = 5000  # a value duplicated by reference is walked once per reference: bound the walk
ByteMutator = Callable[[bytes, int], bytes]


class CMap:
    """A CBOR map as an ordered list of entries, so that a key can appear twice."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[list[Any]]) -> None:
        self.entries = entries


class CTag:
    """A CBOR tag whose content can be replaced in place."""

    __slots__ = ("holder", "tag")

    def __init__(self, tag: int, value: Any) -> None:
        self.tag = tag
        self.holder = [value]


def _model(value: Any) -> Any:
    """The decoded value with maps as :class:`CMap` (mutable, duplicate keys allowed)."""
    if isinstance(value, dict):
        return CMap([[_model(k), _model(v)] for k, v in value.items()])
    if isinstance(value, list):
        return [_model(v) for v in value]
    if isinstance(value, cbor.Tag):
        return CTag(value.tag, _model(value.value))
    return value


def _head(major: int, n: int, rng: random.Random) -> bytes:
    """A CBOR head; one in 40 is overlong (a wider argument than needed), which strict decoders may refuse."""
    m = major << 5
    if n < 24 and rng.random() > 0.025:
        return bytes((m | n,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width) and (n >= 1 << (4 * width) or rng.random() > 0.025 or width == 8):
            return bytes((m | info,)) + n.to_bytes(width, "big")
    raise ValueError(f"CBOR argument {n} does not fit 64 bits")


class _TooBig(Exception):
    """The encoding outgrew the size limit (duplicated references can grow a value exponentially)."""


def encode(value: Any, rng: random.Random, max_len: int) -> bytes | None:
    """Encode a model value, rarely with indefinite lengths or overlong heads; None if over ``max_len`` bytes."""
    out: list[bytes] = []
    try:
        _encode_into(out, value, rng, [max_len])
    except (_TooBig, RecursionError):  # too long, or nested past what this recursive encoder can write
        return None
    return b"".join(out)


def _encode_into(out: list[bytes], v: Any, rng: random.Random, budget: list[int]) -> None:
    budget[0] -= 9 + (len(v) if isinstance(v, (bytes, str)) else 0)
    if budget[0] < 0:
        raise _TooBig
    indefinite = rng.random() < 0.02
    if v is True or v is False or v is None:
        out.append({True: b"\xf5", False: b"\xf4", None: b"\xf6"}[v])
    elif isinstance(v, int):
        if 0 <= v < 1 << 64:
            out.append(_head(0, v, rng))
        elif -(1 << 64) <= v < 0:
            out.append(_head(1, -1 - v, rng))
        else:
            tag, mag = (2, v) if v >= 0 else (3, -1 - v)
            raw = mag.to_bytes((mag.bit_length() + 7) // 8, "big")
            out.append(_head(6, tag, rng) + _head(2, len(raw), rng) + raw)
    elif isinstance(v, float):
        out.append(b"\xfb" + struct.pack(">d", v))
    elif isinstance(v, (bytes, str)):
        major = 2 if isinstance(v, bytes) else 3
        raw = v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass")
        if indefinite and raw:
            cut = rng.randrange(len(raw) + 1)
            out.append(bytes((major << 5 | 31,)))
            for part in (raw[:cut], raw[cut:]):
                out.append(_head(major, len(part), rng) + part)
            out.append(b"\xff")
        else:
            out.append(_head(major, len(raw), rng) + raw)
    elif isinstance(v, CTag):
        out.append(_head(6, v.tag, rng))
        _encode_into(out, v.holder[0], rng, budget)
    elif isinstance(v, list):
        out.append(b"\x9f" if indefinite else _head(4, len(v), rng))
        for item in v:
            _encode_into(out, item, rng, budget)
        if indefinite:
            out.append(b"\xff")
    elif isinstance(v, CMap):
        out.append(b"\xbf" if indefinite else _head(5, len(v.entries), rng))
        for key, item in v.entries:
            _encode_into(out, key, rng, budget)
            _encode_into(out, item, rng, budget)
        if indefinite:
            out.append(b"\xff")
    else:
        raise TypeError(f"no CBOR model for {type(v).__name__}")


_HUGE_INTS = (
    (1 << 64) - 1,
    1 << 64,
    -(1 << 64),
    -(1 << 64) - 1,
    (1 << 63) - 1,
    1 << 63,
    -(1 << 63) - 1,
    (1 << 32) - 1,
    1 << 128,
    (1 << 512) - 1,
    1 << 520,
    -(1 << 600),
)
_FLOATS = (0.0, -0.0, 1.5, float("nan"), float("inf"), float("-inf"), 1e308)


def _random_value(rng: random.Random, keys: list[Any], max_len: int) -> Any:
    """A value of a randomly chosen CBOR type (and, for containers, a small random content)."""
    kind = rng.randrange(13)
    if kind == 0:
        return rng.choice((0, 1, 23, 24, 255, 256, 65535, 65536))
    if kind == 1:
        return rng.choice(_HUGE_INTS)
    if kind == 2:
        return -rng.randrange(1, 1000)
    if kind == 3:
        return rng.choice(_FLOATS)
    if kind == 4:
        return rng.choice((True, False, None))
    if kind == 5:
        return rng.choice((b"", bytes(32), bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))))
    if kind == 6:
        return b"\xab" * rng.randrange(max_len // 2 + 1)
    if kind == 7:
        return rng.choice(("", "\u00e9", "\U0001f600", "x" * rng.randrange(300), "\udc80"))
    if kind == 8:
        return rng.choice(keys) if keys else "content"
    if kind == 9:
        return [_random_value(rng, keys, max_len // 4) for _ in range(rng.randrange(3))]
    if kind == 10:
        return CMap([[rng.choice(keys) if keys else "k", _random_value(rng, keys, max_len // 4)]])
    if kind == 11:
        return CTag(rng.choice((0, 1, 2, 3, 4, 24, 55799, 1 << 40)), _random_value(rng, keys, max_len // 4))
    return CMap([])


def _slots(root: list[Any]) -> tuple[list[tuple[list[Any], int]], list[Any]]:
    """Every (container, index) whose value can be replaced, and the map keys seen on the way.

    ``root`` is a one-item holder list. Mutations reuse the input's keys so that values land
    under names the parser reads.
    """
    slots: list[tuple[list[Any], int]] = []
    keys: list[Any] = []
    stack: list[tuple[list[Any], int]] = [(root, 0)]
    while stack and len(slots) < _MAX_SLOTS:
        container, index = stack.pop()
        slots.append((container, index))
        value = container[index]
        if isinstance(value, list):
            stack.extend((value, i) for i in range(len(value)))
        elif isinstance(value, CMap):
            for entry in value.entries:
                keys.append(entry[0])
                stack.append((entry, 0))
                stack.append((entry, 1))
        elif isinstance(value, CTag):
            stack.append((value.holder, 0))
    return slots, keys


def _mutate_slot(value: Any, rng: random.Random, keys: list[Any], max_len: int, byte_mutate: ByteMutator) -> Any:
    """``value`` changed in one way: replaced by another type, nested, or edited according to its own type."""
    op = rng.randrange(10)
    if op <= 2:
        return _random_value(rng, keys, max_len)
    if op == 3:  # nest deeper
        depth = rng.choice((1, 2, 8, _MAX_NEST))
        for _ in range(depth):
            value = rng.choice(([value], CMap([["envelope", value]]), CTag(55799, value)))
        return value
    if isinstance(value, CMap) and value.entries:
        entries = value.entries
        i = rng.randrange(len(entries))
        if op == 4:
            del entries[i]
        elif op == 5:
            entries.insert(i, [entries[i][0], _random_value(rng, keys, max_len)])  # duplicate key
        elif op == 6:
            key = entries[i][0]
            entries[i][0] = (
                key.encode("utf-8", "surrogatepass") if isinstance(key, str) else rng.choice(keys) if keys else 0
            )
        elif op == 7:
            entries.append([rng.choice(keys) if keys else "x", _random_value(rng, keys, max_len)])
        else:
            rng.shuffle(entries)
        return value
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        if op == 4:
            del value[i]
        elif op == 5:
            value.insert(i, value[i])
        elif op == 6:
            value.extend(value[: rng.randrange(1, 4)] * rng.choice((1, 100)))
        else:
            rng.shuffle(value)
        return value
    if isinstance(value, bytes):
        return mutate_bytes(value, max_len, rng, byte_mutate)
    if isinstance(value, str):
        raw = byte_mutate(value.encode("utf-8", "surrogatepass"), len(value) + 16)
        return raw.decode("utf-8", "replace") if rng.random() < 0.8 else raw
    if isinstance(value, int) and not isinstance(value, bool):
        return rng.choice((value + 1, value - 1, -value, value << 64, value ^ (1 << rng.randrange(64))))
    return _random_value(rng, keys, max_len)


def mutate_bytes(data: bytes, max_len: int, rng: random.Random, byte_mutate: ByteMutator) -> bytes:
    """A byte string that is CBOR (e.g. an embedded certificate) is mutated as CBOR, any other byte-wise."""
    if data and rng.random() < 0.7:
        mutated = mutate_cbor(data, max_len, rng, byte_mutate)
        if mutated is not None:
            return mutated
    return byte_mutate(data, max(max_len, len(data)))


def mutate_cbor(data: bytes, max_len: int, rng: random.Random, byte_mutate: ByteMutator) -> bytes | None:
    """``data`` decoded, changed in one to three places and encoded again; None if it is not CBOR."""
    try:
        decoded = cbor.decode_pure(data, max_depth=_MAX_NEST + 16)
    except CborError:
        return None
    root = [_model(decoded)]
    for _ in range(rng.randint(1, 3)):
        slots, keys = _slots(root)
        container, index = rng.choice(slots)
        container[index] = _mutate_slot(container[index], rng, keys, max_len, byte_mutate)
    prefix = _SELF_DESCRIBE if data.startswith(_SELF_DESCRIBE) and rng.random() < 0.9 else b""
    encoded = encode(root[0], rng, max_len - len(prefix))
    return None if encoded is None else prefix + encoded


def custom_mutator(prefix: int, byte_mutate: ByteMutator) -> Callable[[bytes, int, int], bytes]:
    """An atheris ``custom_mutator`` for inputs of ``prefix`` mode bytes followed by CBOR.

    ``byte_mutate`` is libFuzzer's own mutator (``atheris.Mutate``).
    """

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if len(data) > prefix and rng.random() < 0.75:
            head = data[:prefix]
            if prefix and rng.random() < 0.1:
                head = bytes(rng.randrange(256) for _ in range(prefix))
            body = mutate_cbor(data[prefix:], max_size - prefix, rng, byte_mutate)
            if body is not None and len(head) + len(body) <= max_size:
                return head + body
        return byte_mutate(data, max_size)

    return mutator
