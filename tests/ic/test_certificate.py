"""Certificates against the shared vectors, ic-websocket message checks, signing round trips and fuzzing."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import pytest

from icws_fast.errors import CertificateError, IcwsError
from icws_fast.ic import bls, cbor, hashtree
from icws_fast.ic.certificate import (
    BLS_CACHE,
    REASON_CANISTER_NOT_IN_RANGE,
    REASON_CANISTER_RANGES_MISSING,
    REASON_CANISTER_RANGES_PRUNED,
    REASON_DELEGATION_INVALID_SIGNATURE,
    REASON_DELEGATION_NESTED,
    REASON_INVALID_SIGNATURE,
    REASON_SUBNET_MISMATCH,
    REASON_TIME_IN_FUTURE,
    REASON_TIME_TOO_OLD,
    Certificate,
    encode_delegation,
    sign_certificate,
)
from icws_fast.ic.leb128 import leb128
from icws_fast.ic.principal import Principal
from tests.vectors import load_vectors

RECORDS = load_vectors("certificates")
ROOT_KEYS = {r["root_key_name"]: bytes.fromhex(r["root_key_der_hex"]) for r in RECORDS}
SECOND = 1_000_000_000
MINUTE = 60 * SECOND

# The vectors describe failures in prose; each maps to one of our stable reasons.
REASON_WORDS = [
    ("nested", REASON_DELEGATION_NESTED),
    ("too many delegations", REASON_DELEGATION_NESTED),
    ("pruned", REASON_CANISTER_RANGES_PRUNED),
    ("canister ranges", REASON_CANISTER_NOT_IN_RANGE),
    ("outside the delegation ranges", REASON_CANISTER_NOT_IN_RANGE),
    ("more than 5 minutes old", REASON_TIME_TOO_OLD),
    ("in the future", REASON_TIME_IN_FUTURE),
    ("root key", REASON_INVALID_SIGNATURE),
    ("bls signature", REASON_INVALID_SIGNATURE),
]


def _expected_reason(text: str) -> str | None:
    """Our reason for a vector's prose, or None for prose not seen yet (then only the failure is checked)."""
    for words, reason in REASON_WORDS:
        if words in text.lower():
            return reason
    return None


CHECKS = [(r, i, c) for r in RECORDS for i, c in enumerate(r["checks"])]


@pytest.mark.parametrize("record,check", [(r, c) for r, _, c in CHECKS], ids=[f"{r['id']}-{i}" for r, i, _ in CHECKS])
def test_vector_checks(record: dict[str, Any], check: dict[str, Any]) -> None:
    BLS_CACHE.clear()
    cert = Certificate.from_cbor(bytes.fromhex(record["cbor_hex"]))
    canister = bytes.fromhex(check["canister_id_hex"]) if "canister_id_hex" in check else None
    subnet = Principal.from_text(check["subnet_id"]) if "subnet_id" in check else None
    key = ROOT_KEYS[check["root_key_name"]]
    assert check["max_cert_skew_s"] == 300
    for _ in range(2):  # the second round is answered from the BLS cache and must agree
        if check["expected"] == "valid":
            cert.verify(key, canister, check["now_ns"], subnet_id=subnet)
        else:
            with pytest.raises(CertificateError) as info:
                cert.verify(key, canister, check["now_ns"], subnet_id=subnet)
            expected = _expected_reason(check.get("reason") or "")
            assert expected is None or info.value.reason == expected


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_vector_fields_and_lookups(record: dict[str, Any]) -> None:
    cert = Certificate.from_cbor(bytes.fromhex(record["cbor_hex"]))
    assert cert.root_hash.hex() == record["root_hash"]
    assert cert.signature.hex() == record["signature_hex"]
    if "cert_time_ns" in record:
        assert cert.time_ns == record["cert_time_ns"]
    assert (cert.delegation is not None) == record["has_delegation"]
    if cert.delegation is not None and "delegation_subnet_id" in record:
        assert cert.delegation.subnet_id.to_text() == record["delegation_subnet_id"]
        if "delegation_time_ns" in record:
            assert cert.delegation.certificate.time_ns == record["delegation_time_ns"]
    for lookup in record.get("lookups", []):
        path = [bytes.fromhex(label) for label in lookup["path"]]
        result = cert.lookup(path)
        assert result.status == lookup["expected"], lookup
        if result.status == "Found":
            assert result.value.hex() == lookup["value_hex"]
            assert cert.lookup_value(path).hex() == lookup["value_hex"]
        else:
            with pytest.raises(CertificateError):
                cert.lookup_value(path)


