"""Acknowledgements and the keep-alive timeout over real HTTP, on devnet timers with a shortened cycle.

The Rust CDK's defaults (ack every 300 s, keep-alive timeout 60 s) are shortened through ``WsInitParams`` to
1 s / 0.7 s, so the whole cycle runs in about two seconds of real time with margin for a loaded CI machine.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from icws_fast.cdk.api import Canister
from icws_fast.devnet import Devnet
from icws_fast.protocol import types as t
from tests.canisters import AckCyclePingPongCanister
from tests.cdk.ws_actors import WsClient, WsGateway

pytestmark = pytest.mark.timeout(60)

ACK_INTERVAL_MS = 1000
KEEP_ALIVE_TIMEOUT_MS = 700


class FastAckCanister(AckCyclePingPongCanister):
    SEND_ACK_INTERVAL_MS = ACK_INTERVAL_MS
    KEEP_ALIVE_TIMEOUT_MS = KEEP_ALIVE_TIMEOUT_MS


@pytest.fixture
def devnet_canisters() -> dict[str, type[Canister]]:
    return {"test": FastAckCanister}


@pytest_asyncio.fixture
async def gateway(devnet: Devnet) -> AsyncIterator[WsGateway]:
    gw = WsGateway(devnet, devnet.canister_ids["test"])
    yield gw
    await gw.close()


async def test_ack_then_keep_alive_timeout(devnet: Devnet, gateway: WsGateway) -> None:
    canister = devnet.canister_ids["test"]
    alive = WsClient(devnet, canister, gateway.principal)
    silent = WsClient(devnet, canister, gateway.principal)
    try:
        for c in (alive, silent):
            assert await c.open() == {"Ok": None}
        assert await alive.send(t.encode_service_message(t.KeepAliveMessage(0)), service=True) == {"Ok": None}
        started = time.monotonic()

        # Poll like a gateway; answer every ack of `alive` with a keep-alive, as the JS client does.
        closes: dict[t.ClientKey, t.CloseMessage] = {}
        acks: dict[t.ClientKey, t.AckMessage] = {}
        while silent.key not in closes:
            assert time.monotonic() - started < 20, "no keep-alive timeout"
            for ws in await gateway.poll_until(1):
                if not ws.is_service_message:
                    continue
                message = t.decode_service_message(ws.content)
                if isinstance(message, t.AckMessage):
                    acks.setdefault(ws.client_key, message)
                    if ws.client_key == alive.key:
                        keep_alive = t.encode_service_message(t.KeepAliveMessage(ws.sequence_num))
                        assert await alive.send(keep_alive, service=True) == {"Ok": None}
                elif isinstance(message, t.CloseMessage):
                    closes[ws.client_key] = message

        # The first ack reports the last message the canister received from each client.
        assert acks[alive.key] == t.AckMessage(1)
        assert acks[silent.key] == t.AckMessage(0)
        assert closes == {silent.key: t.CloseMessage(t.CloseMessageReason.KeepAliveTimeout)}
        assert await silent.send(b"") == {
            "Err": f"Client with principal {silent.principal} doesn't have an open connection"
        }
    finally:
        await alive.close()
        await silent.close()
