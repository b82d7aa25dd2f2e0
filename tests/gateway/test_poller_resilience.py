"""The poller against replicas that hang or refuse connections (real sockets, real agent)."""

from __future__ import annotations

import asyncio
import contextlib

from icws_fast.gateway.metrics import GatewayMetrics
from icws_fast.gateway.poller import CanisterPoller, _within
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


# The poll's time-out (poller._within): what asyncio.timeout did, with a timer of its own.


async def _hang() -> bytes:
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


async def test_a_poll_past_its_time_out_raises_timeout_error_and_leaves_no_cancel_pending() -> None:
    async def poll() -> int:
        with contextlib.suppress(TimeoutError):
            await _within(0.01, _hang())
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.create_task(poll()) == 0


async def test_a_poll_cancelled_before_its_time_out_stays_cancelled() -> None:
    task = asyncio.create_task(_within(5.0, _hang()))
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_poll_cancelled_from_elsewhere_as_it_times_out_stays_cancelled() -> None:
    async def cancelled_twice() -> bytes:
        try:
            return await _hang()
        except asyncio.CancelledError:
            # The poller cancels this poll (no longer wanted) while the time-out's cancel is on its way.
            this = asyncio.current_task()
            assert this is not None
            this.cancel()
            raise

    task = asyncio.create_task(_within(0.01, cancelled_twice()))
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
