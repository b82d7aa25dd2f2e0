"""The canister of the synthetic replica: the Python CDK's IC WebSocket endpoint plus a ``produce`` method.

The clients open their sessions with the CDK's own ``ws_open``; ``produce`` then queues ``count`` application
messages through the CDK's ``send`` (so the messages, their keys, the certified map and the witnesses are the
CDK's), to the connected clients in the order they opened: one message each in turn (``burst`` 1, round robin)
or runs of ``burst`` messages to the same client. Only the synthetic replica may call ``produce``: its caller
must be :data:`PRODUCER`, an opaque principal that no signed request can carry.
"""

from __future__ import annotations

from typing import Final

from icws_fast.cdk import api
from icws_fast.cdk.api import update
from icws_fast.cdk.websocket import WS_TYPES_DID, WsCanister, WsHandlers, WsInitParams
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

#: The caller of ``produce``: an opaque principal (class byte 0x01), which no envelope can authenticate as.
PRODUCER: Final = Principal(b"icws-bench-producer\x01")
PRODUCE_ARGS: Final = candid.parse_args("(nat32, nat32, nat32)")
_APP_MESSAGE: Final = candid.parse_args("(blob)")


def app_message(payload_size: int) -> bytes:
    """The Candid app message (``AppMessage = blob``) every produced message carries: ``payload_size`` bytes."""
    return candid.encode(_APP_MESSAGE, [b"x" * payload_size])


class StreamCanister(WsCanister):
    """A :class:`WsCanister` that queues messages when the synthetic replica calls :meth:`produce`."""

    CANDID = WS_TYPES_DID + "type AppMessage = blob;\n"

    def __init__(self) -> None:
        super().__init__()
        # How many messages were produced: the position in the destination pattern.
        self.cursor = 0

    def init(self) -> None:
        self.websocket.init(WsInitParams(WsHandlers()))

    post_upgrade = init

    @update("(nat32, nat32, nat32) -> ()")
    def produce(self, count: int, payload_size: int, burst: int) -> None:
        """Queue ``count`` messages of ``payload_size`` bytes, in runs of ``burst`` to the same client."""
        if api.caller() != PRODUCER:
            api.trap("produce is for the synthetic replica only")
        clients = self.websocket.connected_clients()
        if not clients:
            api.trap("produce needs connected clients")
        message = app_message(payload_size)
        burst = max(burst, 1)
        for _ in range(count):
            self.websocket.send(clients[(self.cursor // burst) % len(clients)], message)
            self.cursor += 1
