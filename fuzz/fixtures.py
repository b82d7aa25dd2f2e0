"""The fixed world the targets run in: test vectors, keys, identities and signed messages.

Seeds come from ``../shared/vectors`` (``ICWS_VECTORS`` overrides the folder) and from
well-formed messages signed here with fixed keys, so that mutations start from inputs
that get past signature checks. Nothing here is random: the same seeds every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Final

from icws_fast.ic import bls, cbor, hashtree, leb128
from icws_fast.ic.certificate import encode_delegation, sign_certificate
from icws_fast.ic.identity import DelegationChain, DelegationIdentity, Ed25519Identity
from icws_fast.ic.principal import Principal

VECTORS: Final = Path(os.environ.get("ICWS_VECTORS", Path(__file__).resolve().parents[1].parent / "shared" / "vectors"))

NOW_NS: Final = 1_700_000_000_000_000_000
"""The wall clock every target runs at (2023-11-14)."""
CANISTER: Final = Principal.from_text("bnz7o-iuaaa-aaaaa-qaaaa-cai")
SUBNET: Final = Principal(bytes(range(29)))
GATEWAY: Final = Ed25519Identity.from_seed(b"\x07" * 32).sender
CLIENT: Final = Ed25519Identity.from_seed(b"\x05" * 32)
CLIENT_NONCE: Final = 0x0123456789ABCDEF
ROOT_SECRET: Final = bls.generate_secret_key(b"icws_fast fuzz root key")
SUBNET_SECRET: Final = bls.generate_secret_key(b"icws_fast fuzz subnet key")
ROOT_KEY_DER: Final = bls.der_encode_public_key(bls.public_key(ROOT_SECRET))
SUBNET_KEY_DER: Final = bls.der_encode_public_key(bls.public_key(SUBNET_SECRET))


def records(name: str) -> list[dict[str, Any]]:
    """The records of ``<vectors>/<name>.json``; a missing file says where it was looked for."""
    path = VECTORS / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"test vectors not found at {path}: put ../shared beside the repository or set ICWS_VECTORS")
    recs: list[dict[str, Any]] = json.loads(path.read_text())["records"]
    return recs


def delegated_client() -> DelegationIdentity:
    """The client signing through a two-link delegation chain (the last link restricted to :data:`CANISTER`)."""
    middle = Ed25519Identity.from_seed(b"\x06" * 32)
    chain = DelegationChain.create(CLIENT, middle.der_public_key, NOW_NS + 10**12)
    session = Ed25519Identity.from_seed(b"\x08" * 32)
    chain = DelegationChain.create(middle, session.der_public_key, NOW_NS + 10**12, [CANISTER], chain)
    return DelegationIdentity(session, chain)


def delegation_tree() -> hashtree.Node:
    """The tree of the root's delegation to :data:`SUBNET`: its key, and ranges covering :data:`CANISTER`.

    The ranges appear in both layouts, sharded (``/canister_ranges``) and legacy (``/subnet/<id>``).
    """
    ranges = cbor.encode([[CANISTER.bytes, CANISTER.bytes]])
    return hashtree.build(
        {
            b"canister_ranges": {SUBNET.bytes: {CANISTER.bytes: ranges}},
            b"subnet": {SUBNET.bytes: {b"public_key": SUBNET_KEY_DER, b"canister_ranges": ranges}},
            b"time": leb128.leb128(NOW_NS),
        }
    )


def canister_tree(certified_data: bytes) -> hashtree.Node:
    """A state tree holding :data:`CANISTER`'s ``certified_data`` and the time :data:`NOW_NS`."""
    return hashtree.build(
        {b"canister": {CANISTER.bytes: {b"certified_data": certified_data}}, b"time": leb128.leb128(NOW_NS)}
    )


def delegation(tree: hashtree.Node) -> bytes:
    """A delegation map to :data:`SUBNET` whose certificate, over ``tree``, the root key signs."""
    return encode_delegation(SUBNET, sign_certificate(tree, ROOT_SECRET))


@functools.lru_cache(maxsize=1)
def _delegation() -> bytes:
    return delegation(delegation_tree())


def certify(certified_data: bytes, *, delegated: bool = False) -> bytes:
    """A certificate for :data:`CANISTER`'s ``certified_data`` at :data:`NOW_NS`, signed by the fuzz root key.

    ``delegated``: signed by the subnet key through a delegation from the root key, as mainnet does.
    """
    tree = canister_tree(certified_data)
    if delegated:
        return sign_certificate(tree, SUBNET_SECRET, _delegation())
    return sign_certificate(tree, ROOT_SECRET)


def certify_message(key: str, content: bytes, *, delegated: bool = False) -> tuple[bytes, bytes]:
    """(certificate, tree CBOR) certifying ``content`` under ``["websocket", key]`` as the CDK does."""
    tree = hashtree.build({b"websocket": {key.encode(): hashlib.sha256(content).digest()}})
    return certify(hashtree.reconstruct(tree), delegated=delegated), hashtree.to_cbor(tree)
