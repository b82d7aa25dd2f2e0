"""A gateway and a devnet as real processes, signalled and killed while verifying clients exchange messages.

devnet subprocess (``test`` canister, state dir) <- FaultProxy <- ``icws-gateway`` subprocess <- VerifyingClients.
A SIGTERM drains the gateway within its bound and closes every client with 1001, without repeating, reordering
or half-delivering a message, and a new gateway on the same port serves the clients that reconnect. A devnet
restarted under a running gateway (cleanly, or after a SIGKILL) leaves every client either served as before
or closed with a reason: none hangs, none sees a message twice or out of order.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity, Identity
from icws_fast.ic.principal import Principal
from tests.faults.proxy import FaultProxy
from tests.faults.verifying import VerifyingClient, push, settle, wait_for
from tests.processes import DevnetProcess, GatewayProcess

pytestmark = pytest.mark.slow

CLIENTS = 4
DRAIN_TIMEOUT_S = 3.0


@dataclass
class ProcessStack:
    devnet: DevnetProcess
    proxy: FaultProxy
    gateway: GatewayProcess

    @property
    def canister(self) -> Principal:
        return self.devnet.canister_ids["test"]

    async def connect(self, names: Iterable[str], identities: Iterable[Identity] = ()) -> list[VerifyingClient]:
        """A client per name (with the identities given, in order; fresh ones for the rest), each with its "ping"."""
        ids = iter(identities)
        clients = [
            await VerifyingClient.connect(name, self.gateway.url, self.canister, self.devnet, next(ids, None))
            for name in names
        ]
        await settle(clients)  # every client got its "ping"
        return clients

    async def load(self, clients: list[VerifyingClient], count: int) -> None:
        """Each client sends ``count`` messages and is pushed ``count`` more, all at once (a fresh agent: the
        devnet may have restarted since the last round). A client closed meanwhile fails its sends, which the
        caller's check accounts for."""
        async with Agent(self.devnet.url, Ed25519Identity.generate(), root_key=self.devnet.root_key_der) as direct:

            async def pushes(client: VerifyingClient) -> None:
                # One after the other: concurrent calls to one client would queue in any order.
                for i in range(count):
                    await push(direct, self.canister, client, f"push {i} to {client.name}")

            await asyncio.gather(*(c.send(count) for c in clients), *map(pushes, clients), return_exceptions=True)


@pytest.fixture
async def stack(devnet_process: DevnetProcess, tmp_path: Path) -> AsyncIterator[ProcessStack]:
    async with FaultProxy(devnet_process.url, seed=5) as proxy:
        options = ["--drain-timeout", str(DRAIN_TIMEOUT_S), "--polling-interval", "20"]
        async with GatewayProcess(proxy.url, tmp_path / "gateway", extra_args=options) as gateway:
            yield ProcessStack(devnet_process, proxy, gateway)


async def test_sigterm_under_load_drains_then_a_new_gateway_serves_the_clients_that_reconnect(
    stack: ProcessStack,
) -> None:
    identities = [Ed25519Identity.generate() for _ in range(CLIENTS)]
    clients = await stack.connect((f"c{i}" for i in range(CLIENTS)), identities)
    await stack.load(clients, 3)
    await settle(clients)
    # Messages in flight both ways when the signal lands.
    loading = asyncio.create_task(stack.load(clients, 5))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    status = await stack.gateway.stop_async()
    elapsed = time.monotonic() - started
    await loading
    assert status == 0, stack.gateway.output
    # The drain's bound, plus the interpreter's exit.
    assert elapsed < DRAIN_TIMEOUT_S + 5.0, f"the gateway took {elapsed:.1f} s to exit"
    assert await wait_for(lambda: all(c.ws.close_code is not None for c in clients), timeout_s=5.0)
    for client in clients:
        client.check(close_code=1001, complete=False)
        assert client.ws.close_reason == "gateway shutting down"
        await client.close()
    # A new gateway on the same port (same data dir: same principal) serves the clients as they come back (same
    # identities, new sessions: nothing of the old sessions is delivered again).
    await stack.gateway.start_async()
    again = await stack.connect((f"r{i}" for i in range(CLIENTS)), identities)
    assert [c.principal for c in again] == [c.principal for c in clients]
    await stack.load(again, 3)
    await settle(again)
    for client in again:
        await client.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_a_devnet_restart_leaves_every_client_served_or_closed_with_a_reason(
    stack: ProcessStack, how: str
) -> None:
    clients = await stack.connect(f"c{i}" for i in range(CLIENTS))
    await stack.load(clients, 3)
    await settle(clients)
    await asyncio.to_thread(stack.devnet.stop, signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    await asyncio.sleep(1.0)  # the gateway's polls and the proxy's upstream fail meanwhile
    await asyncio.to_thread(stack.devnet.start)
    await stack.load(clients, 3)
    # Served: everything arrives. Not served (the canister forgot the session): closed with a reason, promptly.
    await wait_for(lambda: all(c.done for c in clients), timeout_s=20.0)
    await asyncio.sleep(0.3)  # time for a duplicate to show
    for client in clients:
        if client.ws.close_code is None:
            client.check()
        else:
            assert client.ws.close_reason, f"client {client.name} closed with {client.ws.close_code} and no reason"
            client.check(close_code=client.ws.close_code, complete=False)
    if how == "sigterm":
        # The devnet persisted the canister's state on SIGTERM: every session survived.
        assert all(c.ws.close_code is None for c in clients), [(c.ws.close_code, c.ws.close_reason) for c in clients]
    # Either way the gateway serves new clients.
    newcomers = await stack.connect(["n0", "n1"])
    await stack.load(newcomers, 2)
    await settle(newcomers)
    for client in [*clients, *newcomers]:
        await client.close()
