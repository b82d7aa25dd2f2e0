"""Request ids and the representation-independent hash: shared vectors, spec examples, LEB128."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import REQUEST_DOMAIN, SignedInt, hash_of_map, hash_value, leb128, request_id, sleb128
from tests.vectors import load_vectors

RECORDS = load_vectors("request_ids")


def typed_value(typed: dict[str, Any]) -> Any:
    """The Python value of a vector's typed value (``{"blob": hex}``, ``{"nat": n}``, ...)."""
    ((kind, value),) = typed.items()
    if kind == "blob":
        return bytes.fromhex(value)
    if kind == "text":
        return value
    if kind == "nat":
        return value
    if kind == "int":
        return SignedInt(value)
    if kind == "array":
        return [typed_value(v) for v in value]
    if kind == "map":
        return typed_map(value)
    raise AssertionError(f"unknown typed value kind {kind}")


def typed_map(content: dict[str, Any]) -> dict[str, Any]:
    return {key: typed_value(value) for key, value in content.items()}


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_vector(record: dict[str, Any]) -> None:
    content = typed_map(record["content"])
    assert request_id(content).hex() == record["request_id"]
    assert hash_of_map(content) == request_id(content)
    for (key_hash, value_hash), key in zip(record.get("field_hashes", []), content, strict=False):
        assert hashlib.sha256(key.encode()).hexdigest() == key_hash
        assert hash_value(content[key]).hex() == value_hash


def test_domain() -> None:
    assert REQUEST_DOMAIN == b"\x0aic-request"
    assert len(REQUEST_DOMAIN) == 11


def test_spec_nested_map_example() -> None:
    # hash_of_map({"reply": {"arg": "DIDL\x00\x00"}}) as the spec spells it out.
    sha = lambda b: hashlib.sha256(b).digest()  # noqa: E731
    inner = sha(sha(b"arg") + sha(b"DIDL\x00\x00"))
    expected = sha(sha(b"reply") + inner)
    assert hash_of_map({"reply": {"arg": b"DIDL\x00\x00"}}) == expected


def test_none_values_are_omitted_and_principals_hash_as_bytes() -> None:
    principal = Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
    assert hash_of_map({"a": b"x", "nonce": None}) == hash_of_map({"a": b"x"})
    assert hash_of_map({"p": principal}) == hash_of_map({"p": principal.bytes})
    assert hash_value(("a", b"b")) == hash_value(["a", b"b"])


def test_unhashable_type() -> None:
    with pytest.raises(TypeError):
        hash_value(1.5)


@pytest.mark.parametrize(
    ("n", "unsigned", "signed"),
    [
        (0, "00", "00"),
        (1, "01", "01"),
        (63, "3f", "3f"),
        (64, "40", "c000"),
        (73, "49", "c900"),
        (127, "7f", "ff00"),
        (128, "8001", "8001"),
        (624485, "e58e26", "e58e26"),
    ],
)
def test_leb128_known(n: int, unsigned: str, signed: str) -> None:
    assert leb128(n).hex() == unsigned
    assert sleb128(n).hex() == signed


@pytest.mark.parametrize(("n", "signed"), [(-1, "7f"), (-64, "40"), (-65, "bf7f"), (-123456, "c0bb78")])
def test_sleb128_negative(n: int, signed: str) -> None:
    assert sleb128(n).hex() == signed


def test_leb128_rejects_negative() -> None:
    with pytest.raises(ValueError):
        leb128(-1)


def _read_uleb(data: bytes) -> int:
    result = shift = 0
    for i, byte in enumerate(data):
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            assert i == len(data) - 1
            return result
    raise AssertionError("unterminated LEB128")


def _read_sleb(data: bytes) -> int:
    value = _read_uleb(data)
    bits = 7 * len(data)
    return value - (1 << bits) if data[-1] & 0x40 else value


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=1 << 130))
def test_leb128_round_trip_and_shortest(n: int) -> None:
    encoded = leb128(n)
    assert _read_uleb(encoded) == n
    assert len(encoded) == max(1, -(-n.bit_length() // 7))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(1 << 130), max_value=1 << 130))
def test_sleb128_round_trip_and_shortest(n: int) -> None:
    encoded = sleb128(n)
    assert _read_sleb(encoded) == n
    # Shortest form: dropping the last byte must change the value (or leave nothing).
    if len(encoded) > 1:
        shorter = encoded[:-2] + bytes([encoded[-2] & 0x7F])
        assert _read_sleb(shorter) != n


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.binary(max_size=10) | st.integers(min_value=0), max_size=8))
def test_order_independent(mapping: dict[str, Any]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert hash_of_map(mapping) == hash_of_map(reordered)


def _reference_hash_of_map(mapping: dict[str, Any]) -> bytes:
    """``hash_of_map`` spelled out with no cache (flat maps of blobs, texts and naturals)."""
    sha = lambda b: hashlib.sha256(b).digest()  # noqa: E731
    pairs = sorted(
        sha(key.encode())
        + sha(value if isinstance(value, bytes) else value.encode() if isinstance(value, str) else leb128(value))
        for key, value in mapping.items()
    )
    return sha(b"".join(pairs))


_REPEATED = st.sampled_from(["request_type", "sender", "canister_id", "method_name", "ingress_expiry", "arg", "other"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_REPEATED, st.binary(max_size=80) | st.text(max_size=80) | st.integers(0, 1 << 64), max_size=7))
def test_cached_pair_hashes_are_the_hashes(mapping: dict[str, Any]) -> None:
    # The agent's repeated fields are hashed from a cache: twice in a row (a miss, then a hit) both match the
    # uncached definition.
    assert hash_of_map(mapping) == _reference_hash_of_map(mapping) == hash_of_map(dict(mapping))


def test_cached_pairs_keep_the_types_apart() -> None:
    # SignedInt(64) == 64 in Python, but it hashes as signed LEB128 (c0 00, not 40): a cached nat never answers it.
    nat = hash_of_map({"ingress_expiry": 64})
    assert hash_of_map({"ingress_expiry": SignedInt(64)}) != nat
    assert hash_of_map({"ingress_expiry": SignedInt(64)}) == _reference_hash_of_map({"ingress_expiry": b"\xc0\x00"})
    assert hash_of_map({"ingress_expiry": 32 + 32}) == nat
    assert hash_of_map({"sender": "ab"}) == hash_of_map({"sender": b"ab"})  # text hashes as its UTF-8


def test_the_pair_cache_is_bounded() -> None:
    from icws_fast.ic import request_id as module

    for n in range(3 * module._PAIR_CACHE_SIZE):
        hash_of_map({"sender": n.to_bytes(8, "big"), "method_name": "x" * 1000})
    assert len(module._pair_cache) <= module._PAIR_CACHE_SIZE
    assert all(
        len(value) <= module._PAIR_CACHE_VALUE_LENGTH for _, value in module._pair_cache if not isinstance(value, int)
    )
