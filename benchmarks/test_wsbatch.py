"""``ws_get_messages`` reply: pure vs compiled ``decode_polled_batch`` (the gateway decodes one per poll),
``decode_get_messages_result`` (the same reply as named tuples, for everyone else), ``check_messages`` (the
content hash of each message against its certified one, once per batch) and ``route_shares`` (the poller's
routing of the batch to its clients with those checks, once per batch).

Workloads: a full batch of 50 messages (the CDK's default ``max_number_of_returned_messages``) as the CDK returns
it: keys ``<gateway>_<20-digit nonce>``, each content a CBOR ``WebsocketMessage`` carrying a 100-byte app message,
a 1.5 kB certificate and the 50-message witness of a 1000-entry message map; once addressed to 5 clients (the
compiled ``decode_get_messages_result`` builds each client key once per batch) and once to 50. The compiled/pure
ratios (of medians) are printed at the end of the module.

Run: ``.venv/bin/python -m pytest benchmarks/test_wsbatch.py --benchmark-only --benchmark-enable``
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from icws_fast.ic import hashtree
from icws_fast.ic.principal import Principal
from icws_fast.protocol import certified, poller
from icws_fast.protocol import types as t
from tests import twins

FUNCTIONS = ("decode_polled_batch", "decode_get_messages_result")
IMPLS: dict[tuple[str, str], Callable[[bytes], Any]] = {}
for _name in FUNCTIONS:
    _twin = twins.twin(t, _name)
    IMPLS[("pure", _name)] = _twin.pure
    if _twin.compiled is not None:
        IMPLS[("compiled", _name)] = _twin.compiled

GATEWAY = Principal.from_text("sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae")
BATCH_SIZE = 50


def _reply(clients: int) -> bytes:
    rng = random.Random(clients)
    keys = [t.ClientKey(Principal(rng.randbytes(29)), rng.getrandbits(64)) for _ in range(clients)]
    messages = []
    for i in range(BATCH_SIZE):
        key = keys[i % clients]
        ws = t.WebsocketMessage(key, i, 1_700_000_000_000_000_000 + i, False, rng.randbytes(100))
        messages.append(t.CanisterOutputMessage(key, f"{GATEWAY}_{1000 + i:020d}", t.encode_websocket_message(ws)))
    ws_map = {
        t.LABEL_WEBSOCKET: {f"{GATEWAY}_{i:020d}".encode(): hashlib.sha256(b"%d" % i).digest() for i in range(2000)}
    }
    tree = hashtree.to_cbor(hashtree.witness(ws_map, [[t.LABEL_WEBSOCKET, m.key.encode()] for m in messages]))
    batch = t.CanisterOutputCertifiedMessages(messages, rng.randbytes(1500), tree, False)
    return t.encode_get_messages_result(batch)


WORKLOADS = {f"{BATCH_SIZE} messages to {clients} clients": _reply(clients) for clients in (5, BATCH_SIZE)}
VALUES = {(name, workload): IMPLS[("pure", name)](data) for name in FUNCTIONS for workload, data in WORKLOADS.items()}
MEDIANS: dict[tuple[str, str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_ratios(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # module teardown output is captured otherwise
        for name in (*FUNCTIONS, "check_messages", "route_shares"):
            for workload, data in WORKLOADS.items():
                pure, fast = MEDIANS.get(("pure", name, workload)), MEDIANS.get(("compiled", name, workload))
                if pure and fast:
                    ratio = f"compiled/pure time = {fast / pure:.3f} ({pure / fast:.1f}x faster)"
                    reporter.write_line(
                        f"{name} {workload} ({len(data)} bytes): "
                        f"pure {pure * 1e6:.1f} us, compiled {fast * 1e6:.1f} us, {ratio}"
                    )


_check = twins.twin(certified, "check_messages")
CHECKS = {"pure": _check.pure} | ({"compiled": _check.compiled} if _check.compiled is not None else {})


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("impl", list(CHECKS))
def test_check_messages(benchmark: Any, impl: str, workload: str) -> None:
    polled = t.decode_polled_batch_pure(WORKLOADS[workload])
    hashes = {key: hashlib.sha256(content).digest() for key, content in zip(polled.keys, polled.contents, strict=True)}
    benchmark(CHECKS[impl], hashes, polled.keys, polled.contents)
    if benchmark.stats is not None:
        MEDIANS[(impl, "check_messages", workload)] = benchmark.stats.stats.median


_route = twins.twin(poller, "route_shares")
ROUTES = {"pure": _route.pure} | ({"compiled": _route.compiled} if _route.compiled is not None else {})


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("impl", list(ROUTES))
def test_route_shares(benchmark: Any, impl: str, workload: str) -> None:
    polled = t.decode_polled_batch_pure(WORKLOADS[workload])
    hashes = {key: hashlib.sha256(content).digest() for key, content in zip(polled.keys, polled.contents, strict=True)}
    routes = {route: object() for route in polled.route_keys}  # every client connected
    shares, _ = benchmark(ROUTES[impl], routes, polled.route_keys, polled.keys, polled.contents, hashes)
    assert sum(len(keys) for keys, _ in shares.values()) == BATCH_SIZE
    if benchmark.stats is not None:
        MEDIANS[(impl, "route_shares", workload)] = benchmark.stats.stats.median


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize(("impl", "name"), list(IMPLS))
def test_decode(benchmark: Any, impl: str, name: str, workload: str) -> None:
    value = benchmark(IMPLS[(impl, name)], WORKLOADS[workload])
    assert value == VALUES[(name, workload)]
    if benchmark.stats is not None:
        MEDIANS[(impl, name, workload)] = benchmark.stats.stats.median