def _message_valid(cert: Certificate, canister: bytes, tree_cbor: bytes, key: str, content: bytes) -> bool:
    """The ic-websocket client's rule: the witness is the canister's certified data and holds sha256(content)."""
    certified = cert.lookup_value([b"canister", canister, b"certified_data"])
    tree = hashtree.parse(tree_cbor)
    if hashtree.reconstruct(tree) != certified:
        return False
    found = hashtree.lookup_path(tree, [b"websocket", key.encode()])
    return found.status == "Found" and found.value == hashlib.sha256(content).digest()


WS = [(r, m) for r in RECORDS for m in ([r["ws_message"]] if "ws_message" in r else r.get("ws_messages", []))]


@pytest.mark.parametrize("record,message", WS, ids=[f"{r['id']}-{m['key'][:9]}" for r, m in WS])
def test_vector_ws_messages(record: dict[str, Any], message: dict[str, Any]) -> None:
    cert = Certificate.from_cbor(bytes.fromhex(record["cbor_hex"]))
    check = next(c for c in record["checks"] if c["expected"] == "valid" and "canister_id_hex" in c)
    canister = bytes.fromhex(check["canister_id_hex"])
    cert.verify(ROOT_KEYS[check["root_key_name"]], canister, check["now_ns"])
    content = bytes.fromhex(message["content_hex"])
    tree = bytes.fromhex(message["tree_cbor_hex"])
    assert _message_valid(cert, canister, tree, message["key"], content) == (message["expected"] == "valid")
    if message["expected"] != "valid":
        return
    # Changes the ic-websocket SDK tests make to a valid message, which must then fail.
    assert not _message_valid(cert, canister, tree, "not-valid-path", content)
    assert not _message_valid(cert, canister, tree, message["key"], bytes.fromhex("00010203"))
    for case in message.get("negative_cases", []):
        field, _, value = case["change"].partition(" = ")
        if field == "canister":
            other = Principal.from_text(value).bytes
            if case["expected"].startswith("error"):
                with pytest.raises(CertificateError):
                    _message_valid(cert, other, tree, message["key"], content)
            else:
                assert not _message_valid(cert, other, tree, message["key"], content)
        elif field == "key":
            assert not _message_valid(cert, canister, tree, value.strip('"'), content)
        elif field == "content":
            assert not _message_valid(cert, canister, tree, message["key"], bytes.fromhex(value))


def test_max_age_overrides_the_default() -> None:
    record = next(r for r in RECORDS if r["id"] == "icws-utils-2023")
    cert = Certificate.from_cbor(bytes.fromhex(record["cbor_hex"]))
    key = ROOT_KEYS[record["root_key_name"]]
    later = record["cert_time_ns"] + 365 * 24 * 60 * MINUTE
    with pytest.raises(CertificateError) as info:
        cert.verify(key, now_ns=later)
    assert info.value.reason == REASON_TIME_TOO_OLD
    cert.verify(key, now_ns=later, max_age_ns=5 * 365 * 24 * 60 * MINUTE)
    with pytest.raises(CertificateError) as info:
        cert.verify(key, now_ns=record["cert_time_ns"] - 6 * MINUTE, max_age_ns=10**18)
    assert info.value.reason == REASON_TIME_IN_FUTURE


def _devnet_tree(subnet: bytes, canister: bytes, time_ns: int, subnet_key_der: bytes, ranges: bytes) -> hashtree.Node:
    return hashtree.build(
        {
            b"time": leb128(time_ns),
            b"subnet": {subnet: {b"public_key": subnet_key_der, b"canister_ranges": ranges}},
            b"canister": {canister: {b"certified_data": b"\x07" * 32}},
        }
    )


