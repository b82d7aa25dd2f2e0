"""The one verifier of a certified batch of canister messages, for the gateway's poller and the client alike.

A ``ws_get_messages`` batch, and every CanisterToClientMessage cut from it, carries the canister's data
certificate ``cert`` and a witness ``tree`` of the CDK's certified message map. A batch holds when

1. ``cert`` verifies under the IC root key for the canister (BLS signature; a delegation must cover it);
2. its ``/time`` lies at most ``max_age_ns`` before and at most the allowed skew after the caller's ``now_ns``;
3. ``tree`` reconstructs to the ``certified_data`` that ``cert`` holds for the canister.

A message of the batch is then certified when the leaf at ``websocket/<key>`` of ``tree`` is sha256 of its
content (:func:`check_message`).

:class:`BatchVerifier` does (1) once per certificate (a bounded LRU: the batches polled in one replica round
share a certificate), (2) on every call (the caller's clock moves on, a cached certificate ages), and (3) once
per tree: one reading of the witness's CBOR (:func:`icws_fast.ic.hashtree.read_witness`) reconstructs its root
and hands back every key's certified hash below ``websocket``, so a batch of *n* messages costs one pass over
the tree and *n* dictionary look-ups. It remembers the last tree, as a client
receives the messages of one batch one frame at a time, each with the same tree. No clock inside: the
caller passes ``now_ns``.

Every failure is a :class:`~icws_fast.errors.CertificateError` whose ``reason`` is a ``REASON_*`` constant,
of this module or of :mod:`icws_fast.ic.certificate`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final

from icws_fast import _ext
from icws_fast.errors import CertificateError, DecodeError
from icws_fast.ic import hashtree
from icws_fast.ic.certificate import MAX_CERTIFICATE_AGE_NS, Certificate, check_time
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import LABEL_WEBSOCKET

REASON_TREE_MALFORMED: Final = "tree-malformed"
REASON_TREE_MISMATCH: Final = "tree-mismatch"
REASON_TREE_UNORDERED: Final = "tree-unordered"
REASON_KEY_NOT_FOUND: Final = "key-not-found"
REASON_CONTENT_MISMATCH: Final = "content-mismatch"
#: Certificates remembered per verifier. A replica round yields one; a few cover a pipelined poller and a
#: client whose messages straddle rounds, and a hostile peer sending a new certificate every time evicts
#: only its own entries.
DEFAULT_CACHE_SIZE: Final = 8


def check_message(hashes: Mapping[bytes, bytes], key: bytes, content: bytes) -> None:
    """Raise unless ``hashes`` (a :meth:`BatchVerifier.verify` result) certifies ``content`` under ``key``."""
    certified = hashes.get(key)
    if certified is None:
        raise CertificateError(REASON_KEY_NOT_FOUND, f"message key {key[:120]!r} is not in the batch's tree")
    if certified != hashlib.sha256(content).digest():
        raise CertificateError(REASON_CONTENT_MISMATCH, f"message {key[:120]!r} is not the certified content")


def check_messages_pure(hashes: Mapping[bytes, bytes], keys: Sequence[bytes], contents: Sequence[bytes]) -> None:
    """:func:`check_message` for each ``(keys[i], contents[i])`` in turn: raises at the first that fails.

    The gateway's poller checks each recipient's share of a batch with one call.
    """
    for key, content in zip(keys, contents, strict=True):
        check_message(hashes, key, content)


class BatchVerifier:
    """Verifies certified batches of one IC (one root key); see the module docstring. Not thread-safe."""

    __slots__ = ("_certificates", "_last_tree", "cache_size", "max_age_ns", "root_key_der")

    def __init__(
        self, root_key_der: bytes, *, max_age_ns: int = MAX_CERTIFICATE_AGE_NS, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        """``root_key_der``: the IC root key (DER). ``max_age_ns``: the oldest certificate accepted."""
        self.root_key_der = root_key_der
        self.max_age_ns = max_age_ns
        self.cache_size = max(1, cache_size)
        # (certificate bytes, canister id bytes) -> (the canister's certified data, the certificate's time).
        self._certificates: OrderedDict[tuple[bytes, bytes], tuple[bytes, int]] = OrderedDict()
        # The last tree: (its bytes, the certified data it matched, its key -> hash map).
        self._last_tree: tuple[bytes, bytes, dict[bytes, bytes]] | None = None

    def verify(self, cert: bytes, tree: bytes, canister_id: Principal, now_ns: int) -> Mapping[bytes, bytes]:
        """Message key -> certified content hash of the batch certified by ``cert`` and ``tree``.

        ``now_ns`` is the wall clock in nanoseconds since the epoch. Raises :class:`CertificateError` when
        the certificate, its time or the tree does not hold up; the result is read-only.
        """
        certified_data, cert_time_ns = self._certificate(cert, canister_id)
        check_time(cert_time_ns, now_ns, self.max_age_ns)
        last = self._last_tree
        if last is not None and last[1] == certified_data and last[0] == tree:
            return last[2]
        try:
            witness = hashtree.read_witness(tree, LABEL_WEBSOCKET)
        except DecodeError as exc:
            raise CertificateError(REASON_TREE_MALFORMED, str(exc)) from exc
        if witness.root_hash != certified_data:
            raise CertificateError(REASON_TREE_MISMATCH, "the witness tree is not the canister's certified data")
        if not witness.ordered:
            # In a tree that breaks the IC's label order, a lookup would not be well defined.
            raise CertificateError(REASON_TREE_UNORDERED, "the witness tree's labels are not in order")
        hashes = witness.leaves
        self._last_tree = (tree, certified_data, hashes)
        return hashes

    def certificate_time(self, cert: bytes, canister_id: Principal) -> int:
        """The time (ns since the epoch) of ``cert``, verified as :meth:`verify` does (cached: free after it)."""
        return self._certificate(cert, canister_id)[1]

    def _certificate(self, cert: bytes, canister_id: Principal) -> tuple[bytes, int]:
        """The canister's certified data and the time of a certificate that verified (BLS once per certificate)."""
        key = (cert, canister_id.bytes)
        cached = self._certificates.get(key)
        if cached is not None:
            self._certificates.move_to_end(key)
            return cached
        certificate = Certificate.from_cbor(cert)
        # The time is checked on every use (the certificate ages while it is cached), the rest only here.
        certificate.verify_signature(self.root_key_der, effective_canister_id=canister_id)
        entry = (
            certificate.lookup_value([b"canister", canister_id.bytes, b"certified_data"]),
            certificate.time_ns,
        )
        self._certificates[key] = entry
        if len(self._certificates) > self.cache_size:
            self._certificates.popitem(last=False)
        return entry

    def clear(self) -> None:
        """Forget every certificate and tree seen (the next batch is verified from scratch)."""
        self._certificates.clear()
        self._last_tree = None


# The compiled twin (icws_fast/_ext/_wsbatch.pyx) takes over unless ICWS_FAST_PURE=1.
check_messages = _ext.twin("_wsbatch", check_messages_pure)
