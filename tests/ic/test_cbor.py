"""CBOR: known encodings, round trips, cross-checks with cbor2, and hostile bytes."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Mapping
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import CborError
from icws_fast.ic import cbor
from icws_fast.ic.principal import Principal
from tests.vectors import load_vectors

# RFC 8949 appendix A examples (value, encoding without the self-describe tag).
RFC_EXAMPLES: list[tuple[Any, str]] = [
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (18446744073709551616, "c249010000000000000000"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-18446744073709551617, "c349010000000000000000"),
    (-1, "20"),
    (-1000, "3903e7"),
    (1.1, "fb3ff199999999999a"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("IETF", "6449455446"),
    ("\u00fc", "62c3bc"),
    ([], "80"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (cbor.Tag(1, 1363896240), "c11a514b67b0"),
]

# Decoding-only examples: indefinite lengths and short floats.
RFC_DECODE_ONLY: list[tuple[Any, str]] = [
    (b"\x01\x02\x03\x04\x05", "5f42010243030405ff"),
    ("streaming", "7f657374726561646d696e67ff"),
    ([1, [2, 3], [4, 5]], "9f018202039f0405ffff"),
    ({"a": 1, "b": [2, 3]}, "bf61610161629f0203ffff"),
    (1.5, "f93e00"),
    (100000.0, "fa47c35000"),
    (-4.0, "f9c400"),
]


@pytest.mark.parametrize(("value", "hex_"), RFC_EXAMPLES)
def test_rfc_examples(value: Any, hex_: str) -> None:
    assert cbor.encode(value, self_describe=False).hex() == hex_
    assert cbor.encode(value) == cbor.SELF_DESCRIBE_PREFIX + bytes.fromhex(hex_)
    assert cbor.decode(bytes.fromhex(hex_)) == value
    assert cbor.decode(cbor.SELF_DESCRIBE_PREFIX + bytes.fromhex(hex_)) == value


@pytest.mark.parametrize(("value", "hex_"), RFC_DECODE_ONLY)
def test_rfc_decode_only(value: Any, hex_: str) -> None:
    assert cbor.decode(bytes.fromhex(hex_)) == value


def test_nan_and_infinity() -> None:
    assert math.isnan(cbor.decode(bytes.fromhex("f97e00")))
    assert cbor.decode(bytes.fromhex("f97c00")) == math.inf


def test_tuples_and_principals_encode_as_arrays_and_bytes() -> None:
    principal = Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
    assert cbor.decode(cbor.encode((1, principal))) == [1, principal.bytes]


def test_unencodable_type() -> None:
    with pytest.raises(TypeError):
        cbor.encode({1, 2})


@pytest.mark.parametrize(
    ("hex_", "why"),
    [
        ("", "empty"),
        ("1b0000", "truncated argument"),
        ("45010203", "byte string overshoots"),
        ("9a00010000", "array overshoots"),
        ("bb00000000ffffffff", "map overshoots"),
        ("1c", "reserved additional information"),
        ("0000", "trailing byte"),
        ("ff", "lone break"),
        ("62c328", "invalid UTF-8"),
        ("a2616101616102", "duplicate key"),
        ("a1f601", "null as map key"),
        ("a18001", "array as map key"),
        ("c2a0", "bignum of a map"),
        ("5f6161ff", "text chunk in a byte string"),
        ("5f5f4100ffff", "nested indefinite chunk"),
        ("9f01", "unterminated indefinite array"),
        ("f0", "unassigned simple value"),
        ("f818", "one-byte simple value"),
        ("d9d9f7", "tag without a value"),
    ],
)
def test_malformed(hex_: str, why: str) -> None:
    with pytest.raises(CborError):
        cbor.decode(bytes.fromhex(hex_))


def test_depth_limit() -> None:
    deep = b"\x81" * 300 + b"\x00"
    with pytest.raises(CborError):
        cbor.decode(deep)
    assert cbor.decode(deep, max_depth=400) is not None
    with pytest.raises(CborError):
        cbor.decode(b"\x81" * 50000 + b"\x00", max_depth=100000)
    nested_maps = b"\xa1\x00" * 300 + b"\x00"
    with pytest.raises(CborError):
        cbor.decode(nested_maps)


def test_huge_declared_lengths_do_not_allocate() -> None:
    for head in ("5b", "7b", "9b", "bb"):
        with pytest.raises(CborError):
            cbor.decode(bytes.fromhex(head + "7fffffffffffffff"))


# Values CBOR round-trips exactly (no floats: NaN breaks equality; no tuples: they decode as lists).
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 80), max_value=1 << 80)
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
_keys = st.integers(min_value=-(1 << 70), max_value=1 << 70) | st.binary(max_size=8) | st.text(max_size=8)
VALUES = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=30,
)


def _plain(value: Any) -> Any:
    """cbor2 may decode arrays as tuples and maps as immutable mappings: compare as lists and dicts."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_round_trip_and_cbor2_agreement(value: Any) -> None:
    encoded = cbor.encode(value)
    assert cbor.decode(encoded) == value
    # cbor2 is an independent implementation: it must read our bytes and we must read its bytes.
    assert _plain(cbor2.loads(encoded)) == value
    assert cbor.decode(cbor2.dumps(value)) == value


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False))
def test_float_round_trip(value: float) -> None:
    assert cbor.decode(cbor.encode(value)) == value
    assert cbor.decode(cbor2.dumps(value)) == value


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_cbor_error(data: bytes) -> None:
    with contextlib.suppress(CborError):
        cbor.decode(data)


