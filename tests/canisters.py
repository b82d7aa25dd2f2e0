"""Canisters several test folders host: the demo ping-pong canister on an ack / keep-alive cycle of seconds."""

from __future__ import annotations

from typing import ClassVar

from icws_fast.cdk.websocket import WsHandlers, WsInitParams
from icws_fast.devnet.canisters.pingpong import PingPongCanister


class AckCyclePingPongCanister(PingPongCanister):
    """The ping-pong canister acking every ``SEND_ACK_INTERVAL_MS`` (the Rust CDK default is 300 s).

    It drops a client whose keep-alive is ``KEEP_ALIVE_TIMEOUT_MS`` late; subclasses set other cycles.
    """

    SEND_ACK_INTERVAL_MS: ClassVar[int] = 1000
    KEEP_ALIVE_TIMEOUT_MS: ClassVar[int] = 900

    def ws_params(self) -> WsInitParams:
        return WsInitParams(
            WsHandlers(self.on_open, self.on_message, self.on_close),
            send_ack_interval_ms=self.SEND_ACK_INTERVAL_MS,
            keep_alive_timeout_ms=self.KEEP_ALIVE_TIMEOUT_MS,
        )
