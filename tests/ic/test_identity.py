"""Identities: known keys and principals, PEM formats, ECDSA encoding, delegations, verify_signature."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Any

import ecdsa
import pytest

from icws_fast.errors import DecodeError
from icws_fast.ic.identity import (
    DELEGATION_DOMAIN,
    ED25519_DER_PREFIX,
    P256_DER_PREFIX,
    SECP256K1_DER_PREFIX,
    AnonymousIdentity,
    DelegationChain,
    DelegationIdentity,
    Ed25519Identity,
    P256Identity,
    Secp256k1Identity,
    identity_from_pem,
    verify_signature,
)
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import hash_of_map
from tests.vectors import load_vectors

SECP256K1_ORDER = ecdsa.SECP256k1.order
P256_ORDER = ecdsa.NIST256p.order

SEEDED = [r for r in load_vectors("principals") if "ed25519_seed_hex" in r]
GOLDEN_CHAIN = next(r for r in load_vectors("envelopes") if r["id"] == "agentjs-delegation-chain-golden")

# A secp256k1 key made with `openssl ecparam -genkey` (dfx's format, with the EC PARAMETERS block) and
# its DER public key, from dfinity/agent-rs ic-agent/src/identity/secp256k1.rs tests; the principal
# of that key is the `selfauth-secp256k1` record of principals.json.
AGENT_RS_SECP256K1_PEM = """-----BEGIN EC PARAMETERS-----
BgUrgQQACg==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHQCAQEEIAgy7nZEcVHkQ4Z1Kdqby8SwyAiyKDQmtbEHTIM+WNeBoAcGBSuBBAAK
oUQDQgAEgO87rJ1ozzdMvJyZQ+GABDqUxGLvgnAnTlcInV3NuhuPv4O3VGzMGzeB
N3d26cRxD99TPtm8uo2OuzKhSiq6EQ==
-----END EC PRIVATE KEY-----
"""
AGENT_RS_SECP256K1_PRINCIPAL = "t2kpu-6xt6l-tyb3d-rll2p-irv5c-no5nd-h6spj-jsetq-bmqdz-iap77-pqe"

# RFC 8032 section 7.1, test 1 (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

ALL_KINDS = [Ed25519Identity, Secp256k1Identity, P256Identity]


def _pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


@pytest.mark.parametrize("record", SEEDED, ids=[r["id"] for r in SEEDED])
def test_ed25519_seed_gives_mainnet_principal(record: dict[str, Any]) -> None:
    identity = Ed25519Identity.from_seed(bytes.fromhex(record["ed25519_seed_hex"]))
    assert identity.der_public_key.hex() == record["der_public_key_hex"]
    assert identity.sender.to_text() == record["text"]
    assert identity.delegations is None


def test_rfc8032_known_answer() -> None:
    identity = Ed25519Identity.from_seed(RFC8032_SECRET)
    assert identity.der_public_key == ED25519_DER_PREFIX + RFC8032_PUBLIC
    assert identity.sign(b"") == RFC8032_SIGNATURE
    assert verify_signature(identity.der_public_key, b"", RFC8032_SIGNATURE)


def test_secp256k1_pem_from_openssl() -> None:
    identity = Secp256k1Identity.from_pem(AGENT_RS_SECP256K1_PEM)
    assert identity.der_public_key.startswith(SECP256K1_DER_PREFIX)
    assert identity.der_public_key.hex() == (
        "3056301006072a8648ce3d020106052b8104000a0342000480ef3bac9d68cf374cbc9c9943e180043a94c462ef8270274e57089d5dcdba"
        "1b8fbf83b7546ccc1b3781377776e9c4710fdf533ed9bcba8d8ebb32a14a2aba11"
    )
    assert identity.sender.to_text() == AGENT_RS_SECP256K1_PRINCIPAL
    assert isinstance(identity_from_pem(AGENT_RS_SECP256K1_PEM), Secp256k1Identity)
    # What we write is the SEC1 "EC PRIVATE KEY" form dfx writes, and it loads back.
    written = identity.to_pem()
    assert written.startswith("-----BEGIN EC PRIVATE KEY-----")
    assert Secp256k1Identity.from_pem(written).der_public_key == identity.der_public_key


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_pem_round_trip_and_formats(kind: Any) -> None:
    identity = kind.generate()
    pem = identity.to_pem()
    again = kind.from_pem(pem.encode())
    assert again.der_public_key == identity.der_public_key
    assert type(identity_from_pem(pem)) is kind
    label = "PRIVATE KEY" if kind is Ed25519Identity else "EC PRIVATE KEY"
    assert pem.startswith(f"-----BEGIN {label}-----")


def test_ecdsa_loads_pkcs8_too() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert P256Identity.from_pem(pkcs8).der_public_key == P256Identity(key).der_public_key


def test_ed25519_pkcs8_v2_as_older_dfx_wrote() -> None:
    seed = bytes(32)
    identity = Ed25519Identity.from_seed(seed)
    public = identity.der_public_key[-32:]
    explicit = bytes.fromhex("3053020101300506032b657004220420") + seed + bytes.fromhex("a123032100") + public
    implicit = bytes.fromhex("3051020101300506032b657004220420") + seed + bytes.fromhex("812100") + public
    for der in (explicit, implicit):
        loaded = Ed25519Identity.from_pem(_pem("PRIVATE KEY", der))
        assert loaded.der_public_key == identity.der_public_key
        assert isinstance(identity_from_pem(_pem("PRIVATE KEY", der)), Ed25519Identity)
    # The embedded public key must match the seed.
    wrong = explicit[:-1] + bytes([explicit[-1] ^ 1])
    with pytest.raises(DecodeError):
        Ed25519Identity.from_pem(_pem("PRIVATE KEY", wrong))


def test_ed25519_der_as_the_rust_gateway_stores_it() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    identity = Ed25519Identity.generate()
    der = identity.to_der()
    # ring 0.17's PKCS#8 v2 layout: header, seed, implicit [1] public key.
    assert len(der) == 83
    assert der.startswith(bytes.fromhex("3051020101300506032b657004220420"))
    assert der[48:51] == bytes.fromhex("812100")
    assert Ed25519Identity.from_der(der).der_public_key == identity.der_public_key
    # python-ecdsa reads the same document independently.
    assert ecdsa.SigningKey.from_der(der).get_verifying_key().to_string() == identity.der_public_key[-32:]
    legacy = bytes.fromhex("3053020101300506032b657004220420") + der[16:48] + bytes.fromhex("a123032100") + der[-32:]
    assert Ed25519Identity.from_der(legacy).der_public_key == identity.der_public_key
    key = ed25519.Ed25519PrivateKey.generate()
    v1 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert Ed25519Identity.from_der(v1).der_public_key == Ed25519Identity(key).der_public_key
    k1_der = serialization.load_pem_private_key(Secp256k1Identity.generate().to_pem().encode(), None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for bad in (b"", der[:-1], der[:-1] + bytes([der[-1] ^ 1]), der + b"\x00", k1_der):
        with pytest.raises(DecodeError):
            Ed25519Identity.from_der(bad)


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "not a pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        b"\xff\xfe",
    ],
)
def test_bad_pem(pem: str | bytes) -> None:
    for kind in ALL_KINDS:
        with pytest.raises(DecodeError):
            kind.from_pem(pem)
    with pytest.raises(DecodeError):
        identity_from_pem(pem)


def test_pem_of_the_wrong_kind() -> None:
    ed = Ed25519Identity.generate().to_pem()
    k1 = Secp256k1Identity.generate().to_pem()
    r1 = P256Identity.generate().to_pem()
    for kind, foreign in ((Ed25519Identity, k1), (Secp256k1Identity, r1), (P256Identity, ed), (P256Identity, k1)):
        with pytest.raises(DecodeError):
            kind.from_pem(foreign)


def test_seeds() -> None:
    for kind in ALL_KINDS:
        with pytest.raises(DecodeError):
            kind.from_seed(bytes(31))
        a, b = kind.from_seed(b"\x01" * 32), kind.from_seed(b"\x01" * 32)
        assert a.der_public_key == b.der_public_key
    for kind, order in ((Secp256k1Identity, SECP256K1_ORDER), (P256Identity, P256_ORDER)):
        for bad in (0, order, (1 << 256) - 1):
            with pytest.raises(DecodeError):
                kind.from_seed(bad.to_bytes(32, "big"))
        # The seed is the secret scalar itself, as in agent-js.
        scalar = 12345
        expected = ecdsa.SigningKey.from_secret_exponent(
            scalar, curve=ecdsa.SECP256k1 if kind is Secp256k1Identity else ecdsa.NIST256p
        )
        point = b"\x04" + expected.get_verifying_key().to_string()
        assert kind.from_seed(scalar.to_bytes(32, "big")).der_public_key[-65:] == point


@pytest.mark.parametrize(
    ("kind", "curve", "order", "prefix"),
    [
        (Secp256k1Identity, ecdsa.SECP256k1, SECP256K1_ORDER, SECP256K1_DER_PREFIX),
        (P256Identity, ecdsa.NIST256p, P256_ORDER, P256_DER_PREFIX),
    ],
)
def test_ecdsa_low_s_raw_and_independently_checked(kind: Any, curve: Any, order: int, prefix: bytes) -> None:
    identity = kind.generate()
    der = identity.der_public_key
    assert der.startswith(prefix) and len(der) == len(prefix) + 65 and der[len(prefix)] == 4
    # python-ecdsa is an independent implementation of the curve arithmetic.
    verifying_key = ecdsa.VerifyingKey.from_string(der[len(prefix) :], curve=curve, hashfunc=hashlib.sha256)
    for i in range(20):
        message = b"\x0aic-request" + bytes([i]) * 32
        signature = identity.sign(message)
        assert len(signature) == 64
        s = int.from_bytes(signature[32:], "big")
        assert s <= order // 2
        assert verifying_key.verify(signature, message, sigdecode=ecdsa.util.sigdecode_string)
        assert verify_signature(der, message, signature)
        assert not verify_signature(der, message + b"!", signature)
        high_s = signature[:32] + (order - s).to_bytes(32, "big")
        # The IC accepts the malleable high-S twin for both curves (we only ever sign low-S).
        assert verify_signature(der, message, high_s)


def test_verify_foreign_ecdsa_signature() -> None:
    signing_key = ecdsa.SigningKey.generate(curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    der = P256_DER_PREFIX + b"\x04" + signing_key.get_verifying_key().to_string()
    signature = signing_key.sign(b"hello", sigencode=ecdsa.util.sigencode_string)
    assert verify_signature(der, b"hello", signature)


def test_verify_signature_rejects_malformed_input() -> None:
    ed = Ed25519Identity.generate()
    k1 = Secp256k1Identity.generate()
    message = b"message"
    good_ed = ed.sign(message)
    good_k1 = k1.sign(message)
    assert verify_signature(ed.der_public_key, message, good_ed)
    assert verify_signature(bytearray(ed.der_public_key), memoryview(message), bytes(good_ed))
    n = SECP256K1_ORDER
    bad_cases: list[tuple[bytes, bytes]] = [
        (ed.der_public_key, good_ed[:-1]),
        (ed.der_public_key, good_ed + b"\x00"),
        (ed.der_public_key, bytes(64)),
        (ed.der_public_key[:-1], good_ed),
        (ed.der_public_key + b"\x00", good_ed),
        (ed.der_public_key[len(ED25519_DER_PREFIX) :], good_ed),
        (b"", good_ed),
        (k1.der_public_key, good_ed),
        (ed.der_public_key, good_k1),
        (k1.der_public_key, bytes(32) + good_k1[32:]),
        (k1.der_public_key, good_k1[:32] + bytes(32)),
        (k1.der_public_key, n.to_bytes(32, "big") + good_k1[32:]),
        (k1.der_public_key, good_k1[:32] + n.to_bytes(32, "big")),
        (k1.der_public_key, b"\xff" * 64),
        # A point that is not on the curve.
        (SECP256K1_DER_PREFIX + b"\x04" + b"\x01" * 64, good_k1),
        # A compressed point: valid key, but the spec requires the uncompressed form.
        (SECP256K1_DER_PREFIX[:-1] + b"\x02" + b"\x02" + k1.der_public_key[-64:-32], good_k1),
        # P-256 prefix with a secp256k1 point.
        (P256_DER_PREFIX + k1.der_public_key[-65:], good_k1),
    ]
    for der, signature in bad_cases:
        assert verify_signature(der, message, signature) is False


def test_verify_signature_random_garbage_never_raises() -> None:
    rng = random.Random(7)
    keys = [kind.generate().der_public_key for kind in ALL_KINDS]
    for _ in range(300):
        base = rng.choice(keys)
        der = bytearray(base)
        if rng.random() < 0.7:
            der[rng.randrange(len(der))] ^= 1 << rng.randrange(8)
        else:
            der = bytearray(rng.randbytes(rng.randrange(100)))
        signature = rng.randbytes(rng.choice([0, 63, 64, 64, 65]))
        assert verify_signature(bytes(der), b"m", signature) in (False, True)


def test_anonymous() -> None:
    anonymous = AnonymousIdentity()
    assert anonymous.sender == Principal.anonymous()
    assert anonymous.der_public_key is None
    assert anonymous.delegations is None
    with pytest.raises(ValueError):
        anonymous.sign(b"x")
    with pytest.raises(ValueError):
        DelegationChain.create(anonymous, Ed25519Identity.generate().der_public_key, 1)


def test_golden_delegation_chain() -> None:
    root = Ed25519Identity.from_seed(bytes.fromhex("02" + "00" * 31))
    middle = Ed25519Identity.from_seed(bytes.fromhex("01" + "00" * 31))
    session = Ed25519Identity.from_seed(bytes.fromhex(GOLDEN_CHAIN["session_key_seed_hex"]))
    assert root.der_public_key.hex() == GOLDEN_CHAIN["sender_pubkey_der_hex"]
    expiration = GOLDEN_CHAIN["sender_delegation"][0]["delegation"]["expiration"]["nat"]
    chain = DelegationChain.create(root, middle.der_public_key, expiration)
    chain = DelegationChain.create(middle, session.der_public_key, expiration, previous=chain)
    assert chain.public_key == root.der_public_key
    signers = [root, middle]
    for link, expected, signer in zip(chain.delegations, GOLDEN_CHAIN["sender_delegation"], signers, strict=True):
        assert link["delegation"]["pubkey"].hex() == expected["delegation"]["pubkey"]["blob"]
        assert hash_of_map(link["delegation"]).hex() == expected["delegation_hash"]
        message = DELEGATION_DOMAIN + hash_of_map(link["delegation"])
        assert message.hex() == expected["signed_message_hex"]
        assert link["signature"].hex() == expected["signature_hex"]
        assert verify_signature(signer.der_public_key, message, link["signature"])
    assert json.loads(chain.to_json()) == GOLDEN_CHAIN["agentjs_json_form"]
    parsed = DelegationChain.from_json(json.dumps(GOLDEN_CHAIN["agentjs_json_form"]))
    assert parsed.public_key == chain.public_key and parsed.delegations == chain.delegations

    identity = DelegationIdentity(session, chain)
    assert identity.sender.to_text() == GOLDEN_CHAIN["sender_principal"]
    assert identity.der_public_key == root.der_public_key
    assert identity.delegations == chain.delegations
    assert identity.chain is chain
    assert identity.sign(b"m") == session.sign(b"m")


def test_delegation_targets_and_json_round_trip() -> None:
    root, session = Secp256k1Identity.generate(), P256Identity.generate()
    targets = [Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai"), Principal.from_text("rrkah-fqaaa-aaaaa-aaaaq-cai")]
    chain = DelegationChain.create(root, session.der_public_key, 1 << 63, targets=targets)
    delegation = chain.delegations[0]["delegation"]
    assert delegation["targets"] == [t.bytes for t in targets]
    assert verify_signature(
        root.der_public_key, DELEGATION_DOMAIN + hash_of_map(delegation), chain.delegations[0]["signature"]
    )
    again = DelegationChain.from_json(chain.to_json())
    assert again.delegations == chain.delegations and again.public_key == chain.public_key


def test_delegation_misuse() -> None:
    root, middle, session, stranger = (Ed25519Identity.generate() for _ in range(4))
    chain = DelegationChain.create(root, middle.der_public_key, 1)
    with pytest.raises(ValueError):
        DelegationChain.create(stranger, session.der_public_key, 1, previous=chain)
    with pytest.raises(ValueError):
        DelegationIdentity(stranger, chain)
    with pytest.raises(ValueError):
        DelegationIdentity(middle, DelegationChain(root.der_public_key, []))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"delegations": [], "publicKey": "zz"}',
        '{"delegations": [{"delegation": {"pubkey": "00", "expiration": 5}, "signature": "00"}], "publicKey": "00"}',
        '{"delegations": [{"delegation": {"pubkey": "00", "expiration": "g"}, "signature": "00"}], "publicKey": "00"}',
        '{"delegations": [{"delegation": {"pubkey": "00", "expiration": "1", "targets": ["' + "00" * 30 + '"]},'
        ' "signature": "00"}], "publicKey": "00"}',
        '{"delegations": [1], "publicKey": "00"}',
    ],
)
def test_delegation_json_malformed(text: str) -> None:
    with pytest.raises(DecodeError):
        DelegationChain.from_json(text)


def test_oversized_keys_never_reach_the_key_cache() -> None:
    # A sender picks its key bytes: a cache keyed on them must not hold frames of any size.
    from icws_fast.ic import identity

    identity._parse_public_key.cache_clear()
    for n in range(50):
        huge = ED25519_DER_PREFIX + bytes([n]) * (64 * 1024)
        assert verify_signature(huge, b"m", bytes(64)) is False
    assert identity._parse_public_key.cache_info().currsize == 0
    good = Ed25519Identity.generate()
    assert verify_signature(good.der_public_key, b"m", good.sign(b"m")) is True
    assert identity._parse_public_key.cache_info().currsize == 1


@pytest.mark.parametrize("kind", [Ed25519Identity, Secp256k1Identity, P256Identity, "delegation"])
def test_sender_is_the_key_principal_computed_once(kind: Any) -> None:
    if kind == "delegation":
        root, session = Ed25519Identity.generate(), Ed25519Identity.generate()
        identity = DelegationIdentity(session, DelegationChain.create(root, session.der_public_key, 1 << 62))
        expected = Principal.self_authenticating(root.der_public_key)
    else:
        identity = kind.generate()
        expected = Principal.self_authenticating(identity.der_public_key)
    assert identity.sender == expected
    assert identity.sender is identity.sender  # kept, not hashed again for every request
