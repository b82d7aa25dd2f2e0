"""BLS12-381 signatures in the IC's min-sig scheme.

The IC signs certificates with BLS12-381 "min-sig": signatures are 48-byte
compressed G1 points, public keys are 96-byte compressed G2 points, messages are
hashed to G1 with RFC 9380 (``BLS12381G1_XMD:SHA-256_SSWU_RO_``) under the
domain separation tag :data:`DST`. A signature verifies when
``e(sig, g2) == e(H(msg), pk)``.

Secret keys are 32-byte big-endian scalars (non-zero, below the group order).
The arithmetic is done by ``py_arkworks_bls12381`` (arkworks, Rust); this module
only does encoding, validation and the pairing equation.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from typing import Final

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from icws_fast.errors import DecodeError, SignatureError

DST: Final = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
SIGNATURE_LENGTH: Final = 48
PUBLIC_KEY_LENGTH: Final = 96
SECRET_KEY_LENGTH: Final = 32
# SubjectPublicKeyInfo header the IC puts before a raw 96-byte BLS key:
# algorithm OID 1.3.6.1.4.1.44668.5.3.1.2.1 (BLS12-381), curve OID 1.3.6.1.4.1.44668.5.3.2.1.
DER_PREFIX: Final = bytes.fromhex("308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100")
# Key generation domain: keeps seeds used here from colliding with any other use of the same seed.
_KEYGEN_DOMAIN: Final = b"icws_fast-bls12381-keygen"


def verify(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """True when ``signature`` (48-byte G1) signs ``message`` under ``public_key`` (96-byte G2).

    Never raises for a bad signature or key: wrong types or lengths, bytes that are not
    points, points outside the prime-order subgroup and the identity (which would make
    forgeries trivial) give False.
    """
    try:
        if len(signature) != SIGNATURE_LENGTH or len(public_key) != PUBLIC_KEY_LENGTH:
            return False
        sig = G1Point.from_compressed_bytes(bytes(signature))
    except (ValueError, TypeError, OverflowError):
        return False
    pk = _public_key_point(bytes(public_key))
    if pk is None or sig == G1Point.identity():
        return False
    hashed = G1Point.hash_to_curve(bytes(message), DST)
    # e(sig, g2) * e(-H(m), pk) == 1  <=>  e(sig, g2) == e(H(m), pk); one multi-pairing instead of two.
    return bool(GT.pairing_check([sig, -hashed], [G2Point(), pk]))


@functools.lru_cache(maxsize=16)
def _public_key_point(public_key: bytes) -> G2Point | None:
    """The G2 point of a compressed public key, None unless it is a valid point other than the identity.

    Cached: the keys that sign are few (the IC root key, a subnet key per delegation) and decompressing one,
    with its subgroup check, costs a quarter of a pairing.
    """
    try:
        point = G2Point.from_compressed_bytes(public_key)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if point == G2Point.identity() else point


def generate_secret_key(seed: bytes | None = None) -> bytes:
    """A new secret key: derived deterministically from ``seed``, or random when ``seed`` is None.

    The seed is expanded with HMAC-SHA-512 to 64 bytes and reduced modulo the
    group order, so every seed (of any length) gives a uniformly distributed key.
    """
    material = os.urandom(32) if seed is None else bytes(seed)
    counter = 0
    while True:
        digest = hmac.new(_KEYGEN_DOMAIN, material + counter.to_bytes(4, "big"), hashlib.sha512).digest()
        scalar = Scalar.from_be_bytes_mod_order(digest)
        if not scalar.is_zero():
            return scalar.to_be_bytes().rjust(SECRET_KEY_LENGTH, b"\x00")
        counter += 1  # Probability 2^-255: loop only for completeness.


def _scalar(secret_key: bytes) -> Scalar:
    if len(secret_key) != SECRET_KEY_LENGTH:
        raise SignatureError(f"BLS secret key must be {SECRET_KEY_LENGTH} bytes, got {len(secret_key)}")
    try:
        scalar = Scalar.from_be_bytes(bytes(secret_key))
    except (ValueError, TypeError, OverflowError) as exc:
        raise SignatureError("BLS secret key is not a scalar below the group order") from exc
    if scalar.is_zero():
        raise SignatureError("BLS secret key is zero")
    return scalar


def public_key(secret_key: bytes) -> bytes:
    """The 96-byte compressed G2 public key of ``secret_key``; raises SignatureError for a bad key."""
    return (G2Point() * _scalar(secret_key)).to_compressed_bytes()


def sign(secret_key: bytes, message: bytes) -> bytes:
    """The 48-byte compressed G1 signature of ``message``; raises SignatureError for a bad key."""
    return (G1Point.hash_to_curve(bytes(message), DST) * _scalar(secret_key)).to_compressed_bytes()


def der_encode_public_key(public_key: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo the IC uses for a raw 96-byte BLS public key (133 bytes)."""
    if len(public_key) != PUBLIC_KEY_LENGTH:
        raise SignatureError(f"BLS public key must be {PUBLIC_KEY_LENGTH} bytes, got {len(public_key)}")
    return DER_PREFIX + bytes(public_key)


def der_decode_public_key(der: bytes) -> bytes:
    """The raw 96-byte key inside an IC BLS DER key; raises DecodeError for anything else.

    Only the exact IC encoding is accepted (fixed header and length): the root key
    is a trust anchor, so there is no reason to be lenient about its form.
    """
    der = bytes(der)
    if len(der) != len(DER_PREFIX) + PUBLIC_KEY_LENGTH or not der.startswith(DER_PREFIX):
        raise DecodeError("not an IC BLS12-381 DER public key")
    return der[len(DER_PREFIX) :]
