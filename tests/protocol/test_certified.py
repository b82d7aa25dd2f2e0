"""The certified-batch verifier the gateway's poller and the client share, on batches signed as the IC signs them."""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any

import pytest

from icws_fast.errors import CertificateError
from icws_fast.ic import bls, cbor, hashtree
from icws_fast.ic.certificate import (
    REASON_INVALID_SIGNATURE,
    REASON_MALFORMED,
    REASON_PATH_NOT_FOUND,
    REASON_TIME_IN_FUTURE,
    REASON_TIME_TOO_OLD,
    Certificate,
    sign_certificate,
)
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import leb128
from icws_fast.protocol import certified
from icws_fast.protocol.certified import (
    REASON_CONTENT_MISMATCH,
    REASON_KEY_NOT_FOUND,
    REASON_TREE_MALFORMED,
    REASON_TREE_MISMATCH,
    REASON_TREE_UNORDERED,
    BatchVerifier,
    check_message,
)
from tests import twins

NS = 1_000_000_000
NOW = 1_700_000_000 * NS
ROOT_SK = bls.generate_secret_key(b"certified-batch-root")
ROOT_DER = bls.der_encode_public_key(bls.public_key(ROOT_SK))
CANISTER = Principal.from_text("bnz7o-iuaaa-aaaaa-qaaaa-cai")
OTHER_CANISTER = Principal.from_text("bkyz2-fmaaa-aaaaa-qaaaq-cai")
KEYS = [f"gw_{i:020d}".encode() for i in range(40)]
CONTENTS = {key: b"content of " + key for key in KEYS}
MAPPING = {b"websocket": {key: hashlib.sha256(CONTENTS[key]).digest() for key in KEYS}, b"other": {b"x": b"y"}}


def signed(
    tree: hashtree.Node, *, time_ns: int = NOW, certified_data: bytes | None = None, sk: bytes = ROOT_SK
) -> bytes:
    """The certificate a replica gives the canister whose certified data is ``tree``'s root (or ``certified_data``)."""
    data = hashtree.reconstruct(tree) if certified_data is None else certified_data
    state = {b"time": leb128(time_ns), b"canister": {CANISTER.bytes: {b"certified_data": data}}}
    return sign_certificate(hashtree.build(state), sk)


def batch(keys: list[bytes], **kw: Any) -> tuple[bytes, bytes]:
    """(cert, tree) of a ``ws_get_messages`` batch of ``keys``."""
    tree = hashtree.witness(MAPPING, [[b"websocket", key] for key in keys])
    return signed(tree, **kw), cbor.encode(tree)


def reason(call: Any) -> str:
    with pytest.raises(CertificateError) as info:
        call()
    return info.value.reason


def test_a_batch_yields_exactly_its_messages() -> None:
    wanted = KEYS[10:25]
    cert, tree = batch(wanted)
    hashes = BatchVerifier(ROOT_DER).verify(cert, tree, CANISTER, NOW)
    assert dict(hashes) == {key: hashlib.sha256(CONTENTS[key]).digest() for key in wanted}
    for key in wanted:  # the same answers as the spec's lookup
        assert hashtree.lookup_path(hashtree.parse(tree), [b"websocket", key]).value == hashes[key]
        check_message(hashes, key, CONTENTS[key])


def test_messages_outside_the_batch_or_with_other_content_are_refused() -> None:
    cert, tree = batch(KEYS[10:12])
    hashes = BatchVerifier(ROOT_DER).verify(cert, tree, CANISTER, NOW)
    assert reason(lambda: check_message(hashes, KEYS[12], CONTENTS[KEYS[12]])) == REASON_KEY_NOT_FOUND
    assert reason(lambda: check_message(hashes, KEYS[10], CONTENTS[KEYS[10]] + b"!")) == REASON_CONTENT_MISMATCH


def test_no_websocket_subtree_certifies_nothing() -> None:
    tree = hashtree.witness(MAPPING, [[b"other", b"x"]])
    assert BatchVerifier(ROOT_DER).verify(signed(tree), cbor.encode(tree), CANISTER, NOW) == {}


@pytest.mark.parametrize("labels", [[b"b", b"a"], [b"a", b"a"]])
def test_labels_out_of_order_are_refused(labels: list[bytes]) -> None:
    sub = hashtree.fork(*(hashtree.labeled(label, hashtree.leaf(b"h")) for label in labels))
    tree = hashtree.labeled(b"websocket", sub)
    verifier = BatchVerifier(ROOT_DER)
    assert reason(lambda: verifier.verify(signed(tree), cbor.encode(tree), CANISTER, NOW)) == REASON_TREE_UNORDERED


def test_each_check_fails_with_its_reason() -> None:
    verifier = BatchVerifier(ROOT_DER)
    cert, tree = batch(KEYS[:3])
    other_cert, other_tree = batch(KEYS[3:6])
    failures = {
        REASON_TREE_MISMATCH: lambda: verifier.verify(
            batch(KEYS[:3], certified_data=bytes(32))[0], tree, CANISTER, NOW
        ),
        REASON_TREE_MALFORMED: lambda: verifier.verify(cert, b"\xa0", CANISTER, NOW),
        REASON_MALFORMED: lambda: verifier.verify(b"\x01", tree, CANISTER, NOW),
        REASON_PATH_NOT_FOUND: lambda: verifier.verify(cert, tree, OTHER_CANISTER, NOW),
        REASON_INVALID_SIGNATURE: lambda: verifier.verify(
            batch(KEYS[:3], sk=bls.generate_secret_key(b"not the root"))[0], tree, CANISTER, NOW
        ),
        REASON_TIME_TOO_OLD: lambda: verifier.verify(cert, tree, CANISTER, NOW + 301 * NS),
        REASON_TIME_IN_FUTURE: lambda: verifier.verify(cert, tree, CANISTER, NOW - 301 * NS),
    }
    for expected, call in failures.items():
        assert reason(call) == expected, expected
    # Failures leave the verifier usable: both batches still verify.
    assert set(verifier.verify(cert, tree, CANISTER, NOW)) == set(KEYS[:3])
    assert set(verifier.verify(other_cert, other_tree, CANISTER, NOW)) == set(KEYS[3:6])