def test_sign_verify_round_trip_with_delegation() -> None:
    root_sk = bls.generate_secret_key(b"root")
    subnet_sk = bls.generate_secret_key(b"subnet")
    root_der = bls.der_encode_public_key(bls.public_key(root_sk))
    subnet_der = bls.der_encode_public_key(bls.public_key(subnet_sk))
    subnet = Principal.from_text("aaaaa-aa").bytes + b"\x01\x02"
    canister = bytes.fromhex("00000000001000000101")
    now = 1_700_000_000 * SECOND
    ranges = cbor.encode([[bytes.fromhex("00000000001000000101"), bytes.fromhex("00000000001fffff0101")]])

    # Undelegated: the root key signs directly.
    plain = Certificate.from_cbor(sign_certificate(_devnet_tree(subnet, canister, now, subnet_der, ranges), root_sk))
    plain.verify(root_der, canister, now)
    with pytest.raises(CertificateError) as info:
        plain.verify(subnet_der, canister, now)
    assert info.value.reason == REASON_INVALID_SIGNATURE

    def delegation_certificate(*revealed: bytes) -> bytes:
        """The root subnet's certificate revealing ``/subnet/<subnet>/<field>`` for each field."""
        root_state = {
            b"time": leb128(now),
            b"subnet": {subnet: {b"public_key": subnet_der, b"canister_ranges": ranges}},
        }
        return sign_certificate(hashtree.witness(root_state, [[b"subnet", subnet, f] for f in revealed]), root_sk)

    # Delegated: the root key signs the subnet's key and ranges; the subnet key signs the state.
    delegation_cert = delegation_certificate(b"public_key", b"canister_ranges")
    state = hashtree.witness(
        {b"time": leb128(now), b"canister": {canister: {b"certified_data": b"\x07" * 32}}},
        [[b"time"], [b"canister", canister, b"certified_data"]],
    )
    data = sign_certificate(state, subnet_sk, encode_delegation(subnet, delegation_cert))
    cert = Certificate.from_cbor(data)
    assert cert.delegation is not None and cert.delegation.subnet_id.bytes == subnet
    cert.verify(root_der, canister, now)
    cert.verify(root_der, now_ns=now, subnet_id=Principal(subnet))
    assert cert.lookup_value([b"canister", canister, b"certified_data"]) == b"\x07" * 32

    failures: dict[str, Callable[[], None]] = {
        REASON_CANISTER_NOT_IN_RANGE: lambda: cert.verify(root_der, bytes.fromhex("00000000002000000101"), now),
        REASON_SUBNET_MISMATCH: lambda: cert.verify(root_der, now_ns=now, subnet_id=b"\x01"),
        REASON_DELEGATION_INVALID_SIGNATURE: lambda: cert.verify(subnet_der, canister, now),
        REASON_TIME_TOO_OLD: lambda: cert.verify(root_der, canister, now + 6 * MINUTE),
    }
    for reason, call in failures.items():
        with pytest.raises(CertificateError) as info:
            call()
        assert info.value.reason == reason

    # A certificate signed by a key the delegation does not publish.
    forged = Certificate.from_cbor(
        sign_certificate(state, bls.generate_secret_key(b"other"), encode_delegation(subnet, delegation_cert))
    )
    with pytest.raises(CertificateError) as info:
        forged.verify(root_der, canister, now)
    assert info.value.reason == REASON_INVALID_SIGNATURE

    # Nested delegation: the delegation's certificate is itself delegated.
    nested = Certificate.from_cbor(sign_certificate(state, subnet_sk, encode_delegation(subnet, data)))
    with pytest.raises(CertificateError) as info:
        nested.verify(root_der, canister, now)
    assert info.value.reason == REASON_DELEGATION_NESTED

    # Ranges pruned from the delegation: authorization cannot be shown.
    pruned_delegation = delegation_certificate(b"public_key")
    cert2 = Certificate.from_cbor(sign_certificate(state, subnet_sk, encode_delegation(subnet, pruned_delegation)))
    with pytest.raises(CertificateError) as info:
        cert2.verify(root_der, canister, now)
    assert info.value.reason == REASON_CANISTER_RANGES_PRUNED


