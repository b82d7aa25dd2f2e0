"""Calls made for clients are capped (``max_concurrent_calls``), so a burst of ``ws_open`` never starves the polls.

devnet <- FaultProxy (holding every ``ws_open`` call for a while) <- gateway (in process) <- raw clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from icws_fast.devnet import Devnet
from icws_fast.gateway.server import Gateway
from tests.faults.proxy import FaultProxy
from tests.gateway.gw_harness import start_gateway
from tests.gateway.gw_rawclient import RawClient

CAP = 2
CLIENTS = 6
HOLD_S = 1.0


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def burst_of_opens(devnet: Devnet) -> AsyncIterator[tuple[FaultProxy, list[Awaitable[object]]]]:
    """CLIENTS sessions opening at once through a gateway capped at CAP calls, each ws_open held HOLD_S by the
    proxy, until CAP of them reached the replica; yields the proxy and the opens (the test awaits them)."""
    canister = devnet.canister_ids["test"]
    async with FaultProxy(devnet.url) as proxy:
        proxy.fault("delay", endpoint="call", method="ws_open", delay_s=HOLD_S)
        gateway = await start_gateway(proxy.url, agent_root_key=devnet.root_key_der, max_concurrent_calls=CAP)
        try:
            url = f"ws://127.0.0.1:{gateway.port}"
            clients = [await RawClient.connect(url) for _ in range(CLIENTS)]
            opening: list[Awaitable[object]] = [asyncio.ensure_future(c.open(canister, timeout=60)) for c in clients]
            await wait_until(lambda: proxy.seen[("call", "ws_open")] == CAP, f"{CAP} ws_open calls reach the replica")
            yield proxy, opening
            for client in clients:
                client.close()
        finally:
            await gateway.drain()


async def test_a_burst_of_opens_is_relayed_a_few_at_a_time_while_polls_go_on(devnet: Devnet) -> None:
    async with burst_of_opens(devnet) as (proxy, opening):
        polls = proxy.seen[("query", "ws_get_messages")]
        # While those are held, no further ws_open goes out, and the poller keeps polling beside them.
        await wait_until(lambda: proxy.seen[("query", "ws_get_messages")] > polls + 3, "the poller polls again")
        assert proxy.seen[("call", "ws_open")] == CAP
        await asyncio.gather(*opening)  # every session opens in the end, CAP at a time
        assert proxy.seen[("call", "ws_open")] == CLIENTS


def ws_closes(gateway: Gateway, outcome: str) -> float:
    return gateway.metrics.registry.get_sample_value("ws_close_calls_total", {"outcome": outcome}) or 0.0


def relay_tasks() -> int:
    """The gateway's tasks relaying a connection's envelopes (one per connection at most)."""
    return sum(1 for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "ClientConnection._run_relays")  # type: ignore[union-attr]


async def test_sessions_waiting_for_a_call_slot_hold_no_task(devnet: Devnet) -> None:
    """Thousands of sessions open at once: those waiting for a slot cost a queue entry, not a parked task."""
    async with burst_of_opens(devnet) as (proxy, opening):
        await asyncio.sleep(0.2)  # every other ws_open has reached the gateway by now
        assert relay_tasks() == CAP
        await asyncio.gather(*opening)
        assert proxy.seen[("call", "ws_open")] == CLIENTS


async def test_a_client_gone_while_its_ws_open_waits_for_a_slot_is_opened_then_closed(devnet: Devnet) -> None:
    """As when each session had its task: the ws_open accepted from the client still goes out, ws_close after it."""
    canister = devnet.canister_ids["test"]
    async with FaultProxy(devnet.url) as proxy:
        proxy.fault("delay", endpoint="call", method="ws_open", delay_s=HOLD_S)
        gateway = await start_gateway(proxy.url, agent_root_key=devnet.root_key_der, max_concurrent_calls=1)
        try:
            url = f"ws://127.0.0.1:{gateway.port}"
            first, gone = await RawClient.connect(url), await RawClient.connect(url)
            opening = asyncio.ensure_future(first.open(canister, timeout=60))
            await wait_until(lambda: proxy.seen[("call", "ws_open")] == 1, "the first ws_open reaches the replica")
            assert gone.canister_id is None
            leaving = asyncio.ensure_future(gone.open(canister, timeout=60))
            await asyncio.sleep(0.2)  # its ws_open is in the gateway, waiting for the one slot
            assert relay_tasks() == 1
            gone.abort()
            with contextlib.suppress(Exception):
                await leaving
            await opening
            # The canister accepts a ws_close only for a client it opened: so the ws_open went first.
            await wait_until(lambda: ws_closes(gateway, "ok") == 1, "the canister accepts ws_close for the client gone")
            assert proxy.seen[("call", "ws_open")] == 2
            assert ws_closes(gateway, "error") == 0
            first.close()
        finally:
            await gateway.drain()


async def test_a_relay_cancelled_during_its_first_call_gives_its_slot_back_once(devnet: Devnet) -> None:
    """The slot a connection's task was handed goes back once, by whichever of the task or its call holds it."""
    canister = devnet.canister_ids["test"]
    async with FaultProxy(devnet.url) as proxy:
        proxy.fault("delay", endpoint="call", method="ws_open", delay_s=HOLD_S)
        gateway = await start_gateway(proxy.url, agent_root_key=devnet.root_key_der, max_concurrent_calls=CAP)
        try:
            url = f"ws://127.0.0.1:{gateway.port}"
            first = await RawClient.connect(url)
            abandoned = asyncio.ensure_future(first.open(canister, timeout=60))
            await wait_until(lambda: proxy.seen[("call", "ws_open")] == 1, "the first ws_open reaches the replica")
            (relaying,) = [
                t
                for t in asyncio.all_tasks()
                if t.get_coro().__qualname__ == "ClientConnection._run_relays"  # type: ignore[union-attr]
            ]
            relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relaying
            abandoned.cancel()
            clients = [await RawClient.connect(url) for _ in range(CLIENTS)]
            opening = [asyncio.ensure_future(c.open(canister, timeout=60)) for c in clients]
            await wait_until(lambda: proxy.seen[("call", "ws_open")] >= 1 + CAP, f"{CAP} more ws_open calls go out")
            await asyncio.sleep(0.3)  # a slot given back twice would let one more out while those are held
            assert proxy.seen[("call", "ws_open")] == 1 + CAP
            await asyncio.gather(*opening)
            for client in [first, *clients]:
                client.close()
        finally:
            await gateway.drain()