def test_max_age_is_the_verifiers() -> None:
    cert, tree = batch(KEYS[:1], time_ns=NOW - 900 * NS)
    assert reason(lambda: BatchVerifier(ROOT_DER).verify(cert, tree, CANISTER, NOW)) == REASON_TIME_TOO_OLD
    assert set(BatchVerifier(ROOT_DER, max_age_ns=1000 * NS).verify(cert, tree, CANISTER, NOW)) == {KEYS[0]}


class _ParseSpy:
    """Counts certificate parses (each is followed by a BLS check) through the verifier."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = Certificate.from_cbor

        def counting(data: bytes) -> Certificate:
            self.count += 1
            return original(data)

        monkeypatch.setattr(certified.Certificate, "from_cbor", counting)


def test_a_shared_certificate_is_verified_once_and_its_time_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _ParseSpy(monkeypatch)
    verifier = BatchVerifier(ROOT_DER)
    tree_a = hashtree.witness(MAPPING, [[b"websocket", key] for key in KEYS[:5]])
    tree_b = hashtree.witness(MAPPING, [[b"websocket", key] for key in KEYS[:5]] + [[b"other", b"x"]])
    # One certificate vouching for both trees is impossible (one certified data), so both batches use tree_a's
    # root; tree_b reveals more of the same map and has the same root.
    cert = signed(tree_a)
    assert hashtree.reconstruct(tree_b) == hashtree.reconstruct(tree_a)
    for tree in (tree_a, tree_b, tree_a):
        assert set(verifier.verify(cert, cbor.encode(tree), CANISTER, NOW)) == set(KEYS[:5])
    assert spy.count == 1
    # The cached certificate ages with the caller's clock.
    assert reason(lambda: verifier.verify(cert, cbor.encode(tree_a), CANISTER, NOW + 301 * NS)) == REASON_TIME_TOO_OLD
    assert spy.count == 1


def test_the_certificate_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _ParseSpy(monkeypatch)
    verifier = BatchVerifier(ROOT_DER, cache_size=2)
    batches = [batch(KEYS[:2], time_ns=NOW - i * NS) for i in range(3)]
    for cert, tree in batches:
        verifier.verify(cert, tree, CANISTER, NOW)
    assert spy.count == 3
    verifier.verify(*batches[2], CANISTER, NOW)  # still cached
    assert spy.count == 3
    verifier.verify(*batches[0], CANISTER, NOW)  # evicted by the third: verified again
    assert spy.count == 4


CHECKS = twins.implementations(certified, "check_messages")


@pytest.mark.parametrize("impl", CHECKS)
def test_check_messages_checks_each_message(impl: Any) -> None:
    cert, tree = batch(KEYS[5:15])
    hashes = BatchVerifier(ROOT_DER).verify(cert, tree, CANISTER, NOW)
    keys = KEYS[5:15]
    contents = [CONTENTS[key] for key in keys]
    assert impl.check_messages(hashes, keys, contents) is None
    assert impl.check_messages(hashes, [], []) is None
    assert impl.check_messages(hashes, keys[3:1:-1], contents[3:1:-1]) is None  # any order, any subset
    assert reason(lambda: impl.check_messages(hashes, [*keys, KEYS[15]], [*contents, CONTENTS[KEYS[15]]])) == (
        REASON_KEY_NOT_FOUND
    )
    assert reason(lambda: impl.check_messages(hashes, keys, [*contents[:-1], b"forged"])) == REASON_CONTENT_MISMATCH


def _check_cases() -> list[tuple[Any, Any, Any]]:
    cert, tree = batch(KEYS[:4])
    hashes = dict(BatchVerifier(ROOT_DER).verify(cert, tree, CANISTER, NOW))
    keys = KEYS[:4]
    contents = [CONTENTS[key] for key in keys]
    long_leaf = {**hashes, keys[0]: hashes[keys[0]] + b"\x00"}
    return [
        (hashes, keys, contents),
        (hashes, keys, [*contents[:2], b"", contents[3]]),  # a mismatch in the middle
        (hashes, [keys[0], keys[0] + b"x"], contents[:2]),  # a key not in the tree
        (hashes, keys, contents[:3]),  # lengths differ
        (hashes, [*keys[:3], "text"], contents),  # not bytes
        (hashes, keys, [*contents[:3], None]),
        (hashes, tuple(keys), tuple(contents)),  # other sequences
        (hashes, keys, [bytearray(c) for c in contents]),
        (long_leaf, keys, contents),  # a certified value that is no SHA-256
        ({**hashes, keys[1]: "text"}, keys, contents),
        (MappingProxyType(hashes), keys, contents),  # another mapping
        ({k: v for k, v in hashes.items() if k != keys[2]}, keys, contents),
        ({}, [], []),
        ({}, keys, contents),
    ]


@pytest.mark.parametrize("case", _check_cases(), ids=range(len(_check_cases())))
def test_check_messages_twins_agree(case: tuple[Any, Any, Any]) -> None:
    twins.assert_agree(certified, "check_messages", *case)
