"""CBOR: pure vs compiled ``decode`` and ``encode`` on what the gateway and the devnet handle per batch.

Workloads: a real mainnet certificate with a subnet delegation (the shape of the
certificate on every polled batch), a large mainnet certificate, the witness an
ic-websocket canister returns for a batch of 50 messages out of a 1000-entry message
map, and a signed call envelope (what a client frame carries); each is decoded, and
its decoded value encoded again (the devnet encodes a witness per poll). The compiled/pure
ratios are printed at the end of the module; they compare medians, which other
processes on a shared machine disturb less than means.

Run: ``.venv/bin/python -m pytest benchmarks/test_cbor.py --benchmark-only --benchmark-enable``
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from icws_fast.ic import cbor, hashtree
from tests import twins
from tests.vectors import load_vectors

_decode, _encode = twins.twin(cbor, "decode"), twins.twin(cbor, "encode")
IMPLS: dict[str, dict[str, Callable[..., Any]]] = {"pure": {"decode": _decode.pure, "encode": _encode.pure}}
if _decode.compiled is not None and _encode.compiled is not None:
    IMPLS["compiled"] = {"decode": _decode.compiled, "encode": _encode.compiled}

CERTIFICATES = {record["id"]: bytes.fromhex(record["cbor_hex"]) for record in load_vectors("certificates")}
ENVELOPES = {record["id"]: record for record in load_vectors("envelopes")}

CLIENT = "sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae"
WS_KEYS = [f"{CLIENT}_{i:020d}".encode() for i in range(1000)]
WS_MAP = {b"websocket": {key: hashlib.sha256(b"content %d" % i).digest() for i, key in enumerate(WS_KEYS)}}
WS_WITNESS = hashtree.to_cbor(hashtree.witness(WS_MAP, [[b"websocket", key] for key in WS_KEYS[500:550]]))

WORKLOADS: dict[str, bytes] = {
    "mainnet certificate with delegation (1 kB)": CERTIFICATES["ivg37-2022-request-status"],
    "mainnet certificate with subnet tree (12 kB)": CERTIFICATES["rdmx6-2023-with-subnet"],
    "50-message ws batch witness": WS_WITNESS,
    "signed call envelope": bytes.fromhex(ENVELOPES["derived-ed25519-signed-call"]["envelope_cbor_hex"]),
}

VALUES = {workload: IMPLS["pure"]["decode"](data) for workload, data in WORKLOADS.items()}

MEDIANS: dict[tuple[str, str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_ratios(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # module teardown output is captured otherwise
        for op in ("decode", "encode"):
            for workload in WORKLOADS:
                pure, fast = MEDIANS.get(("pure", op, workload)), MEDIANS.get(("compiled", op, workload))
                if pure and fast:
                    ratio = f"compiled/pure time = {fast / pure:.3f} ({pure / fast:.1f}x faster)"
                    reporter.write_line(f"cbor {op} {workload}: {ratio}")


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("impl", list(IMPLS))
def test_decode(benchmark: Any, impl: str, workload: str) -> None:
    value = benchmark(IMPLS[impl]["decode"], WORKLOADS[workload])
    assert value == VALUES[workload]
    if benchmark.stats is not None:
        MEDIANS[(impl, "decode", workload)] = benchmark.stats.stats.median


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("impl", list(IMPLS))
def test_encode(benchmark: Any, impl: str, workload: str) -> None:
    data = benchmark(IMPLS[impl]["encode"], VALUES[workload])
    assert IMPLS["pure"]["decode"](data) == VALUES[workload]
    if benchmark.stats is not None:
        MEDIANS[(impl, "encode", workload)] = benchmark.stats.stats.median