def test_sharded_canister_ranges() -> None:
    root_sk = bls.generate_secret_key(b"root")
    subnet_sk = bls.generate_secret_key(b"subnet")
    root_der = bls.der_encode_public_key(bls.public_key(root_sk))
    subnet_der = bls.der_encode_public_key(bls.public_key(subnet_sk))
    subnet = b"\x05" * 29
    now = 1_700_000_000 * SECOND
    shard_a = (bytes(10), cbor.encode([[bytes(8) + b"\x01\x01", bytes(7) + b"\x0f\x01\x01"]]))
    shard_b = (
        bytes(6) + b"\x10\x00\x01\x01",
        cbor.encode([[bytes(6) + b"\x10\x00\x01\x01", bytes(6) + b"\x1f\xff\x01\x01"]]),
    )
    mapping = {
        b"time": leb128(now),
        b"subnet": {subnet: {b"public_key": subnet_der}},
        b"canister_ranges": {subnet: dict([shard_a, shard_b])},
    }
    inside_b = bytes(6) + b"\x12\x34\x01\x01"
    state = hashtree.build({b"time": leb128(now)})

    def certificate(paths: list[list[bytes]], tree: dict[bytes, Any] = mapping) -> Certificate:
        delegation = sign_certificate(hashtree.witness(tree, paths), root_sk)
        return Certificate.from_cbor(sign_certificate(state, subnet_sk, encode_delegation(subnet, delegation)))

    full = certificate([[b"subnet", subnet, b"public_key"], [b"canister_ranges", subnet]])
    full.verify(root_der, inside_b, now)
    full.verify(root_der, bytes(7) + b"\x05\x01\x01", now)
    with pytest.raises(CertificateError) as info:
        full.verify(root_der, bytes(6) + b"\x20\x00\x01\x01", now)
    assert info.value.reason == REASON_CANISTER_NOT_IN_RANGE
    only_b = certificate([[b"subnet", subnet, b"public_key"], [b"canister_ranges", subnet, shard_b[0]]])
    only_b.verify(root_der, inside_b, now)
    with pytest.raises(CertificateError) as info:
        only_b.verify(root_der, bytes(7) + b"\x05\x01\x01", now)
    assert info.value.reason == REASON_CANISTER_RANGES_PRUNED
    # A label-pruned layout cannot be told apart from a missing one: that is "pruned".
    hidden = certificate([[b"subnet", subnet, b"public_key"], [b"zzz"]])
    with pytest.raises(CertificateError) as info:
        hidden.verify(root_der, inside_b, now)
    assert info.value.reason == REASON_CANISTER_RANGES_PRUNED
    # Both layouts provably absent (the witness keeps the neighbours of the missing labels).
    without = {key: value for key, value in mapping.items() if key != b"canister_ranges"}
    paths = [[b"subnet", subnet, b"public_key"], [b"subnet", subnet, b"canister_ranges"], [b"canister_ranges", subnet]]
    no_ranges = certificate(paths, without)
    with pytest.raises(CertificateError) as info:
        no_ranges.verify(root_der, inside_b, now)
    assert info.value.reason == REASON_CANISTER_RANGES_MISSING


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa0",
        cbor.encode({"tree": [0]}),
        cbor.encode({"tree": [0], "signature": "text"}),
        cbor.encode({"tree": [7], "signature": b""}),
        cbor.encode({"tree": [0], "signature": b"", "extra": 1}),
        cbor.encode({"tree": [0], "signature": b"", "delegation": {"subnet_id": b"", "certificate": b"\x00"}}),
        cbor.encode({"tree": [0], "signature": b"", "delegation": {"subnet_id": b"\x00" * 30, "certificate": b""}}),
        cbor.encode([1, 2]),
    ],
)
def test_from_cbor_rejects_malformed(data: bytes) -> None:
    with pytest.raises(CertificateError) as info:
        Certificate.from_cbor(data)
    assert info.value.reason == "malformed"


def test_fuzz_from_cbor_and_verify_only_raise_package_errors() -> None:
    rng = random.Random(99)
    seeds = [(bytes.fromhex(r["cbor_hex"]), r["checks"][0]) for r in RECORDS]
    for i in range(1500):
        seed, check = rng.choice(seeds)
        data = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[pos] ^= 1 << rng.randrange(8)
            else:
                del data[pos : pos + rng.randint(1, 4)]
        try:
            cert = Certificate.from_cbor(bytes(data))
            if i % 10 == 0:  # pairings are slow; verify a sample of the mutants that still decode
                cert.verify(ROOT_KEYS[check["root_key_name"]], None, check["now_ns"])
        except IcwsError:
            continue


def test_signatures_of_the_wrong_length_fail_without_filling_the_bls_cache() -> None:
    # A hostile gateway must not be able to park megabyte-sized signatures in the process-wide cache.
    sk = bls.generate_secret_key(b"root")
    root_der = bls.der_encode_public_key(bls.public_key(sk))
    now = 1_700_000_000 * SECOND
    tree = hashtree.build({b"time": leb128(now)})
    good = cbor.decode(sign_certificate(tree, sk))
    BLS_CACHE.clear()
    for signature in (b"", good["signature"][:-1], good["signature"] + b"\x00", b"\x01" * 1_000_000):
        cert = Certificate.from_cbor(cbor.encode({"tree": tree, "signature": signature}))
        with pytest.raises(CertificateError) as info:
            cert.verify(root_der, now_ns=now)
        assert info.value.reason == REASON_INVALID_SIGNATURE
    assert len(BLS_CACHE) == 0
    Certificate.from_cbor(cbor.encode(good)).verify(root_der, now_ns=now)
    assert len(BLS_CACHE) == 1
