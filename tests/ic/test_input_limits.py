"""Input limits that protect callers from hostile values: CBOR bignums, principal text."""

from __future__ import annotations

import pytest

from icws_fast.errors import CborError, InvalidPrincipal
from icws_fast.ic import cbor
from icws_fast.ic.principal import MAX_LENGTH, MAX_TEXT_LENGTH, Principal


def test_bignums_up_to_the_limit_decode() -> None:
    big = (1 << (8 * cbor.MAX_BIGNUM_BYTES)) - 1
    assert cbor.decode(cbor.encode(big)) == big
    assert cbor.decode(cbor.encode(-big - 1)) == -big - 1


@pytest.mark.parametrize("tag", [b"\xc2", b"\xc3"])
def test_huge_bignums_are_rejected(tag: bytes) -> None:
    # 2000 bytes is an int of ~4800 decimal digits: str() of it would raise ValueError in whoever logs it.
    data = tag + b"\x59\x07\xd0" + b"\xff" * 2000
    with pytest.raises(CborError, match="bignum"):
        cbor.decode(data)
    with pytest.raises(CborError):
        cbor.decode(cbor.encode({"timestamp": cbor.Tag(2, b"\x01" * (cbor.MAX_BIGNUM_BYTES + 1))}))


def test_principal_text_length_is_checked_before_decoding() -> None:
    longest = Principal(b"\xff" * MAX_LENGTH).to_text()
    assert len(longest) == MAX_TEXT_LENGTH
    assert Principal.from_text(longest).bytes == b"\xff" * MAX_LENGTH
    with pytest.raises(InvalidPrincipal, match="too long") as info:
        Principal.from_text("a" * 1_000_000)
    assert len(str(info.value)) < 200
