"""Sender identities: key pairs that sign requests, the anonymous sender, and delegations.

Keys follow the IC interface specification ("Signatures"): public keys travel DER-encoded
with the fixed prefixes below followed by the raw key (ECDSA points uncompressed), ECDSA
signatures are the 64-byte ``r || s`` over SHA-256 of the message. Private keys load from
and save to the PEM files dfx and agent-js use: PKCS#8 ``PRIVATE KEY`` for Ed25519 (also
the version-2 form with the public key that older dfx wrote) and SEC1 ``EC PRIVATE KEY``
(or PKCS#8) for ECDSA.

A delegation chain lets a session key sign for a root key: each link is
``{pubkey, expiration, targets?, permissions?}`` signed by the previous key over
``b"\\x1aic-request-auth-delegation" || hash_of_map(link)``.

Local misuse (an anonymous signer, a chain that does not end at the session key) raises
``ValueError``; malformed key material (PEM, seeds, agent-js JSON) raises
:class:`~icws_fast.errors.DecodeError`, itself a ``ValueError``.
"""

from __future__ import annotations

import base64
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Final, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from icws_fast.errors import DecodeError
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import hash_of_map

ED25519_DER_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
SECP256K1_DER_PREFIX: Final = bytes.fromhex("3056301006072a8648ce3d020106052b8104000a034200")
P256_DER_PREFIX: Final = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
DELEGATION_DOMAIN: Final = b"\x1aic-request-auth-delegation"

_SECP256K1_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_E = TypeVar("_E", bound="_EcdsaIdentity")

# PKCS#8 version 2 (RFC 5958 OneAsymmetricKey) Ed25519 keys, which `cryptography` does not read:
# header, 32-byte seed, public-key field header, 32-byte public key. ring before 0.17 (and so older
# dfx) wrote the public key with an explicit [1] tag (a1 23 03 21 00); ring 0.17 and RFC 5958 use the
# implicit one (81 21 00).
_ED25519_PKCS8_V2: Final = (
    (bytes.fromhex("3053020101300506032b657004220420"), bytes.fromhex("a123032100")),
    (bytes.fromhex("3051020101300506032b657004220420"), bytes.fromhex("812100")),
)


class Identity(ABC):
    """Something that can send requests: a principal, and (unless anonymous) a key that signs them."""

    __slots__ = ("_sender",)

    _sender: Principal

    @property
    def sender(self) -> Principal:
        """The ``sender`` principal of requests signed by this identity (self-authenticating by default).

        Computed once (a SHA-224 of the key): every request names it, and the key never changes.
        """
        try:
            return self._sender
        except AttributeError:
            der = self.der_public_key
            if der is None:
                raise NotImplementedError("an identity without a key must override sender") from None
            self._sender = Principal.self_authenticating(der)
            return self._sender

    @property
    @abstractmethod
    def der_public_key(self) -> bytes | None:
        """The DER public key that goes into ``sender_pubkey``; None for the anonymous identity."""

    @property
    def delegations(self) -> list[dict[str, Any]] | None:
        """The ``sender_delegation`` list in envelope CBOR form, or None without delegations."""
        return None

    @abstractmethod
    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (the domain separator is already part of it)."""


_ANONYMOUS: Final = Principal.anonymous()


class AnonymousIdentity(Identity):
    """The anonymous sender (principal ``2vxsx-fae``): requests carry no key and no signature."""

    __slots__ = ()

    @property
    def sender(self) -> Principal:
        return _ANONYMOUS

    @property
    def der_public_key(self) -> None:
        return None

    def sign(self, message: bytes) -> bytes:
        raise ValueError("the anonymous identity cannot sign")


def _pem_bytes(pem: str | bytes) -> bytes:
    return pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)


def _load_pem(pem: str | bytes) -> Any:
    """The private key in a PEM file (any type), or DecodeError."""
    data = _pem_bytes(pem)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        key = _ed25519_from_pkcs8_v2(_pem_body(data, "PRIVATE KEY"))
        if key is None:
            raise DecodeError(f"unreadable private key PEM: {exc}") from None
        return key


def _pem_body(pem: bytes, label: str) -> bytes:
    """The DER inside a single-block PEM with ``label``, or b"" when it is not one."""
    try:
        lines = pem.decode("ascii").strip().splitlines()
        if len(lines) < 2 or lines[0] != f"-----BEGIN {label}-----" or lines[-1] != f"-----END {label}-----":
            return b""
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        return b""


def _ed25519_from_pkcs8_v2(der: bytes) -> ed25519.Ed25519PrivateKey | None:
    """The key of a version-2 PKCS#8 Ed25519 document whose embedded public key matches it, else None."""
    for header, pub_header in _ED25519_PKCS8_V2:
        if len(der) == len(header) + 32 + len(pub_header) + 32 and der.startswith(header):
            seed_end = len(header) + 32
            if der[seed_end : seed_end + len(pub_header)] != pub_header:
                return None
            key = ed25519.Ed25519PrivateKey.from_private_bytes(der[len(header) : seed_end])
            public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return key if public == der[-32:] else None
    return None


