"""IC certificates: decoding, verification (BLS, delegation, canister ranges, freshness) and signing.

A certificate is the CBOR map ``{tree, signature, delegation?}``. It is valid when
the BLS signature over ``b"\\x0dic-state-root" || reconstruct(tree)`` verifies
under the root key, or, with a delegation, under the subnet key that the
delegation's own certificate (signed by the root key, never itself delegated)
publishes at ``/subnet/<subnet_id>/public_key``; the delegation must then cover
the effective canister (``/canister_ranges/<subnet_id>/<shard>`` or
``/subnet/<subnet_id>/canister_ranges``) or be for the requested subnet. The
certificate's ``/time`` must lie within the allowed skew of now.

BLS results are kept in a process-wide LRU keyed by (signature, signed message,
public key): a certificate shared by many messages (a batch of ic-websocket
messages), and every witness pruned from one signed state, is paired once, while
the time checks run on every call.

Failures raise :class:`~icws_fast.errors.CertificateError` whose ``reason`` is one
of the short stable strings below (``REASON_*``); hostile bytes raise it with
reason ``"malformed"``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from icws_fast.errors import CertificateError, DecodeError
from icws_fast.ic import bls, cbor, hashtree
from icws_fast.ic.hashtree import LookupResult, Node, Path
from icws_fast.ic.leb128 import leb128_value
from icws_fast.ic.principal import Principal

STATE_ROOT_DOMAIN: Final = b"\x0dic-state-root"
MAX_CERTIFICATE_AGE_NS: Final = 5 * 60 * 1_000_000_000
"""How far a certificate's ``/time`` may lag the clock (or lead it) by default: 5 minutes, as agent-js."""
BLS_CACHE_SIZE: Final = 4096

REASON_MALFORMED: Final = "malformed"
REASON_INVALID_ROOT_KEY: Final = "invalid-root-key"
REASON_INVALID_SIGNATURE: Final = "invalid-signature"
REASON_DELEGATION_NESTED: Final = "delegation-nested"
REASON_DELEGATION_INVALID_SIGNATURE: Final = "delegation-invalid-signature"
REASON_DELEGATION_MISSING_KEY: Final = "delegation-missing-key"
REASON_DELEGATION_INVALID_KEY: Final = "delegation-invalid-key"
REASON_SUBNET_MISMATCH: Final = "subnet-mismatch"
REASON_CANISTER_NOT_IN_RANGE: Final = "canister-not-in-range"
REASON_CANISTER_RANGES_PRUNED: Final = "canister-ranges-pruned"
REASON_CANISTER_RANGES_MISSING: Final = "canister-ranges-missing"
REASON_TIME_MISSING: Final = "time-missing"
REASON_TIME_TOO_OLD: Final = "time-too-old"
REASON_TIME_IN_FUTURE: Final = "time-in-future"
REASON_PATH_NOT_FOUND: Final = "path-not-found"
#: A query answer's node signatures (checked by :class:`~icws_fast.ic.agent.Agent`) do not hold up.
REASON_NODE_SIGNATURE: Final = "node-signature"


