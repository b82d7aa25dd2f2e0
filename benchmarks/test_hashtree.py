"""Hash trees: pure vs compiled ``reconstruct`` / ``lookup_path`` / ``read_witness``, build+witness, BLS and
certificate costs.

Workloads: every tree of the shared vectors (with their lookups), and the witness an
ic-websocket canister returns for a batch of 50 messages out of a 1000-entry message
map (reconstructed and looked up 50 times, as a client does per batch, and read from
its CBOR by ``read_witness``, as the gateway's verifier does per batch). The
compiled/pure ratios are printed at the end of the module.

Run: ``.venv/bin/pytest benchmarks/test_hashtree.py --benchmark-only --benchmark-enable``
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from icws_fast.ic import bls, hashtree
from icws_fast.ic.certificate import BLS_CACHE, Certificate, sign_certificate
from icws_fast.ic.request_id import leb128
from tests import twins
from tests.vectors import load_vectors

_reconstruct, _lookup_path = twins.twin(hashtree, "reconstruct"), twins.twin(hashtree, "lookup_path")
IMPLS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {"pure": (_reconstruct.pure, _lookup_path.pure)}
if _reconstruct.compiled is not None and _lookup_path.compiled is not None:
    IMPLS["compiled"] = (_reconstruct.compiled, _lookup_path.compiled)

VECTOR_RECORDS = load_vectors("hash_trees")
VECTOR_TREES = [hashtree.parse(bytes.fromhex(r["cbor_hex"])) for r in VECTOR_RECORDS]
VECTOR_LOOKUPS = [
    (tree, [bytes.fromhex(label) for label in lookup["path"]])
    for tree, record in zip(VECTOR_TREES, VECTOR_RECORDS, strict=True)
    for lookup in record.get("lookups", [])
]

CLIENT = "sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae"
WS_KEYS = [f"{CLIENT}_{i:020d}".encode() for i in range(1000)]
WS_MAP = {b"websocket": {key: hashlib.sha256(b"content %d" % i).digest() for i, key in enumerate(WS_KEYS)}}
BATCH = [[b"websocket", key] for key in WS_KEYS[500:550]]
WS_WITNESS = hashtree.witness(WS_MAP, BATCH)

WS_WITNESS_CBOR = hashtree.to_cbor(WS_WITNESS)
_read_witness = twins.twin(hashtree, "read_witness")
READ_WITNESS = {"pure": _read_witness.pure} | ({"compiled": _read_witness.compiled} if _read_witness.compiled else {})

MEANS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_ratios(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # module teardown output is captured otherwise
        for workload in sorted({w for _, w in MEANS}):
            pure, fast = MEANS.get(("pure", workload)), MEANS.get(("compiled", workload))
            if pure and fast:
                ratio = f"compiled/pure time = {fast / pure:.3f} ({pure / fast:.1f}x faster)"
                reporter.write_line(f"hashtree {workload}: {ratio}")


def _record(benchmark: Any, impl: str, workload: str) -> None:
    if benchmark.stats is not None:
        MEANS[(impl, workload)] = benchmark.stats.stats.mean


@pytest.mark.parametrize("impl", list(IMPLS))
def test_reconstruct_vector_trees(benchmark: Any, impl: str) -> None:
    reconstruct = IMPLS[impl][0]
    roots = benchmark(lambda: [reconstruct(tree) for tree in VECTOR_TREES])
    assert [root.hex() for root in roots] == [r["root_hash"] for r in VECTOR_RECORDS]
    _record(benchmark, impl, "reconstruct vector trees")


@pytest.mark.parametrize("impl", list(IMPLS))
def test_lookup_vector_trees(benchmark: Any, impl: str) -> None:
    lookup = IMPLS[impl][1]
    results = benchmark(lambda: [lookup(tree, path) for tree, path in VECTOR_LOOKUPS])
    assert len(results) == len(VECTOR_LOOKUPS)
    _record(benchmark, impl, "lookup vector trees")


@pytest.mark.parametrize("impl", list(IMPLS))
def test_reconstruct_ws_witness(benchmark: Any, impl: str) -> None:
    reconstruct = IMPLS[impl][0]
    root = benchmark(reconstruct, WS_WITNESS)
    assert root == hashtree.HashedTree(WS_MAP).root_hash
    _record(benchmark, impl, "reconstruct 50-message ws witness")


@pytest.mark.parametrize("impl", list(IMPLS))
def test_lookup_ws_witness(benchmark: Any, impl: str) -> None:
    lookup = IMPLS[impl][1]
    results = benchmark(lambda: [lookup(WS_WITNESS, path) for path in BATCH])
    assert all(result.status == "Found" for result in results)
    _record(benchmark, impl, "lookup 50 messages in ws witness")


@pytest.mark.parametrize("impl", list(READ_WITNESS))
def test_read_ws_witness(benchmark: Any, impl: str) -> None:
    witness = benchmark(READ_WITNESS[impl], WS_WITNESS_CBOR, b"websocket")
    assert witness.root_hash == hashtree.HashedTree(WS_MAP).root_hash and len(witness.leaves) == len(BATCH)
    _record(benchmark, impl, "read_witness of the 50-message ws witness's CBOR")


def _state(n: int) -> dict[bytes, Any]:
    """A devnet-like state: time, n request statuses, n/10 canisters."""
    return {
        b"time": leb128(1_700_000_000_000_000_000),
        b"request_status": {
            hashlib.sha256(b"%d" % i).digest(): {b"status": b"replied", b"reply": b"DIDL\x00\x01\x71\x02hi"}
            for i in range(n)
        },
        b"canister": {(i).to_bytes(8, "big") + b"\x01\x01": {b"certified_data": bytes(32)} for i in range(n // 10)},
    }


def test_build_and_witness_3000_leaves(benchmark: Any) -> None:
    state = _state(1000)  # 1000 * 2 + 100 + 1 leaves
    paths = [[b"time"], [b"request_status", hashlib.sha256(b"7").digest()]]

    def round_trip() -> hashtree.Node:
        return hashtree.HashedTree(state).witness(paths)

    wit = benchmark(round_trip)
    assert hashtree.reconstruct(wit) == hashtree.reconstruct(hashtree.build(state))


def test_witness_from_cached_tree(benchmark: Any) -> None:
    hashed = hashtree.HashedTree(_state(1000))
    paths = [[b"time"], [b"request_status", hashlib.sha256(b"7").digest()]]
    wit = benchmark(hashed.witness, paths)
    assert hashtree.reconstruct(wit) == hashed.root_hash


SK = bls.generate_secret_key(b"bench")
PK = bls.public_key(SK)


def test_bls_sign(benchmark: Any) -> None:
    signature = benchmark(bls.sign, SK, b"\x0dic-state-root" + bytes(32))
    assert len(signature) == 48


def test_bls_verify(benchmark: Any) -> None:
    signature = bls.sign(SK, b"message")
    assert benchmark(bls.verify, signature, b"message", PK)


def test_certificate_verify_cached(benchmark: Any) -> None:
    now = 1_700_000_000_000_000_000
    data = sign_certificate(hashtree.build({b"time": leb128(now)}), SK)
    root_der = bls.der_encode_public_key(PK)
    BLS_CACHE.clear()
    cert = Certificate.from_cbor(data)
    cert.verify(root_der, now_ns=now)
    benchmark(cert.verify, root_der, None, now)
