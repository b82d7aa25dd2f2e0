"""The gateway between verifying clients and a devnet behind the fault proxy: what holds today, what does not.

devnet (``test`` canister) <- FaultProxy <- gateway (in process) <- VerifyingClients. Messages reach the
clients two ways: echoes of what they send (relayed ``ws_message`` calls through the proxy) and messages the
canister is told to push (its ``send`` update, called straight on the devnet). Every test ends with each
client having received exactly what it expects, once and in order, on an open connection.

Every guarantee these tests check is kept; none is marked xfail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from icws_fast.cdk.api import Canister
from icws_fast.devnet import Devnet
from icws_fast.devnet.canisters.pingpong import PingPongCanister
from icws_fast.devnet.runtime import CanisterHost
from icws_fast.gateway.server import Gateway
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from tests.faults.proxy import FaultProxy
from tests.faults.verifying import VerifyingClient, push, settle, wait_for
from tests.gateway.gw_harness import start_gateway

pytestmark = pytest.mark.slow

CLIENTS = 3


@pytest.fixture
def devnet_canisters() -> dict[str, type[Canister]]:
    return {"test": PingPongCanister}


@pytest.fixture
def polling_interval_s() -> float:
    return 0.02


@dataclass
class Stack:
    devnet: Devnet
    proxy: FaultProxy
    gateway: Gateway
    canister: Principal
    direct: Agent  # straight to the devnet, for the canister's send
    clients: list[VerifyingClient]

    async def push_all(self, text: str) -> None:
        """Push one message to every client, concurrently (the calls land in one or two rounds)."""
        await asyncio.gather(*(push(self.direct, self.canister, c, f"{text} to {c.name}") for c in self.clients))

    async def exchange(self, count: int) -> None:
        await asyncio.gather(*(c.send(count) for c in self.clients))

    def metric(self, name: str, **labels: str) -> float:
        return self.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def stack(devnet: Devnet, polling_interval_s: float) -> AsyncIterator[Stack]:
    canister = devnet.canister_ids["test"]
    async with FaultProxy(devnet.url, seed=3) as proxy:
        gateway = await start_gateway(
            proxy.url, agent_root_key=devnet.root_key_der, polling_interval_s=polling_interval_s, drain_timeout_s=1.0
        )
        async with Agent(devnet.url, Ed25519Identity.generate(), root_key=devnet.root_key_der) as direct:
            url = f"ws://127.0.0.1:{gateway.port}"
            clients = [await VerifyingClient.connect(f"c{i}", url, canister, devnet) for i in range(CLIENTS)]
            stack = Stack(devnet, proxy, gateway, canister, direct, clients)
            try:
                await settle(clients)  # every client got its "ping"
                yield stack
            finally:
                for client in clients:
                    await client.close()
                await gateway.drain()


# -- what holds today -----------------------------------------------------------------------------------


async def test_outage_then_everything_arrives_once(stack: Stack) -> None:
    await stack.proxy.refuse_connections()
    # The canister queues messages while the gateway cannot reach it.
    await stack.push_all("during the outage")
    assert await wait_for(lambda: stack.metric("errors_total", kind="poll_transport") >= 3)
    await stack.proxy.accept_connections()
    await stack.exchange(5)
    await stack.push_all("after the outage")
    await settle(stack.clients)
    # The gateway kept serving: a new client opens and is served.
    late = await VerifyingClient.connect("late", f"ws://127.0.0.1:{stack.gateway.port}", stack.canister, stack.devnet)
    try:
        await late.send(2)
        await settle([late])
    finally:
        await late.close()


async def test_5xx_storm_then_everything_arrives_once(stack: Stack) -> None:
    # About every other poll fails (the gateway backs off after each failure, so the storm must let some through).
    for status, probability in ((503, 0.3), (429, 0.2), (500, 0.1)):
        stack.proxy.fault("status", endpoint="query", method="ws_get_messages", status=status, probability=probability)
    for round_ in range(3):
        await stack.exchange(3)
        await stack.push_all(f"storm {round_}")
    assert await wait_for(lambda: stack.proxy.count("status") >= 8, timeout_s=30.0)
    stack.proxy.clear()
    await settle(stack.clients)


async def test_slow_polls_deliver_everything_once(stack: Stack) -> None:
    # Every poll takes 0.3 s (well inside the gateway's poll time-out): the pipeline of polls must not
    # deliver a batch twice or out of order.
    polls_before = stack.proxy.seen[("query", "ws_get_messages")]
    stack.proxy.fault("delay", endpoint="query", method="ws_get_messages", delay_s=0.3)
    for round_ in range(3):
        await stack.exchange(4)
        await stack.push_all(f"slow {round_}")
    await settle(stack.clients, timeout_s=30.0)
    # Every poll since was slow.
    assert stack.proxy.count("delay") == stack.proxy.seen[("query", "ws_get_messages")] - polls_before > 0


# -- the relay and ws_close retry what is transient (issue 9, item 2) ----------------------------------------


def registered(stack: Stack) -> object:
    """The canister's set of connected client principals."""
    return stack.devnet.replica.hosts[stack.canister].instance.clients_connected  # type: ignore[attr-defined]