class _BlsCache:
    """A thread-safe LRU of BLS verification results, keyed by what the pairing checks.

    Keying by (signature, message, key) rather than by certificate bytes lets every witness
    pruned from one signed state (one devnet round, one IC batch) share one pairing.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._results: OrderedDict[tuple[bytes, bytes, bytes], bool] = OrderedDict()

    def verify(self, signature: bytes, message: bytes, public_key: bytes) -> bool:
        if len(signature) != bls.SIGNATURE_LENGTH or len(public_key) != bls.PUBLIC_KEY_LENGTH:
            # Never valid, and not cached: a hostile peer could otherwise fill the cache with huge signatures.
            return False
        key = (signature, message, public_key)
        with self._lock:
            cached = self._results.get(key)
            if cached is not None:
                self._results.move_to_end(key)
                return cached
        # The pairing runs outside the lock: two threads may compute the same result, which is harmless.
        result = bls.verify(signature, message, public_key)
        with self._lock:
            self._results[key] = result
            if len(self._results) > self._size:
                self._results.popitem(last=False)
        return result

    def clear(self) -> None:
        with self._lock:
            self._results.clear()

    def __len__(self) -> int:
        return len(self._results)


BLS_CACHE: Final = _BlsCache(BLS_CACHE_SIZE)


class Delegation:
    """A certificate's delegation: the subnet it names and that subnet's certificate from the root key."""

    __slots__ = ("certificate", "subnet_id")

    def __init__(self, subnet_id: Principal, certificate: Certificate) -> None:
        self.subnet_id = subnet_id
        self.certificate = certificate


class Certificate:
    """A decoded certificate. Build it with :meth:`from_cbor`; check it with :meth:`verify`."""

    __slots__ = ("cbor", "delegation", "signature", "tree")

    def __init__(self, tree: Node, signature: bytes, delegation: Delegation | None, data: bytes) -> None:
        self.tree = tree
        self.signature = signature
        self.delegation = delegation
        self.cbor = data

    @classmethod
    def from_cbor(cls, data: bytes | bytearray | memoryview) -> Certificate:
        """Decode a certificate; anything malformed raises ``CertificateError("malformed")``.

        A delegation's certificate is decoded too, and may itself carry a delegation
        so that :meth:`verify` can reject it by name; a third level is malformed.
        """
        return cls._decode(bytes(data), allow_delegation_levels=2)

    @classmethod
    def _decode(cls, data: bytes, allow_delegation_levels: int) -> Certificate:
        try:
            obj = cbor.decode(data)
            if not isinstance(obj, dict) or not set(obj) <= {"tree", "signature", "delegation"}:
                raise CertificateError(REASON_MALFORMED, "a certificate is a map {tree, signature, delegation?}")
            tree = hashtree.parse(obj.get("tree"))
            signature = obj.get("signature")
            if not isinstance(signature, bytes):
                raise CertificateError(REASON_MALFORMED, "signature is not a byte string")
            raw_delegation = obj.get("delegation")
            delegation = None
            if raw_delegation is not None:
                if allow_delegation_levels <= 0:
                    raise CertificateError(REASON_MALFORMED, "delegations nested too deeply")
                if (
                    not isinstance(raw_delegation, dict)
                    or set(raw_delegation) != {"subnet_id", "certificate"}
                    or not isinstance(raw_delegation["subnet_id"], bytes)
                    or not isinstance(raw_delegation["certificate"], bytes)
                ):
                    raise CertificateError(REASON_MALFORMED, "a delegation is a map {subnet_id, certificate}")
                delegation = Delegation(
                    Principal.from_bytes(raw_delegation["subnet_id"]),
                    cls._decode(raw_delegation["certificate"], allow_delegation_levels - 1),
                )
        except DecodeError as exc:
            raise CertificateError(REASON_MALFORMED, str(exc)) from exc
        return cls(tree, signature, delegation, data)

    @property
    def root_hash(self) -> bytes:
        """The reconstructed root hash of the tree."""
        return hashtree.reconstruct(self.tree)

    @property
    def time_ns(self) -> int:
        """The certificate's ``/time`` in nanoseconds; CertificateError when missing or malformed."""
        found = hashtree.lookup_path(self.tree, [b"time"])
        if found.status != hashtree.FOUND:
            raise CertificateError(REASON_TIME_MISSING, f"/time is {found.status}")
        try:
            return leb128_value(found.value)
        except DecodeError as exc:
            raise CertificateError(REASON_MALFORMED, f"/time: {exc}") from None

    def lookup(self, path: Path) -> LookupResult:
        """The spec's ``lookup_path`` in the certificate's tree."""
        return hashtree.lookup_path(self.tree, path)

    def lookup_value(self, path: Path) -> bytes:
        """The leaf at ``path``; ``CertificateError("path-not-found")`` unless the lookup is Found."""
        found = hashtree.lookup_path(self.tree, path)
        if found.status != hashtree.FOUND:
            raise CertificateError(REASON_PATH_NOT_FOUND, f"{_show(path)} is {found.status}")
        value: bytes = found.value
        return value

    def _signature_valid(self, public_key: bytes) -> bool:
        message = STATE_ROOT_DOMAIN + hashtree.reconstruct(self.tree)
        return BLS_CACHE.verify(self.signature, message, public_key)

    def verify(
        self,
        root_key_der: bytes,
        effective_canister_id: Principal | bytes | None = None,
        now_ns: int | None = None,
        max_age_ns: int | None = None,
        *,
        subnet_id: Principal | bytes | None = None,
    ) -> None:
        """Check the certificate; return None when valid, raise ``CertificateError(reason)`` otherwise.

        :meth:`verify_signature`, then ``/time`` must be at most ``max_age_ns`` (default 5 minutes)
        older than ``now_ns`` (default: the clock) and at most 5 minutes ahead of it (:func:`check_time`).
        """
        self.verify_signature(root_key_der, effective_canister_id, subnet_id=subnet_id)
        check_time(self.time_ns, time.time_ns() if now_ns is None else now_ns, max_age_ns)

    def verify_signature(
        self,
        root_key_der: bytes,
        effective_canister_id: Principal | bytes | None = None,
        *,
        subnet_id: Principal | bytes | None = None,
    ) -> None:
        """Everything :meth:`verify` checks but the time, which does not change while a certificate ages.

        ``root_key_der`` is the IC root key (DER). With a delegation, the delegation must cover
        ``effective_canister_id`` (when given) and be for ``subnet_id`` (when given).
        """
        try:
            root_key = bls.der_decode_public_key(root_key_der)
        except DecodeError as exc:
            raise CertificateError(REASON_INVALID_ROOT_KEY, str(exc)) from exc
        key = root_key
        if self.delegation is not None:
            key = self._check_delegation(self.delegation, root_key, effective_canister_id, subnet_id)
        if not self._signature_valid(key):
            raise CertificateError(REASON_INVALID_SIGNATURE)

    def _check_delegation(
        self,
        delegation: Delegation,
        root_key: bytes,
        effective_canister_id: Principal | bytes | None,
        subnet_id: Principal | bytes | None,
    ) -> bytes:
        """Verify the delegation and return the subnet public key it vouches for."""
        cert = delegation.certificate
        if cert.delegation is not None:
            raise CertificateError(REASON_DELEGATION_NESTED)
        if subnet_id is not None and _principal_bytes(subnet_id) != delegation.subnet_id.bytes:
            raise CertificateError(REASON_SUBNET_MISMATCH, f"delegation is for subnet {delegation.subnet_id}")
        if not cert._signature_valid(root_key):
            raise CertificateError(REASON_DELEGATION_INVALID_SIGNATURE)
        subnet = delegation.subnet_id.bytes
        found = cert.lookup([b"subnet", subnet, b"public_key"])
        if found.status != hashtree.FOUND:
            raise CertificateError(REASON_DELEGATION_MISSING_KEY, f"/subnet/<id>/public_key is {found.status}")
        try:
            subnet_key = bls.der_decode_public_key(found.value)
        except DecodeError as exc:
            raise CertificateError(REASON_DELEGATION_INVALID_KEY, str(exc)) from exc
        if effective_canister_id is not None:
            check_canister_ranges(cert, subnet, _principal_bytes(effective_canister_id))
        return subnet_key


