"""Canisters the gateway tests host on the devnet (through the real CDK), independent of the demo apps.

``Echo`` sends every app message back to its sender. ``Burst`` answers the update ``burst(n, size)`` by
queueing ``n`` messages of ``size`` bytes (each starting with its index, big-endian) for every connected
client, so a test can check order, loss and duplicates at volume. ``Flaky`` fails every
``ws_get_messages`` once ``fail`` is called: a canister error the gateway must pass on to its clients.
``Corrupt`` returns batches whose certificate, tree or contents were tampered with: the gateway must not relay them.
"""

from __future__ import annotations

from typing import Any

from icws_fast.cdk import api
from icws_fast.cdk.api import query, update
from icws_fast.cdk.websocket import WsCanister, WsHandlers, WsInitParams
from icws_fast.ic.principal import Principal

# Short ack / keep-alive cycle (a test sees two in a few seconds), with room for a loaded test machine.
ACK_INTERVAL_MS = 1200
KEEP_ALIVE_TIMEOUT_MS = 1000


class Echo(WsCanister):
    def init(self) -> None:
        self.websocket.init(
            WsInitParams(
                WsHandlers(on_message=self.on_message),
                send_ack_interval_ms=ACK_INTERVAL_MS,
                keep_alive_timeout_ms=KEEP_ALIVE_TIMEOUT_MS,
            )
        )

    post_upgrade = init

    def on_message(self, client: Principal, message: bytes) -> None:
        self.websocket.send(client, message)


class Burst(WsCanister):
    def init(self) -> None:
        self.websocket.init(WsInitParams(WsHandlers()))

    post_upgrade = init

    @update("(nat32, nat32) -> ()")
    def burst(self, n: int, size: int) -> None:
        for client in self.websocket.connected_clients():
            for i in range(n):
                self.websocket.send(client, i.to_bytes(4, "big") + bytes(max(0, size - 4)))


class Flaky(WsCanister):
    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def init(self) -> None:
        self.websocket.init(WsInitParams(WsHandlers()))

    post_upgrade = init

    @update("() -> ()")
    def fail(self) -> None:
        self.failing = True

    @query("(CanisterWsGetMessagesArguments) -> (CanisterWsGetMessagesResult)")
    def ws_get_messages(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.failing:
            api.trap("ws_get_messages is broken")
        return self.websocket.ws_get_messages(args)


class Corrupt(WsCanister):
    """Sends ``ping`` on demand; ``corrupt(part)`` spoils the ``cert``, ``tree`` or ``content`` of later polls."""

    def __init__(self) -> None:
        super().__init__()
        self.spoil = ""

    def init(self) -> None:
        self.websocket.init(WsInitParams(WsHandlers()))

    post_upgrade = init

    @update("(text) -> ()")
    def corrupt(self, part: str) -> None:
        self.spoil = part

    @update("(blob) -> ()")
    def ping(self, content: bytes) -> None:
        for client in self.websocket.connected_clients():
            self.websocket.send(client, content)

    @query("(CanisterWsGetMessagesArguments) -> (CanisterWsGetMessagesResult)")
    def ws_get_messages(self, args: dict[str, Any]) -> dict[str, Any]:
        result = self.websocket.ws_get_messages(args)
        batch = result.get("Ok")
        if batch and batch["messages"] and self.spoil in ("cert", "tree"):
            batch[self.spoil] = _flip_a_bit(batch[self.spoil])
        elif batch and self.spoil == "content":
            for message in batch["messages"]:
                message["content"] = _flip_a_bit(message["content"])
        return result


def _flip_a_bit(data: bytes) -> bytes:
    spoilt = bytearray(data)
    spoilt[len(spoilt) // 2] ^= 0x01
    return bytes(spoilt)


CANISTERS = {"echo": Echo, "burst": Burst, "flaky": Flaky, "echo2": Echo, "corrupt": Corrupt}