async def test_ws_close_is_retried(stack: Stack) -> None:
    rule = stack.proxy.fault("reset", endpoint="call", method="ws_close", count=1)
    leaving = stack.clients.pop()
    await leaving.close()
    assert await wait_for(lambda: rule.applied == 1)
    clients = registered(stack)
    assert await wait_for(lambda: leaving.principal not in clients, timeout_s=10.0)  # type: ignore[operator]
    assert await wait_for(lambda: stack.metric("ws_close_calls_total", outcome="ok") == 1)


async def test_ws_close_is_retried_through_an_outage(stack: Stack) -> None:
    leaving = stack.clients.pop()
    await stack.proxy.refuse_connections()
    await leaving.close()
    clients = registered(stack)
    await asyncio.sleep(1.0)  # a few attempts fail meanwhile
    assert leaving.principal in clients  # type: ignore[operator]
    await stack.proxy.accept_connections()
    assert await wait_for(lambda: leaving.principal not in clients, timeout_s=10.0)  # type: ignore[operator]
    # The others were served all along.
    await stack.exchange(2)
    await settle(stack.clients)


@pytest.mark.parametrize("status", [503, 429])
async def test_a_relay_hitting_transient_errors_is_delivered_once(stack: Stack, status: int) -> None:
    rule = stack.proxy.fault("status", endpoint="call", method="ws_message", status=status, count=3)
    await stack.exchange(3)
    await settle(stack.clients)
    assert rule.applied == 3


async def test_a_relay_the_replica_ran_but_did_not_answer_is_delivered_once(stack: Stack) -> None:
    # The replica executes the call, the answer is lost: the same bytes go again, and the IC deduplicates them.
    rule = stack.proxy.fault("drop", endpoint="call", method="ws_message", count=2)
    await stack.exchange(2)
    await settle(stack.clients)
    assert rule.applied >= 2  # concurrent calls may all match before the first drop is counted


async def test_a_transient_reject_is_retried(stack: Stack) -> None:
    rule = stack.proxy.fault("reject", endpoint="call", method="ws_message", reject_code=2, count=2)
    await stack.exchange(2)
    await settle(stack.clients)
    assert rule.applied == 2


