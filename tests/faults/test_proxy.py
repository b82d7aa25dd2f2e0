"""Each fault of the proxy, against the devnet: an agent request through the proxy gets exactly the fault configured.

The ``test`` canister queues messages for a gateway identity: ``ws_open`` from a client queues the open
service message and ``"ping"``, and its ``send`` update queues more, so ``ws_get_messages`` answers real,
certified batches that the proxy can re-sign, swap, replay and reorder.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from icws_fast.cdk.api import Canister
from icws_fast.devnet import Devnet
from icws_fast.devnet.canisters.pingpong import PingPongCanister
from icws_fast.errors import (
    AgentError,
    AgentTimeout,
    CertificateError,
    HttpStatusError,
    IcwsError,
    RejectError,
    TransportError,
)
from icws_fast.ic import candid, hashtree
from icws_fast.ic.agent import Agent
from icws_fast.ic.certificate import Certificate
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from tests.faults.proxy import FaultProxy, Rule

SEND_ARGS = candid.parse_args("(principal, blob)")


@pytest.fixture
def devnet_canisters() -> dict[str, type[Canister]]:
    return {"test": PingPongCanister}


@dataclass
class Setup:
    devnet: Devnet
    proxy: FaultProxy
    canister: Principal
    gateway: Agent  # through the proxy, as the gateway's identity
    direct: Agent  # straight to the devnet, same identity
    client: Principal

    async def get_messages(self, nonce: int, agent: Agent | None = None) -> t.CanisterOutputCertifiedMessages:
        reply = await (agent or self.gateway).query(self.canister, "ws_get_messages", t.encode_get_messages_args(nonce))
        return t.decode_get_messages_result(reply)

    async def send(self, content: bytes) -> None:
        """Queue one more message for the client (straight to the devnet)."""
        await self.direct.call(self.canister, "send", candid.encode(SEND_ARGS, [self.client, content]))


@pytest.fixture
async def setup(devnet: Devnet) -> AsyncIterator[Setup]:
    canister = devnet.canister_ids["test"]
    gateway_identity, client_identity = Ed25519Identity.generate(), Ed25519Identity.generate()
    async with (
        FaultProxy(devnet.url, seed=7) as proxy,
        Agent(proxy.url, gateway_identity, root_key=devnet.root_key_der) as gateway,
        Agent(devnet.url, gateway_identity, root_key=devnet.root_key_der) as direct,
        Agent(devnet.url, client_identity, root_key=devnet.root_key_der) as client,
    ):
        # The client opens through the gateway identity: the open message and "ping" are queued at nonces 0 and 1.
        t.decode_unit_result(await client.call(canister, "ws_open", t.encode_ws_open_args(1, gateway_identity.sender)))
        yield Setup(devnet, proxy, canister, gateway, direct, client_identity.sender)


def verify_batch(setup: Setup, batch: t.CanisterOutputCertifiedMessages) -> None:
    """Check the batch's certificate and that its tree holds every message's hash; CertificateError if not."""
    cert = Certificate.from_cbor(batch.cert)
    cert.verify(setup.devnet.root_key_der, setup.canister)
    tree = hashtree.parse(batch.tree)
    if hashtree.reconstruct(tree) != cert.lookup_value([b"canister", setup.canister.bytes, b"certified_data"]):
        raise CertificateError("tree", "the tree is not the certified data")
    for message in batch.messages:
        found = hashtree.lookup_path(tree, [t.LABEL_WEBSOCKET, message.key.encode()])
        if found.status != "Found" or found.value != hashlib.sha256(message.content).digest():
            raise CertificateError("tree", f"message {message.key} is not in the tree ({found.status})")


def nonces(batch: t.CanisterOutputCertifiedMessages) -> list[int]:
    return [t.parse_message_nonce(m.key) for m in batch.messages]


async def test_requests_pass_unchanged_and_are_counted(setup: Setup) -> None:
    batch = await setup.get_messages(0)
    assert nonces(batch) == [0, 1]
    verify_batch(setup, batch)
    await setup.gateway.read_state(setup.canister, [[b"time"]])
    assert await setup.gateway.status()
    seen = setup.proxy.seen
    assert seen[("query", "ws_get_messages")] == 1 and seen[("read_state", None)] == 1 and seen[("status", None)] == 1
    assert setup.proxy.count() == 0


async def test_cut_closes_mid_answer_once(setup: Setup) -> None:
    rule = setup.proxy.fault("cut", endpoint="query", method="ws_get_messages", count=1)
    with pytest.raises(TransportError):
        await setup.get_messages(0)
    assert nonces(await setup.get_messages(0)) == [0, 1]  # count=1: the next one passes
    assert rule.applied == 1 and setup.proxy.count("cut", "query", "ws_get_messages") == 1


async def test_reset_selects_by_method(setup: Setup) -> None:
    setup.proxy.fault("reset", endpoint="call", method="ws_close")
    # Another method of the same endpoint kind, and another endpoint, pass.
    await setup.gateway.call(setup.canister, "send", candid.encode(SEND_ARGS, [setup.client, b"x"]))
    await setup.get_messages(0)
    with pytest.raises(TransportError):
        await setup.gateway.call(setup.canister, "ws_close", t.encode_ws_close_args(t.ClientKey(setup.client, 1)))
    assert setup.proxy.applied == {("reset", "call", "ws_close"): 1}


async def test_delay(setup: Setup) -> None:
    setup.proxy.fault("delay", endpoint="query", delay_s=30.0, count=1)
    with pytest.raises(AgentTimeout):
        await setup.gateway.query(setup.canister, "ws_get_messages", t.encode_get_messages_args(0), timeout_s=0.2)
    assert setup.proxy.count("delay") == 1
    assert nonces(await setup.get_messages(0)) == [0, 1]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_status(setup: Setup, status: int) -> None:
    setup.proxy.fault("status", endpoint="query", status=status, count=2)
    for _ in range(2):
        with pytest.raises(HttpStatusError) as info:
            await setup.get_messages(0)
        assert info.value.status == status and "fault proxy" in info.value.text
    # Not an endpoint-missing status: the agent stays on the v3 query.
    assert setup.gateway.endpoint_version("query") == 3
    assert nonces(await setup.get_messages(0)) == [0, 1]


async def test_a_404_on_the_newest_endpoints_plays_an_older_replica(setup: Setup) -> None:
    setup.proxy.fault("status", endpoint="call", status=404, count=1)
    await setup.gateway.call(setup.canister, "send", candid.encode(SEND_ARGS, [setup.client, b"y"]))
    assert setup.gateway.endpoint_version("call") == 3


async def test_truncate(setup: Setup) -> None:
    setup.proxy.fault("truncate", endpoint="read_state", count=1)
    with pytest.raises(AgentError, match="malformed CBOR"):
        await setup.gateway.read_state(setup.canister, [[b"time"]])
    assert setup.proxy.count("truncate", "read_state") == 1


async def test_corrupt_flips_exactly_the_configured_bytes() -> None:
    # A fixed upstream body, so that the damage can be counted byte by byte.
    original = bytes(range(256)) * 4

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(body=original, content_type="application/cbor")

    app = web.Application()
    app.router.add_get("/api/v2/status", fixed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        async with FaultProxy(f"http://{host}:{port}", seed=5) as proxy, aiohttp.ClientSession() as http:
            proxy.fault("corrupt", endpoint="status", corrupt_bytes=3, count=1)
            for flips in (3, 0):
                async with http.get(proxy.url + "/api/v2/status") as resp:
                    damaged = await resp.read()
                assert len(damaged) == len(original)
                assert sum(a != b for a, b in zip(damaged, original, strict=True)) == flips
    finally:
        await runner.cleanup()


async def test_a_corrupt_certified_answer_never_passes(setup: Setup) -> None:
    setup.proxy.fault("corrupt", endpoint="read_state", corrupt_bytes=16, count=5)
    for _ in range(5):
        with pytest.raises((AgentError, CertificateError)):
            await setup.gateway.read_state(setup.canister, [[b"time"]])
    assert setup.proxy.count("corrupt") == 5


async def test_resign_call_and_read_state(setup: Setup) -> None:
    setup.proxy.fault("resign", endpoint="call", count=1)
    setup.proxy.fault("resign", endpoint="read_state", count=1)
    for attempt in (
        setup.gateway.call(setup.canister, "send", candid.encode(SEND_ARGS, [setup.client, b"z"])),
        setup.gateway.read_state(setup.canister, [[b"time"]]),
    ):
        with pytest.raises(CertificateError) as info:
            await attempt
        assert info.value.reason == "invalid-signature"
    assert setup.proxy.count("resign") == 2


async def test_resign_ws_get_messages(setup: Setup) -> None:
    setup.proxy.fault("resign", method="ws_get_messages", count=1)
    batch = await setup.get_messages(0)
    assert nonces(batch) == [0, 1]
    with pytest.raises(CertificateError, match="invalid-signature"):
        verify_batch(setup, batch)


async def test_swap_tree_gives_a_batch_the_previous_tree(setup: Setup) -> None:
    first = await setup.get_messages(0)
    await setup.send(b"third")
    setup.proxy.fault("swap_tree", method="ws_get_messages", count=1)
    swapped = await setup.get_messages(2)
    assert nonces(swapped) == [2] and (swapped.cert, swapped.tree) == (first.cert, first.tree)
    with pytest.raises(CertificateError, match="not in the tree"):
        verify_batch(setup, swapped)
    verify_batch(setup, await setup.get_messages(2))


async def test_replay_answers_an_older_reply(setup: Setup) -> None:
    first = await setup.get_messages(0)
    await setup.send(b"third")
    setup.proxy.fault("replay", method="ws_get_messages", count=1)
    assert await setup.get_messages(2) == first  # a stale batch, still validly certified
    assert nonces(await setup.get_messages(2)) == [2]


async def test_reorder_reverses_a_batch(setup: Setup) -> None:
    setup.proxy.fault("reorder", method="ws_get_messages", count=1)
    batch = await setup.get_messages(0)
    assert nonces(batch) == [1, 0]
    verify_batch(setup, batch)  # every message still verifies: only the order is wrong
    # A one-message batch cannot be reordered: it passes and is not counted.
    setup.proxy.fault("reorder", method="ws_get_messages", count=1)
    assert nonces(await setup.get_messages(1)) == [1]
    assert setup.proxy.count("reorder") == 1


async def test_not_end_of_queue_marks_an_empty_batch(setup: Setup) -> None:
    setup.proxy.fault("not_end_of_queue", method="ws_get_messages", count=1)
    batch = await setup.get_messages(5)
    assert (batch.messages, batch.is_end_of_queue) == ([], False)
    assert (await setup.get_messages(5)).is_end_of_queue


async def test_drop_executes_but_never_answers(setup: Setup) -> None:
    setup.proxy.fault("drop", endpoint="call", method="send", count=1)
    with pytest.raises(TransportError):
        await setup.gateway.call(setup.canister, "send", candid.encode(SEND_ARGS, [setup.client, b"dropped"]))
    # The replica executed the call: its message is queued.
    batch = await setup.get_messages(0, setup.direct)
    assert t.decode_websocket_message(batch.messages[-1].content).content == b"dropped"


async def test_reject(setup: Setup) -> None:
    setup.proxy.fault("reject", endpoint="query", count=1)
    setup.proxy.fault("reject", endpoint="call", reject_code=1, count=1)
    with pytest.raises(RejectError) as info:
        await setup.get_messages(0)
    assert (info.value.reject_code, info.value.reject_message) == (2, "rejected by the fault proxy")
    with pytest.raises(RejectError) as info:
        await setup.gateway.call(setup.canister, "send", candid.encode(SEND_ARGS, [setup.client, b"r"]))
    assert info.value.reject_code == 1
    # A reject of a read_state does not exist: a rule for it forwards the answer and counts nothing.
    setup.proxy.fault("reject", endpoint="read_state")
    await setup.gateway.read_state(setup.canister, [[b"time"]])
    assert setup.proxy.count("reject") == 2


async def test_refused_connections(setup: Setup) -> None:
    await setup.proxy.refuse_connections()
    with pytest.raises(TransportError):
        await setup.get_messages(0)
    await setup.proxy.accept_connections()
    assert nonces(await setup.get_messages(0)) == [0, 1]


async def test_upstream_down_is_a_502(setup: Setup) -> None:
    await setup.devnet.stop()
    with pytest.raises(HttpStatusError) as info:
        await setup.get_messages(0)
    assert info.value.status == 502
    await setup.devnet.start()
    assert nonces(await setup.get_messages(0)) == [0, 1]


async def test_skip_and_probability_are_seeded(setup: Setup) -> None:
    skipping = setup.proxy.add(Rule("status", endpoint="status", skip=2, count=1))
    outcomes = []
    for _ in range(4):
        try:
            await setup.gateway.status()
            outcomes.append("ok")
        except HttpStatusError:
            outcomes.append("fault")
    assert outcomes == ["ok", "ok", "fault", "ok"] and skipping.applied == 1

    async def pattern(seed: int) -> list[bool]:
        async with FaultProxy(setup.devnet.url, seed=seed) as proxy, Agent(proxy.url) as agent:
            proxy.fault("status", endpoint="status", probability=0.5)
            hits = []
            for _ in range(24):
                try:
                    await agent.status()
                    hits.append(False)
                except HttpStatusError:
                    hits.append(True)
            assert proxy.count("status") == sum(hits)
            return hits

    first = await pattern(11)
    assert first == await pattern(11)  # the same seed, the same faults
    assert 0 < sum(first) < len(first)


def test_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown fault action"):
        Rule("explode")
    with pytest.raises(ValueError, match="unknown endpoint kind"):
        Rule("cut", endpoint="calls")


async def test_hostile_requests_get_an_answer_not_a_crash(setup: Setup) -> None:
    # Whatever a client sends, the proxy forwards it (the devnet judges it) or answers 501; it never dies.
    async with aiohttp.ClientSession() as http:
        for body in (b"", b"\xff\x00", b"not cbor"):
            async with http.post(f"{setup.proxy.url}/api/v3/canister/{setup.canister}/query", data=body) as resp:
                assert resp.status == 400
    with pytest.raises(IcwsError):
        await setup.gateway.query(Principal.from_text("aaaaa-aa"), "nothing", b"")
    for raw in (b"GET nowhere HTTP/1.1\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
        reader, writer = await asyncio.open_connection(setup.proxy.host, setup.proxy.port)
        writer.write(raw)
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
    assert nonces(await setup.get_messages(0)) == [0, 1]
