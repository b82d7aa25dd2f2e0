"""Certificate parse and verify (``icws_fast.ic.certificate``): what clients and the gateway check in every batch.

Input: a mode byte, then CBOR. Mode 0 takes a certificate and verifies it as one of the
vectors' checks does (their root key, canister and time); mode 1 verifies it under the
fuzz root key. Modes 2 and 3 reach what only a valid signature lets through: the input is
a state tree (2) or a delegation's tree (3) that the target signs before verifying, so
hostile ``/time`` leaves, subnet keys and canister ranges get checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fuzz import fixtures
from icws_fast.ic import hashtree
from icws_fast.ic.certificate import Certificate, sign_certificate
from icws_fast.ic.principal import Principal

PREFIX = 1


def _vector_checks() -> list[tuple[bytes, bytes | None, int]]:
    """(root key DER, effective canister id or None, now) of every check in the certificate vectors."""
    checks = []
    for record in fixtures.records("certificates"):
        keys = {record["root_key_name"]: bytes.fromhex(record["root_key_der_hex"])}
        for check in record.get("checks") or ():
            canister = check.get("canister_id")
            root = keys.get(check.get("root_key_name"), keys[record["root_key_name"]])
            checks.append((root, Principal.from_text(canister).bytes if canister else None, check["now_ns"]))
    return checks


_CHECKS = _vector_checks()


def _verify(cert: Certificate, root_key_der: bytes, canister: Any, now_ns: int) -> None:
    cert.verify(root_key_der, effective_canister_id=canister, now_ns=now_ns)
    cert.lookup_value([b"canister", fixtures.CANISTER.bytes, b"certified_data"])


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    if mode == 0:
        root, canister, now = _CHECKS[data[0] // 4 % len(_CHECKS)]
        _verify(Certificate.from_cbor(body), root, canister, now)
    elif mode == 1:
        _verify(Certificate.from_cbor(body), fixtures.ROOT_KEY_DER, fixtures.CANISTER, fixtures.NOW_NS)
    elif mode == 2:
        signed = sign_certificate(hashtree.parse(body), fixtures.ROOT_SECRET)
        _verify(Certificate.from_cbor(signed), fixtures.ROOT_KEY_DER, fixtures.CANISTER, fixtures.NOW_NS)
    else:
        delegation = fixtures.delegation(hashtree.parse(body))
        signed = sign_certificate(fixtures.canister_tree(b"\x00" * 32), fixtures.SUBNET_SECRET, delegation)
        _verify(Certificate.from_cbor(signed), fixtures.ROOT_KEY_DER, fixtures.CANISTER, fixtures.NOW_NS)


def seeds() -> Iterator[bytes]:
    index = 0
    for record in fixtures.records("certificates"):
        cert = bytes.fromhex(record["cbor_hex"])
        for _ in record.get("checks") or ():
            if index < 64:  # the mode byte holds 64 check numbers
                yield bytes([index * 4]) + cert
            index += 1
    for delegated in (False, True):
        yield b"\x01" + fixtures.certify(b"\x00" * 32, delegated=delegated)
    yield b"\x02" + hashtree.to_cbor(fixtures.canister_tree(b"\x00" * 32))
    yield b"\x03" + hashtree.to_cbor(fixtures.delegation_tree())