class Ed25519Identity(Identity):
    """An Ed25519 key pair (the default kind of dfx and agent identities)."""

    __slots__ = ("_der", "_key")

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._der = ED25519_DER_PREFIX + raw

    @classmethod
    def generate(cls) -> Ed25519Identity:
        """A fresh random key pair."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Identity:
        """The key pair of a 32-byte secret seed (as agent-js ``Ed25519KeyIdentity.generate(seed)``)."""
        if len(seed) != 32:
            raise DecodeError(f"an Ed25519 seed has 32 bytes, not {len(seed)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> Ed25519Identity:
        """Load a PKCS#8 ``PRIVATE KEY`` PEM (version 1, or version 2 as older dfx wrote it)."""
        key = _load_pem(pem)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DecodeError(f"PEM holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    @classmethod
    def from_der(cls, der: bytes) -> Ed25519Identity:
        """Load a PKCS#8 DER document, version 1 or 2.

        The Rust gateway stores ring's ``generate_pkcs8`` output (version 2) in ``./data/key_pair``.
        """
        try:
            key: Any = serialization.load_der_private_key(bytes(der), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            key = _ed25519_from_pkcs8_v2(bytes(der))
            if key is None:
                raise DecodeError(f"unreadable PKCS#8 private key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DecodeError(f"DER holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> str:
        """The PKCS#8 ``PRIVATE KEY`` PEM of the key."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    def to_der(self) -> bytes:
        """The version-2 PKCS#8 DER document of the key (with the public key), as ring 0.17 writes it."""
        seed = self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        header, pub_header = _ED25519_PKCS8_V2[1]
        return header + seed + pub_header + self._der[len(ED25519_DER_PREFIX) :]

    @property
    def der_public_key(self) -> bytes:
        return self._der

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


class _EcdsaIdentity(Identity):
    """An ECDSA key pair; subclasses fix the curve."""

    __slots__ = ("_der", "_key")
    _CURVE: ClassVar[ec.EllipticCurve]
    _ORDER: ClassVar[int]
    _DER_PREFIX: ClassVar[bytes]

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if private_key.curve.name != self._CURVE.name:
            raise ValueError(f"{type(self).__name__} needs a {self._CURVE.name} key, not {private_key.curve.name}")
        self._key = private_key
        point = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._der = self._DER_PREFIX + point

    @classmethod
    def generate(cls: type[_E]) -> _E:
        """A fresh random key pair."""
        return cls(ec.generate_private_key(cls._CURVE))

    @classmethod
    def from_seed(cls: type[_E], seed: bytes) -> _E:
        """The key pair whose secret scalar is the 32-byte big-endian ``seed`` (as agent-js does)."""
        if len(seed) != 32:
            raise DecodeError(f"an ECDSA seed has 32 bytes, not {len(seed)}")
        scalar = int.from_bytes(seed, "big")
        if not 0 < scalar < cls._ORDER:
            raise DecodeError("ECDSA seed is not a valid secret scalar (zero or not below the group order)")
        return cls(ec.derive_private_key(scalar, cls._CURVE))

    @classmethod
    def from_pem(cls: type[_E], pem: str | bytes) -> _E:
        """Load a SEC1 ``EC PRIVATE KEY`` (as dfx writes) or PKCS#8 ``PRIVATE KEY`` PEM."""
        key = _load_pem(pem)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != cls._CURVE.name:
            raise DecodeError(f"PEM does not hold a {cls._CURVE.name} key")
        return cls(key)

    def to_pem(self) -> str:
        """The SEC1 ``EC PRIVATE KEY`` PEM of the key (the format dfx writes)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode("ascii")

    @property
    def der_public_key(self) -> bytes:
        return self._der

    def sign(self, message: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(message, _ECDSA_SHA256))
        # Low-S form: the canonical one (Bitcoin-style verifiers insist on it); the IC accepts both.
        if s > self._ORDER // 2:
            s = self._ORDER - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class Secp256k1Identity(_EcdsaIdentity):
    """An ECDSA key pair on secp256k1 (dfx ``--storage-mode plaintext`` secp256k1 identities)."""

    __slots__ = ()
    _CURVE = ec.SECP256K1()
    _ORDER = _SECP256K1_ORDER
    _DER_PREFIX = SECP256K1_DER_PREFIX


class P256Identity(_EcdsaIdentity):
    """An ECDSA key pair on P-256 (agent-js ``ECDSAKeyIdentity``)."""

    __slots__ = ()
    _CURVE = ec.SECP256R1()
    _ORDER = _P256_ORDER
    _DER_PREFIX = P256_DER_PREFIX


def identity_from_pem(pem: str | bytes) -> Ed25519Identity | Secp256k1Identity | P256Identity:
    """Load a PEM private key of any supported kind (what ``dfx identity export`` prints)."""
    key = _load_pem(pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Ed25519Identity(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for cls in (Secp256k1Identity, P256Identity):
            if key.curve.name == cls._CURVE.name:
                return cls(key)
    raise DecodeError(f"unsupported private key type {type(key).__name__}")


_MAX_KEY_DER_SIZE = max(len(ED25519_DER_PREFIX) + 32, len(SECP256K1_DER_PREFIX) + 65, len(P256_DER_PREFIX) + 65)


def _public_key(der: bytes) -> tuple[Any, int] | None:
    """The key object and (for ECDSA) the group order of a DER public key; None if not a valid IC key.

    A key longer than any valid one is refused before the cache: the sender picks these bytes, and a
    cache keyed on arbitrary frames of up to the message size limit would let one client pin gigabytes.
    """
    if len(der) > _MAX_KEY_DER_SIZE:
        return None
    return _parse_public_key(der)


@functools.lru_cache(maxsize=4096)
def _parse_public_key(der: bytes) -> tuple[Any, int] | None:
    # Cached because a server verifies the same few client keys again and again.
    try:
        if len(der) == len(ED25519_DER_PREFIX) + 32 and der.startswith(ED25519_DER_PREFIX):
            return ed25519.Ed25519PublicKey.from_public_bytes(der[len(ED25519_DER_PREFIX) :]), 0
        for prefix, curve, order in (
            (SECP256K1_DER_PREFIX, ec.SECP256K1(), _SECP256K1_ORDER),
            (P256_DER_PREFIX, ec.SECP256R1(), _P256_ORDER),
        ):
            # The spec requires uncompressed points (0x04 || x || y).
            if len(der) == len(prefix) + 65 and der.startswith(prefix) and der[len(prefix)] == 4:
                return ec.EllipticCurvePublicKey.from_encoded_point(curve, der[len(prefix) :]), order
    except ValueError:
        return None
    return None


def verify_signature(der_public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``message`` verifies under the DER key (Ed25519, secp256k1 or P-256).

    Unknown or malformed keys and malformed signatures answer False. ECDSA signatures are accepted
    in both low-S and high-S form, as the IC's ingress verifier does (its secp256k1 check is the
    malleable one, because agents such as ic-py sign high-S half of the time).
    """
    loaded = _public_key(bytes(der_public_key))
    if loaded is None or len(signature) != 64:
        return False
    key, order = loaded
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(bytes(signature), bytes(message))
            return True
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < order and 0 < s < order):
            return False
        key.verify(encode_dss_signature(r, s), bytes(message), _ECDSA_SHA256)
        return True
    except InvalidSignature:
        return False


def _delegation_map(
    pubkey: bytes, expiration_ns: int, targets: Sequence[Principal] | None, permissions: str | None
) -> dict[str, Any]:
    delegation: dict[str, Any] = {"pubkey": pubkey, "expiration": expiration_ns}
    if targets is not None:
        delegation["targets"] = [t.bytes for t in targets]
    if permissions is not None:
        delegation["permissions"] = permissions
    return delegation


def delegation_signing_message(delegation: dict[str, Any]) -> bytes:
    """The bytes a delegation's signer signs: the domain separator, then ``hash_of_map(delegation)``."""
    return DELEGATION_DOMAIN + hash_of_map(delegation)


class DelegationChain:
    """A root public key and the signed delegations leading from it to a session key."""

    __slots__ = ("delegations", "public_key")

    def __init__(self, public_key: bytes, delegations: list[dict[str, Any]]) -> None:
        self.public_key = public_key
        self.delegations = delegations

    @classmethod
    def create(
        cls,
        signer: Identity,
        to_der_pubkey: bytes,
        expiration_ns: int,
        targets: Sequence[Principal] | None = None,
        previous: DelegationChain | None = None,
        *,
        permissions: str | None = None,
    ) -> DelegationChain:
        """Delegate from ``signer`` to ``to_der_pubkey`` until ``expiration_ns``, optionally only for ``targets``.

        ``permissions="queries"`` makes a read-only delegation (queries and read_state, no calls); ``"all"``
        says so explicitly. With ``previous``, ``signer`` must hold the last key of that chain and the new link
        is appended.
        """
        if permissions not in (None, "queries", "all"):
            raise ValueError(f"permissions must be 'queries' or 'all', not {permissions!r}")
        signer_key = signer.der_public_key
        if signer_key is None:
            raise ValueError("the anonymous identity cannot delegate")
        if previous is not None:
            last = previous.delegations[-1]["delegation"]["pubkey"] if previous.delegations else previous.public_key
            if last != signer_key:
                raise ValueError("the signer does not hold the last key of the previous chain")
        delegation = _delegation_map(bytes(to_der_pubkey), expiration_ns, targets, permissions)
        link = {"delegation": delegation, "signature": signer.sign(delegation_signing_message(delegation))}
        if previous is None:
            return cls(signer_key, [link])
        return cls(previous.public_key, [*previous.delegations, link])

    def to_json(self) -> str:
        """The chain in agent-js's ``DelegationChain.toJSON`` form (hex strings, hex expiration)."""
        delegations = []
        for link in self.delegations:
            d = link["delegation"]
            entry: dict[str, Any] = {"expiration": format(d["expiration"], "x"), "pubkey": d["pubkey"].hex()}
            if "targets" in d:
                entry["targets"] = [t.hex() for t in d["targets"]]
            if "permissions" in d:
                entry["permissions"] = d["permissions"]
            delegations.append({"delegation": entry, "signature": link["signature"].hex()})
        return json.dumps({"delegations": delegations, "publicKey": self.public_key.hex()})

    @classmethod
    def from_json(cls, text: str | bytes) -> DelegationChain:
        """Read agent-js's JSON form; malformed input raises DecodeError."""
        try:
            obj = json.loads(text)
            delegations = []
            for link in obj["delegations"]:
                d = link["delegation"]
                targets = None
                if d.get("targets") is not None:
                    targets = [Principal(bytes.fromhex(t)) for t in d["targets"]]
                permissions = d.get("permissions")
                if permissions is not None and type(permissions) is not str:
                    raise TypeError("permissions is not a string")
                delegation = _delegation_map(bytes.fromhex(d["pubkey"]), int(d["expiration"], 16), targets, permissions)
                delegations.append({"delegation": delegation, "signature": bytes.fromhex(link["signature"])})
            return cls(bytes.fromhex(obj["publicKey"]), delegations)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DecodeError(f"malformed delegation chain JSON: {exc!r}") from None


class DelegationIdentity(Identity):
    """Signs as the chain's root principal with a session key that the chain delegates to."""

    __slots__ = ("_chain", "_session")

    def __init__(self, session_identity: Identity, chain: DelegationChain) -> None:
        if not chain.delegations:
            raise ValueError("a delegation identity needs at least one delegation")
        if session_identity.der_public_key != chain.delegations[-1]["delegation"]["pubkey"]:
            raise ValueError("the chain does not delegate to the session identity's key")
        self._session = session_identity
        self._chain = chain

    @property
    def chain(self) -> DelegationChain:
        return self._chain

    @property
    def der_public_key(self) -> bytes:
        return self._chain.public_key

    @property
    def delegations(self) -> list[dict[str, Any]]:
        return self._chain.delegations

    def sign(self, message: bytes) -> bytes:
        return self._session.sign(message)
