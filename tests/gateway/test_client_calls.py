"""Calls made for clients are capped (``max_concurrent_calls``), so a burst of ``ws_open`` never starves the polls.

devnet <- FaultProxy (holding every ``ws_open`` call for a while) <- gateway (in process) <- raw clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from icws_fast.devnet import Devnet
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


async def test_a_burst_of_opens_is_relayed_a_few_at_a_time_while_polls_go_on(devnet: Devnet) -> None:
    canister = devnet.canister_ids["test"]
    async with FaultProxy(devnet.url) as proxy:
        proxy.fault("delay", endpoint="call", method="ws_open", delay_s=HOLD_S)
        gateway = await start_gateway(proxy.url, agent_root_key=devnet.root_key_der, max_concurrent_calls=CAP)
        try:
            url = f"ws://127.0.0.1:{gateway.port}"
            clients = [await RawClient.connect(url) for _ in range(CLIENTS)]
            opening: list[Awaitable[object]] = [asyncio.ensure_future(c.open(canister, timeout=60)) for c in clients]

            def opens() -> int:
                return proxy.seen[("call", "ws_open")]

            await wait_until(lambda: opens() == CAP, f"{CAP} ws_open calls reach the replica")
            polls = proxy.seen[("query", "ws_get_messages")]
            # While those are held, no further ws_open goes out, and the poller keeps polling beside them.
            await wait_until(lambda: proxy.seen[("query", "ws_get_messages")] > polls + 3, "the poller polls again")
            assert opens() == CAP
            await asyncio.gather(*opening)  # every session opens in the end, CAP at a time
            assert opens() == CLIENTS
            for client in clients:
                client.close()
        finally:
            await gateway.drain()
