"""The gateway with the project's client SDK, which verifies every certificate, on the demo canisters."""

from __future__ import annotations

import asyncio

import pytest

from icws_fast.client import IcWebSocket

pytestmark = pytest.mark.slow


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
