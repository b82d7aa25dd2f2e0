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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from tests.interop.echo_canister import echo_devnet
from tests.processes import DevnetProcess, cpu_seconds

AGENTS = 100
TEXT = [candid.parse_type("text")]


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