def check_time(cert_time_ns: int, now_ns: int, max_age_ns: int | None = None) -> None:
    """Raise unless a certificate's ``/time`` is at most ``max_age_ns`` (default 5 minutes) before ``now_ns``
    and at most 5 minutes after it (``time-too-old`` / ``time-in-future``)."""
    max_age = MAX_CERTIFICATE_AGE_NS if max_age_ns is None else max_age_ns
    if cert_time_ns < now_ns - max_age:
        raise CertificateError(REASON_TIME_TOO_OLD, f"certificate time {cert_time_ns} ns, now {now_ns} ns")
    if cert_time_ns > now_ns + MAX_CERTIFICATE_AGE_NS:
        raise CertificateError(REASON_TIME_IN_FUTURE, f"certificate time {cert_time_ns} ns, now {now_ns} ns")


def _principal_bytes(principal: Principal | bytes) -> bytes:
    return principal.bytes if isinstance(principal, Principal) else bytes(principal)


def _show(path: Path) -> str:
    return "/" + "/".join(label if isinstance(label, str) else label.hex() for label in path)


def _ranges_contain(leaf_value: bytes, canister_id: bytes) -> bool:
    """Whether the CBOR list of ``[low, high]`` principal pairs in ``leaf_value`` covers ``canister_id``."""
    try:
        ranges = cbor.decode(leaf_value)
    except DecodeError as exc:
        raise CertificateError(REASON_MALFORMED, f"canister ranges: {exc}") from exc
    if not isinstance(ranges, list):
        raise CertificateError(REASON_MALFORMED, "canister ranges are not a list")
    for pair in ranges:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, bytes) for p in pair)):
            raise CertificateError(REASON_MALFORMED, "a canister range is a pair of principals")
        # Principals order by their bytes, as the IC orders canister ids.
        if pair[0] <= canister_id <= pair[1]:
            return True
    return False


