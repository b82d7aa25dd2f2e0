"""The gateway with the project's client SDK, which verifies every certificate, on the demo canisters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from icws_fast.client import IcWebSocket
from icws_fast.devnet import Devnet
from icws_fast.gateway.server import Gateway
from tests.gateway.gw_harness import start_gateway

pytestmark = pytest.mark.slow


@pytest.fixture
async def devnet() -> AsyncIterator[Devnet]:
    async with Devnet(address="127.0.0.1:0", round_ms=10) as dn:
        yield dn


@pytest.fixture
async def gateway(devnet: Devnet) -> AsyncIterator[Gateway]:
    gw = await start_gateway(devnet.url)
    yield gw
    await gw.drain()


async def test_sdk_clients_talk_to_the_test_canister(devnet, gateway):
    async def session(n: int) -> None:
        ws = await IcWebSocket.connect(
            f"ws://127.0.0.1:{gateway.port}", devnet.canister_ids["test"], devnet.url, root_key_der=devnet.root_key_der
        )
        greeting = await asyncio.wait_for(ws.recv(), 20)
        assert greeting["text"] == "ping"
        for i in range(3):
            await ws.send({"text": f"hello {n}.{i}", "timestamp": 0})
            reply = await asyncio.wait_for(ws.recv(), 20)
            assert reply["text"] == f"hello {n}.{i} ping"
        await ws.close()

    await asyncio.gather(*(session(n) for n in range(6)))
    assert gateway.metrics.registry.get_sample_value("dropped_messages_total", {"reason": "invalid_certificate"}) in (
        None,
        0.0,
    )