async def test_a_definitive_reject_closes_only_that_client_with_the_reason(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    target, *others = stack.clients
    rule = stack.proxy.fault("reject", endpoint="call", method="ws_message", reject_code=4, count=1)
    with caplog.at_level("WARNING", logger="icws_fast.gateway.server"):
        await target.send(1)
        assert await wait_for(lambda: target.ws.close_code is not None)
    assert rule.applied == 1
    assert target.ws.close_code == 1011
    assert target.ws.close_reason == "ws_message failed: rejected (code 4): rejected by the fault proxy"
    # The full cause is in the log with the client key.
    (line,) = [r.getMessage() for r in caplog.records if "failed: rejected" in r.getMessage()]
    assert str(target.principal) in line and "code 4" in line
    stack.clients.remove(target)
    await stack.exchange(2)
    await settle(others)


# -- the poller's guarantees (issue 9; the state machine's unit tests are in tests/protocol/test_poller.py) --


async def test_a_batch_that_fails_verification_is_polled_again(stack: Stack) -> None:
    rule = stack.proxy.fault("resign", endpoint="query", method="ws_get_messages", count=1)
    await stack.push_all("re-signed")
    assert await wait_for(lambda: rule.applied == 1)
    await stack.exchange(3)
    await settle(stack.clients, timeout_s=10.0)
    assert stack.metric("errors_total", kind="poll_invalid_batch") >= 1
    assert stack.metric("dropped_messages_total", reason="invalid_certificate") >= 1


async def test_a_reordered_batch_is_never_delivered(stack: Stack) -> None:
    rule = stack.proxy.fault("reorder", endpoint="query", method="ws_get_messages", count=1)
    # Polls fail while the canister queues four messages for one client, so the first poll after answers them
    # in one batch, which the proxy reverses. One push after the other: each is executed before the next is
    # sent, so the canister queues them in the order expected (concurrent calls have no set order).
    target = stack.clients[0]
    await stack.proxy.refuse_connections()
    for i in range(4):
        await push(stack.direct, stack.canister, target, f"held {i}")
    await stack.proxy.accept_connections()
    assert await wait_for(lambda: rule.applied == 1)
    await settle(stack.clients, timeout_s=10.0)
    assert stack.metric("errors_total", kind="poll_nonce_gap") >= 1


async def test_overlapping_pushes_to_one_client_are_refused(stack: Stack) -> None:
    # The canister may execute concurrent calls in either order: the harness cannot know which to expect.
    target, other = stack.clients[:2]
    first, second, elsewhere = await asyncio.gather(
        push(stack.direct, stack.canister, target, "first"),
        push(stack.direct, stack.canister, target, "second"),
        push(stack.direct, stack.canister, other, "elsewhere"),
        return_exceptions=True,
    )
    assert (first, elsewhere) == (None, None)
    assert isinstance(second, RuntimeError)
    assert str(second).startswith("push 'second' to c0 while another push to it is under way")
    await settle(stack.clients)  # "first" and "elsewhere" arrive, "second" was never sent


async def test_a_stale_batch_is_never_delivered(stack: Stack) -> None:
    await stack.push_all("first")
    await settle(stack.clients)
    rule = stack.proxy.fault("replay", endpoint="query", method="ws_get_messages", count=1)
    assert await wait_for(lambda: rule.applied == 1)
    await stack.push_all("second")
    await settle(stack.clients, timeout_s=10.0)
    assert stack.metric("errors_total", kind="poll_stale_batch") >= 1


@pytest.mark.parametrize("polling_interval_s", [0.1])
async def test_an_empty_reply_ends_the_queue(stack: Stack) -> None:
    stack.proxy.fault("not_end_of_queue", endpoint="query", method="ws_get_messages")
    before = stack.proxy.seen[("query", "ws_get_messages")]
    await asyncio.sleep(1.0)
    polls = stack.proxy.seen[("query", "ws_get_messages")] - before
    # At a 0.1 s interval one second holds about 10 polls (a pipeline of 3 at most triples that).
    assert polls <= 40, f"{polls} polls in one second"


async def test_a_queue_that_went_backwards_is_resynchronised_for_new_clients(stack: Stack) -> None:
    await stack.exchange(4)
    await settle(stack.clients)  # the poller is well past nonce 10
    # Reinstall the canister: its queue restarts from nonce 0, while the old clients keep the poller alive.
    replica = stack.devnet.replica
    replica.hosts[stack.canister] = CanisterHost.install(stack.canister, PingPongCanister, time.time_ns())
    newcomer = await VerifyingClient.connect(
        "newcomer", f"ws://127.0.0.1:{stack.gateway.port}", stack.canister, stack.devnet
    )
    try:
        await newcomer.send(3)
        await settle([newcomer], timeout_s=10.0)
    finally:
        await newcomer.close()
    assert stack.metric("errors_total", kind="poll_resync") == 1


# -- readiness and the drain's bound (issue 9, items 2 and 6) ------------------------------------------------


async def _ready(gateway: Gateway) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gateway.metrics_port}/ready") as resp,
    ):
        return resp.status


async def test_ready_is_false_while_the_ic_does_not_answer(devnet: Devnet) -> None:
    async with FaultProxy(devnet.url, seed=3) as proxy:
        gateway = await start_gateway(proxy.url, agent_root_key=devnet.root_key_der, ready_check_interval_s=0.1)
        try:
            assert await _ready(gateway) == 200
            await proxy.refuse_connections()
            assert await wait_for(lambda: not gateway.ready)
            assert await _ready(gateway) == 503
            await proxy.accept_connections()
            assert await wait_for(lambda: gateway.ready)
            assert await _ready(gateway) == 200
        finally:
            await gateway.drain()


async def test_ws_close_retries_do_not_hold_the_drain_past_its_bound(stack: Stack) -> None:
    await stack.proxy.refuse_connections()  # every ws_close of the drain fails, and is retried
    started = time.monotonic()
    await stack.gateway.drain()
    # The drain's bound is 1 s (below); the rest is closing sockets and the agent.
    assert time.monotonic() - started < 1.0 + 2.0
    assert stack.metric("ws_close_calls_total", outcome="ok") == 0
    await stack.proxy.accept_connections()
