"""The poller against replicas that hang or refuse connections (real sockets, real agent)."""

from __future__ import annotations

import asyncio
import contextlib

from icws_fast.gateway.metrics import GatewayMetrics
from icws_fast.gateway.poller import CanisterPoller
from icws_fast.ic.agent import Agent
from icws_fast.ic.principal import Principal

CANISTER = Principal.from_text("rrkah-fqaaa-aaaaa-aaaaq-cai")


async def _run_for(poller: CanisterPoller, seconds: float) -> None:
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_hanging_replica_is_repolled_with_the_same_nonce():
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    metrics = GatewayMetrics()
    async with Agent(f"http://127.0.0.1:{port}") as agent:
        poller = CanisterPoller(
            agent, CANISTER, {}, metrics=metrics, root_key_der=None, interval_s=0.01, poll_timeout_s=0.05, start_nonce=7
        )
        await _run_for(poller, 0.4)
    server.close()
    assert metrics.registry.get_sample_value("errors_total", {"kind": "poll_timeout"}) >= 3
    assert poller.nonce == 7


async def test_an_unreachable_replica_backs_off():
    metrics = GatewayMetrics()
    async with Agent("http://127.0.0.1:9") as agent:
        poller = CanisterPoller(
            agent, CANISTER, {}, metrics=metrics, root_key_der=None, interval_s=0.05, max_backoff_s=0.2
        )
        await _run_for(poller, 0.6)
    failures = metrics.registry.get_sample_value("errors_total", {"kind": "poll_transport"})
    # Back-off doubles from the polling interval up to 0.2 s: a handful of attempts, not a busy loop.
    assert 2 <= failures <= 8
    assert poller.nonce == 0
