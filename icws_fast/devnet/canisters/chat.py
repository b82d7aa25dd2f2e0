"""``chat``: every message a client sends is broadcast to every connected client (the sender included).

Messages use the ``test`` canister's ``AppMessage`` (``record { text : text; timestamp : nat64 }``), so the same
client code talks to both. A message that is not an ``AppMessage`` traps, so the sender gets a reject and nobody
receives garbage.
"""

from __future__ import annotations

from icws_fast.cdk import api
from icws_fast.cdk.websocket import WS_TYPES_DID, WsCanister, WsHandlers, WsInitParams
from icws_fast.devnet.canisters.pingpong import APP_MESSAGE_DID, decode_app_message
from icws_fast.errors import CandidError
from icws_fast.ic.principal import Principal


class ChatCanister(WsCanister):
    """Broadcasts each received message, unchanged, to everyone connected."""

    CANDID = WS_TYPES_DID + APP_MESSAGE_DID

    def init(self) -> None:
        self.websocket.init(WsInitParams(WsHandlers(on_message=self.on_message)))

    def post_upgrade(self) -> None:
        self.init()

    def on_message(self, client: Principal, message: bytes) -> None:
        try:
            decode_app_message(message)
        except CandidError as exc:
            api.trap(f"cannot decode the app message: {exc}")
        for recipient in self.websocket.connected_clients():
            self.websocket.send(recipient, message)
