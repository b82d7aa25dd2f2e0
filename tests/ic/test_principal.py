"""Principals: the shared vectors, round trips, and hostile text."""

from __future__ import annotations

import base64
import contextlib
import random
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import InvalidPrincipal
from icws_fast.ic.principal import Principal
from tests.vectors import load_vectors

RECORDS = load_vectors("principals")
VALID = [r for r in RECORDS if r["valid"]]
INVALID = [r for r in RECORDS if not r["valid"]]


def test_vectors_cover_both_kinds() -> None:
    assert len(VALID) > 30
    assert len(INVALID) >= 5


@pytest.mark.parametrize("record", VALID, ids=[r["id"] for r in VALID])
def test_valid_record(record: dict[str, Any]) -> None:
    raw = bytes.fromhex(record["hex"])
    canonical = record.get("canonical_text", record["text"])
    parsed = Principal.from_text(record["text"])
    assert parsed.bytes == raw
    assert Principal.from_bytes(raw).to_text() == canonical
    assert str(parsed) == canonical
    if record["kind"] == "anonymous":
        assert parsed.is_anonymous and parsed == Principal.anonymous()
    else:
        assert not parsed.is_anonymous
    if record["kind"] == "management_canister":
        assert parsed == Principal.management()
    if record["kind"] == "self_authenticating" and "der_public_key_hex" in record:
        assert Principal.self_authenticating(bytes.fromhex(record["der_public_key_hex"])) == parsed
    if "crc32_hex" in record:
        # The text is base32 of crc32 || bytes, so the checksum is its first 4 decoded bytes.
        flat = canonical.replace("-", "").upper()
        decoded = base64.b32decode(flat + "=" * (-len(flat) % 8))
        assert decoded[:4].hex() == record["crc32_hex"]


@pytest.mark.parametrize("record", INVALID, ids=[r["id"] for r in INVALID])
def test_invalid_record(record: dict[str, Any]) -> None:
    with pytest.raises(InvalidPrincipal):
        Principal.from_text(record["text"])


def test_length_limit() -> None:
    Principal(bytes(29))
    with pytest.raises(InvalidPrincipal):
        Principal(bytes(30))
    # A checksummed text of 30 bytes is well-formed base32 but too long.
    too_long_text = Principal(bytes(29)).to_text() + "aa"
    with pytest.raises(InvalidPrincipal):
        Principal.from_text(too_long_text)


def test_non_canonical_trailing_bits_rejected() -> None:
    # "aaaaa-aa" is the empty principal; changing the last character alters only padding bits.
    with pytest.raises(InvalidPrincipal):
        Principal.from_text("aaaaa-ab")


def test_equality_hash_order() -> None:
    a, b = Principal(b"\x01"), Principal(b"\x02")
    assert a == Principal(b"\x01")
    assert a != b
    assert a != b"\x01"
    assert len({a, Principal(b"\x01"), b}) == 2
    assert sorted([b, a]) == [a, b]
    assert repr(a) == f"Principal('{a.to_text()}')"


def test_not_a_string() -> None:
    with pytest.raises(InvalidPrincipal):
        Principal.from_text(b"aaaaa-aa")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=29))
def test_round_trip(raw: bytes) -> None:
    principal = Principal.from_bytes(raw)
    text = principal.to_text()
    assert Principal.from_text(text) == principal
    assert Principal.from_text(text.upper()) == principal
    assert all(len(group) == 5 for group in text.split("-")[:-1])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_raises_only_invalid_principal(text: str) -> None:
    try:
        principal = Principal.from_text(text)
    except InvalidPrincipal:
        return
    assert principal.to_text() == text.lower()


def test_mutated_texts() -> None:
    """Random edits of valid texts raise only InvalidPrincipal; a changed base32 digit is always caught."""
    rng = random.Random(1234)
    junk = string.ascii_letters + string.digits + "-_ =é"
    for record in VALID:
        text = record["text"].lower()
        for _ in range(30):
            chars = list(text)
            pos = rng.randrange(len(chars))
            if chars[pos] != "-":
                # CRC-32 detects every error burst of up to 32 bits, so one changed 5-bit digit never
                # yields another valid text of the same length.
                chars[pos] = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz234567" if c != chars[pos]])
                with pytest.raises(InvalidPrincipal):
                    Principal.from_text("".join(chars))
            chars = list(text)
            if rng.random() < 0.5:
                chars.insert(rng.randrange(len(chars) + 1), rng.choice(junk))
            else:
                del chars[pos]
            with contextlib.suppress(InvalidPrincipal):
                Principal.from_text("".join(chars))
