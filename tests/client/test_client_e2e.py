"""Both client flavours end to end: devnet (replica + CDK + ``test`` canister) and gateway, over real sockets.

The ``test`` canister sends ``{text = "ping"}`` on open and answers each message with ``text + " ping"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from icws_fast.cdk.api import Canister
from icws_fast.client import IcWebSocket, SyncIcWebSocket
from icws_fast.devnet import Devnet
from icws_fast.devnet.canisters.pingpong import PingPongCanister
from icws_fast.gateway.server import Gateway
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from tests.canisters import AckCyclePingPongCanister

pytestmark = pytest.mark.slow


@pytest.fixture
def subnet_delegation() -> bool:
    """Whether the devnet's certificates are signed by a subnet key delegated from the root key."""
    return False


@pytest.fixture
def devnet_canisters() -> dict[str, type[Canister]]:
    """For the ``devnet`` fixture of tests/plugins/devnet.py."""
    return {"test": PingPongCanister, "fast_ack": AckCyclePingPongCanister}


@pytest.fixture
def devnet_options(subnet_delegation: bool) -> dict[str, Any]:
    return {"subnet_delegation": subnet_delegation}


def gateway_url(gateway: Gateway) -> str:
    return f"ws://127.0.0.1:{gateway.port}"


@pytest.mark.parametrize("subnet_delegation", [False, True], ids=["root-signed", "subnet-delegation"])
async def test_asyncio_client(devnet: Devnet, gateway: Gateway, subnet_delegation: bool) -> None:
    assert devnet.replica.delegated is subnet_delegation
    canister_id = devnet.canister_ids["test"]
    # No root key given: the client fetches it from the devnet's /api/v2/status, as for any local replica.
    ws = await IcWebSocket.connect(gateway_url(gateway), canister_id, devnet.url)
    assert (await asyncio.wait_for(ws.recv(), 20))["text"] == "ping"
    for i in range(5):
        await ws.send({"text": f"hello {i}", "timestamp": 0})
    texts = [(await asyncio.wait_for(ws.recv(), 20))["text"] for _ in range(5)]
    assert texts == [f"hello {i} ping" for i in range(5)]
    await ws.close()
    assert ws.close_code == 1000 and ws.error is None


async def test_canister_closes_the_client(devnet: Devnet, gateway: Gateway) -> None:
    canister_id = devnet.canister_ids["test"]
    closed = asyncio.Event()
    ws = await IcWebSocket.connect(
        gateway_url(gateway),
        canister_id,
        devnet.url,
        root_key_der=devnet.root_key_der,
        on_close=lambda c, r: closed.set(),
    )
    async with Agent(devnet.url, Ed25519Identity.generate(), root_key=devnet.root_key_der) as agent:
        reply = await agent.call(canister_id, "close", candid.encode(candid.parse_args("(principal)"), [ws.principal]))
        assert candid.decode(reply, candid.parse_args("(variant { Ok : null; Err : text })")) == [{"Ok": None}]
    await asyncio.wait_for(closed.wait(), 20)
    assert [value["text"] async for value in ws] == ["ping"]
    assert (ws.close_code, ws.close_reason) == (4001, "ClosedByApplication")


async def test_sync_client(devnet: Devnet, gateway: Gateway) -> None:
    canister_id = devnet.canister_ids["test"].to_text()
    url = gateway_url(gateway)

    def session(n: int) -> list[str]:
        texts: list[str] = []
        # The blocking client reads the root key itself (a blocking /api/v2/status request).
        with SyncIcWebSocket.connect(url, canister_id, devnet.url) as ws:
            texts.append(ws.recv(timeout=20)["text"])
            for i in range(3):
                ws.send({"text": f"{n}.{i}", "timestamp": 0})
                texts.append(ws.recv(timeout=20)["text"])
            ws.send({"text": "end", "timestamp": 0})
            texts.append(ws.recv(timeout=20)["text"])
        assert ws.close_code == 1000
        return texts

    # The devnet and the gateway run on this event loop: the blocking clients run in threads.
    results = await asyncio.gather(*(asyncio.to_thread(session, n) for n in range(3)))
    for n, texts in enumerate(results):
        assert texts == ["ping", f"{n}.0 ping", f"{n}.1 ping", f"{n}.2 ping", "end ping"]


async def test_keep_alive_is_accepted_by_the_cdk(devnet: Devnet, gateway: Gateway) -> None:
    ws = await IcWebSocket.connect(
        gateway_url(gateway), devnet.canister_ids["fast_ack"], devnet.url, root_key_der=devnet.root_key_der
    )
    assert (await asyncio.wait_for(ws.recv(), 20))["text"] == "ping"
    # The canister's first ack (within a second) is answered with a keep-alive, sequence number 1.
    for _ in range(300):
        if ws._protocol._outgoing_sequence_num == 1:
            break
        await asyncio.sleep(0.01)
    assert ws._protocol._outgoing_sequence_num == 1
    # Number 2 is echoed only if the CDK counted the keep-alive; otherwise it closes with WrongSequenceNumber.
    # (Asked right away, well before the CDK's keep-alive check: on a 10 ms-round devnet that check can fire
    # one round late and then reject a keep-alive that arrived within the same round as the ack.)
    await ws.send({"text": "after keep-alive", "timestamp": 0})
    assert (await asyncio.wait_for(ws.recv(), 20))["text"] == "after keep-alive ping"
    await ws.close()
    assert ws.close_code == 1000 and ws.error is None
