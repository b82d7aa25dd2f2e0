"""``test``: the official gateway's test canister (``tests/src/test_canister_rs`` of ic-websocket-gateway).

Same Candid interface and behaviour, so clients and load tests written for the official stack run unchanged: on
open it sends ``{ text = "ping" }``, on every message it answers with the text plus ``" ping"``; every message
carries the canister time in ``timestamp`` (the official load tests measure latency with it). ``send`` lets a test
push raw bytes to a client. ``close`` (not in the official canister) closes a client from the canister side.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

from icws_fast.cdk import api
from icws_fast.cdk.api import update
from icws_fast.cdk.websocket import WS_TYPES_DID, WsCanister, WsHandlers, WsInitParams
from icws_fast.errors import CandidError, CdkError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

APP_MESSAGE_DID: Final = "type AppMessage = record { text : text; timestamp : nat64 };\n"
_APP_MESSAGE: Final = candid.parse_args("(AppMessage)", APP_MESSAGE_DID)


def encode_app_message(text: str, timestamp: int) -> bytes:
    """Candid ``(AppMessage)``, as the canister sends and expects it."""
    return candid.encode(_APP_MESSAGE, [{"text": text, "timestamp": timestamp}])


def decode_app_message(data: bytes) -> tuple[str, int]:
    """``(text, timestamp)`` of a Candid ``(AppMessage)``; raises :class:`~icws_fast.errors.CandidError`."""
    value = candid.decode(data, _APP_MESSAGE)[0]
    return value["text"], value["timestamp"]


def result(error: CdkError | None) -> dict[str, Any]:
    """``variant { Ok : null; Err : text }`` for the debug methods."""
    return {"Ok": None} if error is None else {"Err": str(error)}


class PingPongCanister(WsCanister):
    """Echoes ``text + " ping"``; keeps the set of connected clients like the official canister."""

    __test__ = False  # not a pytest test class, whatever its name

    CANDID = (
        WS_TYPES_DID
        + APP_MESSAGE_DID
        + "type CanisterSendResult = variant { Ok : null; Err : text };\n"
        + "type CanisterCloseResult = variant { Ok : null; Err : text };\n"
    )

    def __init__(self) -> None:
        super().__init__()
        self.clients_connected: set[Principal] = set()

    def ws_params(self) -> WsInitParams:
        """The CDK parameters (the Rust defaults); tests override this to shorten the ack cycle."""
        return WsInitParams(WsHandlers(self.on_open, self.on_message, self.on_close))

    def init(self) -> None:
        self.websocket.init(self.ws_params())

    def post_upgrade(self) -> None:
        self.init()

    def on_open(self, client: Principal) -> None:
        self.clients_connected.add(client)
        self._send_app_message(client, "ping")

    def on_message(self, client: Principal, message: bytes) -> None:
        try:
            text, _ = decode_app_message(message)
        except CandidError as exc:
            # The official canister unwraps the decode, i.e. traps.
            api.trap(f"cannot decode the app message: {exc}")
        self._send_app_message(client, text + " ping")

    def on_close(self, client: Principal) -> None:
        self.clients_connected.discard(client)

    def _send_app_message(self, client: Principal, text: str) -> None:
        # The official canister only logs a failed send (the client went away meanwhile).
        with contextlib.suppress(CdkError):
            self.websocket.send(client, encode_app_message(text, api.time()))

    @update("(ClientPrincipal, blob) -> (CanisterSendResult)")
    def send(self, client_principal: Principal, message: bytes) -> dict[str, Any]:
        try:
            self.websocket.send(client_principal, message)
        except CdkError as exc:
            return result(exc)
        return result(None)

    @update("(ClientPrincipal) -> (CanisterCloseResult)")
    def close(self, client_principal: Principal) -> dict[str, Any]:
        try:
            self.websocket.close(client_principal)
        except CdkError as exc:
            return result(exc)
        return result(None)