def _corpus() -> list[bytes]:
    """Real CBOR from the shared vectors: envelopes and certificates."""
    out = [bytes.fromhex(r["envelope_cbor_hex"]) for r in load_vectors("envelopes") if "envelope_cbor_hex" in r]
    out += [bytes.fromhex(r["cbor_hex"]) for r in load_vectors("certificates")[:4]]
    return out


def test_vector_cbor_decodes_and_matches_cbor2() -> None:
    for data in _corpus():
        ours = cbor.decode(data)
        theirs = _plain(cbor2.loads(data))
        assert ours == theirs
        assert cbor.decode(cbor.encode(ours)) == ours


def test_mutated_real_cbor_raises_only_cbor_error() -> None:
    rng = random.Random(55799)
    for data in _corpus():
        for _ in range(300):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                if not mutated:
                    break
                choice = rng.randrange(3)
                pos = rng.randrange(len(mutated))
                if choice == 0:
                    mutated[pos] = rng.randrange(256)
                elif choice == 1:
                    del mutated[pos:]
                else:
                    mutated.insert(pos, rng.randrange(256))
            with contextlib.suppress(CborError):
                cbor.decode(bytes(mutated))


HEAD_ARGUMENTS = [(0, 1), (23, 1), (24, 2), (255, 2), (256, 3), (65535, 3), (65536, 5), (2**32 - 1, 5), (2**32, 9)]
HEAD_ARGUMENTS += [(2**64 - 1, 9)]


@pytest.mark.parametrize("major", range(8))
@pytest.mark.parametrize(("argument", "size"), HEAD_ARGUMENTS)
def test_write_head_is_shortest_and_read_head_reads_it(major: int, argument: int, size: int) -> None:
    head = cbor.write_head(major, argument)
    assert len(head) == size
    assert head[0] >> 5 == major
    assert cbor.read_head(b"\x00" + head + b"rest", 1) == (major, argument, 1 + size)
    if major == 0:
        # The encoders (the compiled one's shared C head writer included) write the same heads.
        assert cbor.encode(argument, self_describe=False) == head == cbor2.dumps(argument)
    for cut in range(size):
        with pytest.raises(CborError, match="truncated CBOR"):
            cbor.read_head(head[:cut])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x5f", "indefinite length at offset 0"),
        (b"\xbf", "indefinite length at offset 0"),
        (b"\x1c", "reserved additional information 28 at offset 0"),
        (b"\x7e", "reserved additional information 30 at offset 0"),
        (b"", "truncated CBOR: need 1 bytes at offset 0, have 0"),
        (b"\x19\x01", "truncated CBOR: need 2 bytes at offset 1, have 1"),
    ],
)
def test_read_head_rejects_what_has_no_definite_argument(data: bytes, message: str) -> None:
    with pytest.raises(CborError, match=message):
        cbor.read_head(data)
