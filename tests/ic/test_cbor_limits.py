"""CBOR limits that protect callers of the decoder from hostile values it would otherwise return."""

from __future__ import annotations

import pytest

from icws_fast.errors import CborError
from icws_fast.ic import cbor


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