def check_canister_ranges(cert: Certificate, subnet: bytes, canister_id: bytes) -> None:
    """Raise unless ``cert`` shows ``canister_id`` inside the ranges of ``subnet``.

    ``cert`` is a delegation's certificate, or a root-signed certificate of the root subnet (which serves its
    own ranges). Either layout counts: the sharded ``/canister_ranges/<subnet>/<shard>`` (v4 call, v3 query and
    read_state) or the flat ``/subnet/<subnet>/canister_ranges`` (v3 call, v2 endpoints).
    """
    sharded = hashtree.lookup_subtree(cert.tree, [b"canister_ranges", subnet])
    if sharded.status == hashtree.FOUND:
        # Newer layout: one leaf per shard. Any visible shard that contains the canister proves it; a
        # pruned shard could be the one that does, so then the answer is "pruned", not "outside".
        hidden = False
        for node in hashtree.flatten_forks(sharded.value):
            if node[0] == hashtree.LABELED and node[2][0] == hashtree.LEAF:
                if _ranges_contain(node[2][1], canister_id):
                    return
            else:
                hidden = True
        raise CertificateError(REASON_CANISTER_RANGES_PRUNED if hidden else REASON_CANISTER_NOT_IN_RANGE)
    legacy = cert.lookup([b"subnet", subnet, b"canister_ranges"])
    if legacy.status == hashtree.FOUND:
        if _ranges_contain(legacy.value, canister_id):
            return
        raise CertificateError(REASON_CANISTER_NOT_IN_RANGE)
    if hashtree.UNKNOWN in (sharded.status, legacy.status):
        raise CertificateError(REASON_CANISTER_RANGES_PRUNED)
    raise CertificateError(REASON_CANISTER_RANGES_MISSING)


def encode_delegation(subnet_id: Principal | bytes, certificate_cbor: bytes) -> bytes:
    """The CBOR of a delegation map ``{subnet_id, certificate}``, as :func:`sign_certificate` takes it."""
    return cbor.encode({"subnet_id": _principal_bytes(subnet_id), "certificate": bytes(certificate_cbor)})


def sign_certificate(tree: Node, secret_key: bytes, delegation_cbor: bytes | None = None) -> bytes:
    """A certificate (CBOR, self-describe tag) over ``tree`` signed with the BLS ``secret_key``.

    ``delegation_cbor`` is the CBOR of the delegation map (see :func:`encode_delegation`);
    with it, ``secret_key`` is the subnet's key that the delegation publishes.
    """
    signature = bls.sign(secret_key, STATE_ROOT_DOMAIN + hashtree.reconstruct(tree))
    cert: dict[str, Any] = {"tree": tree, "signature": signature}
    if delegation_cbor is not None:
        delegation = cbor.decode(delegation_cbor)
        if not isinstance(delegation, Mapping) or set(delegation) != {"subnet_id", "certificate"}:
            raise CertificateError(REASON_MALFORMED, "a delegation is a map {subnet_id, certificate}")
        cert["delegation"] = dict(delegation)
    return cbor.encode(cert)
