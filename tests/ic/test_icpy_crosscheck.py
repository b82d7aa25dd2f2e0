"""Cross-checks against ic-py (rocklabs-io/ic-py 1.0.1), an independent Python implementation.

Only where ic-py is right: principal text, flat request ids, Ed25519 keys and signatures, the
secp256k1 public key encoding, signed envelopes, and Candid for primitive types. Where ic-py is
wrong or missing (see docs/dependencies.md) our behaviour is checked against the spec instead.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.ic import cbor
from icws_fast.ic.envelope import build_envelope, call_content, parse_envelope, verify_envelope
from icws_fast.ic.identity import (
    DelegationChain,
    DelegationIdentity,
    Ed25519Identity,
    Secp256k1Identity,
    verify_signature,
)
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import REQUEST_DOMAIN, request_id
from tests.ic.test_request_id import typed_map
from tests.vectors import load_vectors

icpy_agent = pytest.importorskip("ic.agent")
icpy_identity = pytest.importorskip("ic.identity")
icpy_principal = pytest.importorskip("ic.principal")
icpy_utils = pytest.importorskip("ic.utils")

PRINCIPALS = [r for r in load_vectors("principals") if r["valid"]]
SECOND = 1_000_000_000


def _flat(content: dict[str, Any]) -> bool:
    """ic-py hashes only blobs, text, nats and (nested) arrays of those; no nested maps, no signed ints."""
    return not any(isinstance(value, dict) for value in content.values())


REQUEST_IDS = [r for r in load_vectors("request_ids") if _flat(typed_map(r["content"]))]


@pytest.mark.parametrize("record", PRINCIPALS, ids=[r["id"] for r in PRINCIPALS])
def test_principal_text_agrees(record: dict[str, Any]) -> None:
    raw = bytes.fromhex(record["hex"])
    ours = Principal(raw).to_text()
    assert icpy_principal.Principal(raw).to_str() == ours
    assert icpy_principal.Principal.from_str(ours).bytes == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=29))
def test_principal_text_agrees_on_random_bytes(raw: bytes) -> None:
    text = Principal(raw).to_text()
    assert icpy_principal.Principal(raw).to_str() == text
    assert icpy_principal.Principal.from_str(text).bytes == raw
    assert Principal.self_authenticating(raw).bytes == icpy_principal.Principal.self_authenticating(raw).bytes


@pytest.mark.parametrize("record", REQUEST_IDS, ids=[r["id"] for r in REQUEST_IDS])
def test_request_id_agrees_on_vectors(record: dict[str, Any]) -> None:
    content = typed_map(record["content"])
    assert icpy_utils.to_request_id(content) == request_id(content) == bytes.fromhex(record["request_id"])


_flat_values = (
    st.binary(max_size=30)
    | st.text(max_size=20)
    | st.integers(min_value=0, max_value=(1 << 64) - 1)
    | st.lists(st.lists(st.binary(max_size=10), max_size=3), max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), _flat_values, max_size=8))
def test_request_id_agrees_on_random_flat_maps(content: dict[str, Any]) -> None:
    assert icpy_utils.to_request_id(content) == request_id(content)


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), b"\xff" * 32])
def test_ed25519_keys_and_signatures_agree(seed: bytes) -> None:
    theirs = icpy_identity.Identity(privkey=seed.hex(), type="ed25519")
    ours = Ed25519Identity.from_seed(seed)
    assert theirs.der_pubkey == ours.der_public_key
    assert theirs.sender().bytes == ours.sender.bytes
    message = REQUEST_DOMAIN + bytes(32)
    # Ed25519 is deterministic: both implementations must produce the same bytes.
    _, signature = theirs.sign(message)
    assert signature == ours.sign(message)


def test_secp256k1_public_key_agrees_and_high_s_is_accepted() -> None:
    scalar = (0x1234567890ABCDEF << 64).to_bytes(32, "big")
    theirs = icpy_identity.Identity(privkey=scalar.hex(), type="secp256k1")
    ours = Secp256k1Identity.from_seed(scalar)
    assert theirs.der_pubkey == ours.der_public_key
    assert theirs.sender().bytes == ours.sender.bytes
    # ic-py does not normalise s; the IC's ingress check is the malleable one, and so is ours.
    for i in range(16):
        message = REQUEST_DOMAIN + bytes([i]) * 32
        _, signature = theirs.sign(message)
        assert verify_signature(ours.der_public_key, message, signature)
        assert not verify_signature(ours.der_public_key, message + b"!", signature)


def test_icpy_signed_envelope_verifies_here() -> None:
    identity = icpy_identity.Identity(privkey=bytes(32).hex(), type="ed25519")
    ours = Ed25519Identity.from_seed(bytes(32))
    canister = Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
    expiry = 1_700_000_000 * SECOND
    content = call_content(ours.sender, canister, "greet", b"DIDL\x00\x00", ingress_expiry_ns=expiry)
    request, data = icpy_agent.sign_request(dict(content), identity)
    assert request == request_id(content)
    env = parse_envelope(data)
    verify_envelope(env, now_ns=expiry - 60 * SECOND, effective_canister_id=canister)
    # Same content and deterministic Ed25519: ic-py's envelope (no self-describe tag) equals ours.
    assert cbor.decode(data) == cbor.decode(build_envelope(ours, content))


def test_icpy_delegated_envelope_verifies_here() -> None:
    record = next(r for r in load_vectors("envelopes") if r["id"] == "agentjs-delegation-chain-golden")
    session_seed = bytes.fromhex(record["session_key_seed_hex"])
    theirs = icpy_identity.DelegateIdentity(
        icpy_identity.Identity(privkey=session_seed.hex(), type="ed25519"), record["agentjs_json_form"]
    )
    chain = DelegationChain.from_json(json.dumps(record["agentjs_json_form"]))
    ours = DelegationIdentity(Ed25519Identity.from_seed(session_seed), chain)
    assert theirs.sender().bytes == ours.sender.bytes
    expiration = chain.delegations[0]["delegation"]["expiration"]
    now = expiration - 10 * 60 * SECOND
    canister = Principal.from_text("rrkah-fqaaa-aaaaa-aaaaq-cai")
    content = call_content(ours.sender, canister, "m", b"DIDL\x00\x00", ingress_expiry_ns=now + 60 * SECOND)
    _, data = icpy_agent.sign_request(dict(content), theirs)
    verify_envelope(parse_envelope(data), now_ns=now)
    assert cbor.decode(data) == cbor.decode(build_envelope(ours, content))


def _candid() -> Any:
    candid = pytest.importorskip("icws_fast.ic.candid")
    if not all(hasattr(candid, name) for name in ("parse_type", "encode", "decode")):
        pytest.skip("icws_fast.ic.candid is not complete yet")
    return candid


_CANDID_CASES = [
    ("nat", "Nat", st.integers(min_value=0, max_value=1 << 100)),
    ("int", "Int", st.integers(min_value=-(1 << 100), max_value=1 << 100)),
    ("nat8", "Nat8", st.integers(min_value=0, max_value=255)),
    ("nat64", "Nat64", st.integers(min_value=0, max_value=(1 << 64) - 1)),
    ("int32", "Int32", st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1)),
    ("text", "Text", st.text(max_size=30)),
    ("bool", "Bool", st.booleans()),
]


@pytest.mark.parametrize(("candid_type", "icpy_type", "values"), _CANDID_CASES, ids=[c[0] for c in _CANDID_CASES])
def test_candid_primitives_agree(candid_type: str, icpy_type: str, values: Any) -> None:
    candid = _candid()
    icpy_candid = pytest.importorskip("ic.candid")
    parsed = candid.parse_type(candid_type)

    @settings(max_examples=60, deadline=None)
    @given(values)
    def check(value: Any) -> None:
        ours = candid.encode([parsed], [value])
        theirs = icpy_candid.encode([{"type": getattr(icpy_candid.Types, icpy_type), "value": value}])
        assert ours == theirs
        assert candid.decode(theirs, [parsed]) == [value]
        assert icpy_candid.decode(ours)[0]["value"] == value

    check()


def test_candid_principal_agrees() -> None:
    candid = _candid()
    icpy_candid = pytest.importorskip("ic.candid")
    for record in PRINCIPALS[:10]:
        principal = Principal.from_text(record["text"])
        theirs = icpy_candid.encode([{"type": icpy_candid.Types.Principal, "value": principal.to_text()}])
        assert candid.encode([candid.parse_type("principal")], [principal]) == theirs
        assert candid.decode(theirs, [candid.parse_type("principal")]) == [principal]
