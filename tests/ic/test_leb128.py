"""The shared LEB128 codec: round trips, known encodings, and hostile input (truncated, trailing, huge)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import DecodeError
from icws_fast.ic.leb128 import decode_leb128, decode_length, decode_sleb128, leb128, leb128_value, sleb128


@pytest.mark.parametrize(
    ("n", "unsigned", "signed"),
    [(0, "00", "00"), (63, "3f", "3f"), (64, "40", "c000"), (127, "7f", "ff00"), (624485, "e58e26", "e58e26")],
)
def test_decode_known(n: int, unsigned: str, signed: str) -> None:
    assert decode_leb128(bytes.fromhex(unsigned)) == (n, len(unsigned) // 2)
    assert decode_sleb128(bytes.fromhex(signed)) == (n, len(signed) // 2)


@pytest.mark.parametrize(("n", "signed"), [(-1, "7f"), (-64, "40"), (-65, "bf7f"), (-123456, "c0bb78")])
def test_decode_negative(n: int, signed: str) -> None:
    assert decode_sleb128(bytes.fromhex(signed)) == (n, len(signed) // 2)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=1 << 200), st.binary(max_size=3), st.binary(max_size=3))
def test_unsigned_round_trip_at_any_offset(n: int, before: bytes, after: bytes) -> None:
    data = before + leb128(n) + after
    assert decode_leb128(data, len(before)) == (n, len(data) - len(after))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(1 << 200), max_value=1 << 200))
def test_signed_round_trip(n: int) -> None:
    encoded = sleb128(n)
    assert decode_sleb128(encoded) == (n, len(encoded))


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x80\x80", b"\xff" * 20])
def test_truncated_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode_leb128(data)
    with pytest.raises(DecodeError, match="truncated"):
        decode_sleb128(data)


def test_offset_past_the_end_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_leb128(b"\x05", 1)


def test_value_must_fill_the_bytes_exactly() -> None:
    assert leb128_value(leb128(1_700_000_000_000_000_000)) == 1_700_000_000_000_000_000
    with pytest.raises(DecodeError, match="trailing"):
        leb128_value(b"\x05\x00")
    with pytest.raises(DecodeError):
        leb128_value(b"")


def test_huge_number_decodes_exactly() -> None:
    # 200k bytes: the binary-text path keeps this linear (a shift loop would be quadratic).
    n = (1 << (7 * 200_000)) - 1
    data = leb128(n)
    assert len(data) == 200_000
    assert decode_leb128(data) == (n, len(data))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=1 << 70), st.sampled_from([0, 1, 2, 8]), st.binary(max_size=3))
def test_length_fits_or_raises(n: int, item_size: int, before: bytes) -> None:
    """A length whose items fit is returned with the start of the items; one that overshoots by a byte is refused."""
    prefix = before + leb128(n)
    fits = n * item_size <= 64
    body = bytes(n * item_size) if fits else b""
    if fits:
        assert decode_length(prefix + body, len(before), "vector", item_size) == (n, len(prefix))
    if n * item_size:
        short = prefix + bytes(min(n * item_size, 64) - 1)
        with pytest.raises(DecodeError, match=r"^vector of length \d+ overshoots the input \(\d+ bytes left\)$"):
            decode_length(short, len(before), "vector", item_size)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\x05"])
def test_length_truncated_or_short_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_length(data, 0, "text")
