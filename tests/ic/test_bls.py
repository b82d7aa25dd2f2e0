"""BLS12-381 min-sig against the shared vectors, plus key generation, signing and DER keys."""

from __future__ import annotations

from typing import Any

import pytest

from icws_fast.errors import DecodeError, SignatureError
from icws_fast.ic import bls
from tests.vectors import load_vectors

RECORDS = load_vectors("bls")
MAINNET_DER = bytes.fromhex(
    next(r for r in load_vectors("certificates") if r["root_key_name"] == "ic_mainnet")["root_key_der_hex"]
)


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_vectors(record: dict[str, Any]) -> None:
    sig = bytes.fromhex(record["signature_hex"])
    msg = bytes.fromhex(record["message_hex"])
    key = bytes.fromhex(record["public_key_hex"])
    assert bls.verify(sig, msg, key) is record["expected"]


def test_malformed_inputs_return_false() -> None:
    good = next(r for r in RECORDS if r["expected"])
    sig, msg, key = (bytes.fromhex(good[k]) for k in ("signature_hex", "message_hex", "public_key_hex"))
    assert bls.verify(sig, msg, key)
    identity_sig = bytes([0xC0]) + bytes(47)
    identity_key = bytes([0xC0]) + bytes(95)
    for bad_sig, bad_key in [
        (sig[:-1], key),
        (sig, key[:-1]),
        (b"", b""),
        (b"\xff" * 48, key),
        (sig, b"\xff" * 96),
        (identity_sig, identity_key),
        (identity_sig, key),
        (key[:48], key),
        (None, key),
        (sig, None),
    ]:
        assert bls.verify(bad_sig, msg, bad_key) is False  # type: ignore[arg-type]


def test_keygen_sign_verify() -> None:
    sk = bls.generate_secret_key(b"seed")
    assert sk == bls.generate_secret_key(b"seed") != bls.generate_secret_key(b"seed2")
    assert len(sk) == 32 and len(bls.generate_secret_key()) == 32
    assert bls.generate_secret_key() != bls.generate_secret_key()
    pk = bls.public_key(sk)
    assert len(pk) == 96
    sig = bls.sign(sk, b"message")
    assert len(sig) == 48
    assert bls.verify(sig, b"message", pk)
    assert not bls.verify(sig, b"messagf", pk)
    assert not bls.verify(sig, b"message", bls.public_key(bls.generate_secret_key(b"x")))
    for bad in (b"", bytes(32), b"\xff" * 32):
        with pytest.raises(SignatureError):
            bls.sign(bad, b"m")


def test_der_round_trip_and_mainnet_key() -> None:
    raw = bls.der_decode_public_key(MAINNET_DER)
    assert len(raw) == 96 and bls.der_encode_public_key(raw) == MAINNET_DER
    for bad in (MAINNET_DER[:-1], MAINNET_DER + b"\x00", b"\x00" + MAINNET_DER[1:], b""):
        with pytest.raises(DecodeError):
            bls.der_decode_public_key(bad)
    with pytest.raises(SignatureError):
        bls.der_encode_public_key(raw[:-1])


def test_points_outside_the_subgroup_are_rejected() -> None:
    import random

    from py_arkworks_bls12381 import G1Point

    rng = random.Random(5)
    good = next(r for r in RECORDS if r["expected"])
    msg, key = bytes.fromhex(good["message_hex"]), bytes.fromhex(good["public_key_hex"])
    found = 0
    while found < 3:
        raw = bytearray(rng.randbytes(48))
        raw[0] = (raw[0] & 0x1F) | 0x80  # compressed flag, not infinity
        try:
            point = G1Point.from_compressed_bytes_unchecked(bytes(raw))
        except ValueError:
            continue  # x is not on the curve
        if point.is_in_subgroup():
            continue
        found += 1
        assert bls.verify(bytes(raw), msg, key) is False
