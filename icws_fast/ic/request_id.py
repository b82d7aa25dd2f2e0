"""The representation-independent hash of the IC (request ids, delegations, query responses).

Python mapping of the hashed values: ``bytes`` -> blob, ``str`` -> text, ``int`` (and
``bool``, as 0/1) -> nat as unsigned LEB128, :class:`SignedInt` -> int as signed LEB128,
``list``/``tuple`` -> array, ``dict`` -> nested map, :class:`Principal` -> its bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from icws_fast.ic.leb128 import leb128, sleb128
from icws_fast.ic.principal import Principal

# leb128 and sleb128 are re-exported: callers imported them from here before icws_fast.ic.leb128 existed.
__all__ = [
    "REQUEST_DOMAIN",
    "RESPONSE_DOMAIN",
    "SignedInt",
    "hash_of_map",
    "hash_value",
    "leb128",
    "request_id",
    "sleb128",
]

REQUEST_DOMAIN: Final = b"\x0aic-request"
RESPONSE_DOMAIN: Final = b"\x0bic-response"
"""Domain separator of a replica's signature over a query response (before its ``hash_of_map``)."""

#: ``H(key)`` of the field names the IC's maps use (request contents, envelopes, delegations, query responses),
#: computed once: every request id hashes every key of its content again.
_KEY_HASHES: Final = {
    key: hashlib.sha256(key.encode()).digest()
    for key in (
        "request_type",
        "sender",
        "canister_id",
        "method_name",
        "arg",
        "ingress_expiry",
        "nonce",
        "paths",
        "pubkey",
        "expiration",
        "targets",
        "permissions",
        "status",
        "reply",
        "reject_code",
        "reject_message",
        "error_code",
        "timestamp",
        "request_id",
    )
}
#: The content fields whose values an agent repeats request after request (its principal, the canister, the
#: method, and the expiry, rounded to the minute): ``H(key) || H(value)`` of short values of these is kept, up to
#: :data:`_PAIR_CACHE_SIZE` pairs (emptied when full, so a stream of different values costs a miss each, never
#: memory).
_REPEATED_FIELDS: Final = frozenset({"request_type", "sender", "canister_id", "method_name", "ingress_expiry"})
_PAIR_CACHE_SIZE: Final = 1024
_PAIR_CACHE_VALUE_LENGTH: Final = 64
_pair_cache: dict[tuple[str, str | bytes | int], bytes] = {}


class SignedInt(int):
    """An ``int`` that hashes as signed LEB128 (Candid/IC ``int``) instead of ``nat``."""


def hash_value(value: Any) -> bytes:
    """``H(value)`` of the representation-independent hash."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return hashlib.sha256(value).digest()
    if isinstance(value, str):
        return hashlib.sha256(value.encode("utf-8")).digest()
    if isinstance(value, SignedInt):
        return hashlib.sha256(sleb128(value)).digest()
    if isinstance(value, int):
        return hashlib.sha256(leb128(int(value))).digest()
    if isinstance(value, Principal):
        return hashlib.sha256(value.bytes).digest()
    if isinstance(value, dict):
        return hash_of_map(value)
    if isinstance(value, (list, tuple)):
        return hashlib.sha256(b"".join(hash_value(v) for v in value)).digest()
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def _pair_hash(key: str, value: Any) -> bytes:
    """``H(key) || H(value)``, one entry of a ``hash_of_map``."""
    key_hash = _KEY_HASHES.get(key)
    if key_hash is None:
        return hashlib.sha256(key.encode("utf-8")).digest() + hash_value(value)
    kind = type(value)
    # Exact types: a bool or a SignedInt hashes differently from the int it equals.
    if key in _REPEATED_FIELDS and (kind is int or (kind in (bytes, str) and len(value) <= _PAIR_CACHE_VALUE_LENGTH)):
        cached = _pair_cache.get((key, value))
        if cached is None:
            if len(_pair_cache) >= _PAIR_CACHE_SIZE:
                _pair_cache.clear()
            cached = _pair_cache[key, value] = key_hash + hash_value(value)
        return cached
    return key_hash + hash_value(value)


def hash_of_map(mapping: dict[str, Any]) -> bytes:
    """``hash_of_map``: sha256 over the sorted ``H(key) || H(value)`` pairs. ``None`` values are skipped."""
    pairs = sorted(_pair_hash(key, value) for key, value in mapping.items() if value is not None)
    return hashlib.sha256(b"".join(pairs)).digest()


def request_id(content: dict[str, Any]) -> bytes:
    """The 32-byte request id of an envelope's ``content`` map."""
    return hash_of_map(content)
