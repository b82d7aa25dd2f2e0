"""Devnet throughput: update calls/s and queries/s from 100 concurrent agents.

The devnet (``icws-devnet`` hosting the ``echo`` canister of ``tests/interop/echo_canister.py``, default 50 ms
rounds) runs in its own process so that it has an interpreter and a core to itself; the 100 agents (each with
its own Ed25519 identity and keep-alive connection) share this process's event loop. Update calls go through the v4
synchronous endpoint (and, for comparison, v2 + read_state polling); every certified reply is verified
(BLS) by the agent, as a gateway would. Queries are sent without node signature checks (the default for
non-mainnet URLs). Besides the rates, ``extra_info`` records the devnet's CPU use during the load: near
100 % means the devnet was the bottleneck, less means the load generator was.

Run with ``make bench`` or ``.venv/bin/python -m pytest benchmarks/test_devnet.py --benchmark-only
--benchmark-enable -s``.

The in-process benchmarks time what the whole-path benchmark (``benchmarks/e2e/bench_gateway.py``) costs the
devnet per message, without HTTP: one ``firehose`` round (100 clients x 20 messages, the certified message map
hashed once at the end) and one ``ws_get_messages`` query of 50 messages (the CDK's window, witness and CBOR, and
the Candid reply).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from icws_fast.devnet.canisters.firehose import FirehoseCanister
from icws_fast.devnet.replica import Keys, Replica
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from tests.interop.echo_canister import echo_devnet
from tests.processes import DevnetProcess, cpu_seconds

AGENTS = 100
TEXT = [candid.parse_type("text")]
FIREHOSE_CLIENTS = 100
FIREHOSE_PER_ROUND = 20
FIREHOSE_CONFIG = candid.parse_args(
    "(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })"
)
ROUND_NS = 100_000_000


async def _load(devnet: DevnetProcess, kind: str, per_agent: int) -> float:
    """``AGENTS`` agents each send ``per_agent`` requests one after the other; the requests per second."""
    root_key = devnet.root_key_der
    canister = devnet.canister_ids["echo"]
    arg = candid.encode(TEXT, ["load"])
    agents = [
        Agent(devnet.url, Ed25519Identity.generate(), root_key=root_key, sync_call=kind != "call_v2")
        for _ in range(AGENTS)
    ]

    async def drive(agent: Agent) -> None:
        for _ in range(per_agent):
            if kind == "query":
                reply = await agent.query(canister, "echo", arg)
            else:
                reply = await agent.call(canister, "shout", arg)
            assert candid.decode(reply, TEXT)[0] in ("load", "LOAD")

    try:
        start = time.perf_counter()
        await asyncio.gather(*(drive(agent) for agent in agents))
        return AGENTS * per_agent / (time.perf_counter() - start)
    finally:
        await asyncio.gather(*(agent.close() for agent in agents))


@pytest.fixture(scope="module")
def echo_process() -> Iterator[DevnetProcess]:
    with echo_devnet() as process:
        yield process


@pytest.mark.parametrize(("kind", "per_agent"), [("call_sync", 10), ("call_v2", 5), ("query", 40)])
def test_devnet_throughput(benchmark: Any, echo_process: DevnetProcess, kind: str, per_agent: int) -> None:
    rates: list[float] = []
    pid = echo_process.pid
    cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
    benchmark.pedantic(lambda: rates.append(asyncio.run(_load(echo_process, kind, per_agent))), rounds=3, iterations=1)
    devnet_cpu = (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - wall_before)
    benchmark.extra_info.update(
        {"agents": AGENTS, "requests_per_s": [round(r) for r in rates], "devnet_cpu_share": round(devnet_cpu, 2)}
    )
    print(f"\ndevnet {kind}: {max(rates):.0f}/s best of {len(rates)} ({AGENTS} agents), devnet CPU {devnet_cpu:.0%}")
    assert rates and min(rates) > 0


class _Firehose:
    """A replica (no HTTP) hosting the firehose with ``FIREHOSE_CLIENTS`` clients of one gateway, on a manual clock."""

    def __init__(self) -> None:
        self.now_ns = 1_700_000_000_000_000_000
        self.replica = Replica({"firehose": FirehoseCanister}, Keys(b"\x01" * 32, b"\x02" * 32), clock=self.clock)
        self.canister = self.replica.canister_ids["firehose"]
        self.gateway = Principal(b"\x09" * 29)
        for i in range(FIREHOSE_CLIENTS):
            self._submit(
                Principal(i.to_bytes(2, "big") * 14 + b"\x01"), "ws_open", t.encode_ws_open_args(i, self.gateway)
            )
        config = {"messages_per_round": FIREHOSE_PER_ROUND, "payload_size": 100, "interval_ms": ROUND_NS // 1_000_000}
        self._submit(self.gateway, "configure", candid.encode(FIREHOSE_CONFIG, [config]))
        self.instance = self.replica.hosts[self.canister].instance
        assert isinstance(self.instance, FirehoseCanister)
        # The set-up rounds ran at now_ns + a few ns (one ns per round); the rounds below fall 1 ms past each
        # due time of the firehose's interval timer.
        self.now_ns += 1_000_000

    def clock(self) -> int:
        return self.now_ns

    def _submit(self, sender: Principal, method: str, arg: bytes) -> None:
        request_id = len(self.replica.ingress).to_bytes(32, "big")
        self.replica.submit(
            request_id, sender=sender, canister_id=self.canister, method=method, arg=arg, expiry_ns=self.now_ns + 10**12
        )
        self.replica.run_round()
        assert self.replica.ingress[request_id].status == "replied", self.replica.ingress[request_id].reject

    def round(self) -> None:
        """One firehose firing and the round's certification."""
        self.now_ns += ROUND_NS
        sent = self.instance.messages_sent
        self.replica.run_round()
        assert self.instance.messages_sent - sent == FIREHOSE_CLIENTS * FIREHOSE_PER_ROUND


def test_firehose_round(benchmark: Any) -> None:
    """One firehose round of 2000 sends, the certified map hashed at its end, and the round certified."""
    firehose = _Firehose()
    benchmark.pedantic(firehose.round, rounds=20, iterations=1, warmup_rounds=2)
    if benchmark.stats is None:  # --benchmark-disable: the round ran once, as a test
        return
    per_send_us = benchmark.stats.stats.median * 1e6 / (FIREHOSE_CLIENTS * FIREHOSE_PER_ROUND)
    benchmark.extra_info["us_per_send"] = round(per_send_us, 2)
    print(f"\nfirehose round: {per_send_us:.2f} µs per send (median round / {FIREHOSE_CLIENTS * FIREHOSE_PER_ROUND})")


def test_ws_get_messages_query(benchmark: Any) -> None:
    """A ``ws_get_messages`` query returning 50 messages, Candid in and out (no envelope, no HTTP)."""
    firehose = _Firehose()
    for _ in range(5):
        firehose.round()
    nonces = iter(range(0, firehose.instance.messages_sent - 50, 50))

    def poll() -> int:
        reply = firehose.replica.query(
            firehose.canister, "ws_get_messages", t.encode_get_messages_args(next(nonces)), firehose.gateway
        )
        return len(t.decode_get_messages_result(reply).messages)

    assert benchmark.pedantic(poll, rounds=100, iterations=1) == 50
