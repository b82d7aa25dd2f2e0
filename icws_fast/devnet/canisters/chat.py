"""``chat``: every message a client sends is broadcast to every connected client (the sender included).

Clients send the ``test`` canister's ``AppMessage`` (``record { text : text; timestamp : nat64 }``); the canister
broadcasts a ``ChatMessage``, the same record plus the ``id`` it assigns (1, 2, 3, … in order) and the ``sender``'s
principal, with ``timestamp`` set to the canister's time. A ``ChatMessage`` is a Candid subtype of ``AppMessage``,
so a client that decodes ``AppMessage`` still reads it. A message that is not an ``AppMessage``, or whose text is
longer than :data:`MAX_TEXT_LENGTH`, traps, so the sender gets a reject and nobody receives it.

The last :data:`HISTORY_LENGTH` messages are kept; the ``history`` query returns them, oldest first, so that a
client that joins (or reconnects) shows what was said before. It is a query rather than a push from ``on_open``,
so clients that only follow the live stream (load tests measuring latency from ``timestamp``) never receive old
messages; a client that uses both de-duplicates by ``id``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from icws_fast.cdk import api
from icws_fast.cdk.api import query
from icws_fast.cdk.websocket import WS_TYPES_DID, WsCanister, WsHandlers, WsInitParams
from icws_fast.devnet.canisters.pingpong import APP_MESSAGE_DID, decode_app_message
from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

HISTORY_LENGTH: Final = 50
"""How many of the latest messages the canister keeps for ``history``."""
MAX_TEXT_LENGTH: Final = 1000
"""The longest text (in characters) the canister accepts: it bounds what the history holds and returns."""

CHAT_MESSAGE_DID: Final = (
    "type ChatMessage = record { text : text; timestamp : nat64; id : nat64; sender : principal };\n"
)
_CHAT_MESSAGE: Final = candid.parse_args("(ChatMessage)", CHAT_MESSAGE_DID)


def encode_chat_message(message: dict[str, Any]) -> bytes:
    """Candid ``(ChatMessage)`` of ``{"text", "timestamp", "id", "sender"}``, as the canister broadcasts it."""
    return candid.encode(_CHAT_MESSAGE, [message])


def decode_chat_message(data: bytes) -> dict[str, Any]:
    """``{"text", "timestamp", "id", "sender"}`` of a Candid ``(ChatMessage)``; raises ``CandidError``."""
    value: dict[str, Any] = candid.decode(data, _CHAT_MESSAGE)[0]
    return value


class ChatCanister(WsCanister):
    """Broadcasts each received message, with an id and its sender, to everyone connected; keeps the latest."""

    CANDID = WS_TYPES_DID + APP_MESSAGE_DID + CHAT_MESSAGE_DID

    def __init__(self) -> None:
        super().__init__()
        self.last_id = 0
        self.latest: deque[dict[str, Any]] = deque(maxlen=HISTORY_LENGTH)

    def init(self) -> None:
        self.websocket.init(WsInitParams(WsHandlers(on_message=self.on_message)))

    def post_upgrade(self) -> None:
        self.init()

    def on_message(self, client: Principal, message: bytes) -> None:
        # Validated before anything changes: the devnet host does not roll state back on a trap.
        try:
            text, _ = decode_app_message(message)
        except CandidError as exc:
            api.trap(f"cannot decode the app message: {exc}")
        if len(text) > MAX_TEXT_LENGTH:
            api.trap(f"the text has {len(text)} characters, more than the {MAX_TEXT_LENGTH} the chat accepts")
        self.last_id += 1
        chat_message = {"text": text, "timestamp": api.time(), "id": self.last_id, "sender": client}
        self.latest.append(chat_message)
        content = encode_chat_message(chat_message)
        for recipient in self.websocket.connected_clients():
            self.websocket.send(recipient, content)

    @query("() -> (vec ChatMessage)")
    def history(self) -> list[dict[str, Any]]:
        """The latest messages (at most :data:`HISTORY_LENGTH`), oldest first."""
        return list(self.latest)
