"""``firehose``: a load generator. Every ``interval_ms`` it sends ``messages_per_round`` messages of
``payload_size`` characters to every connected client; ``configure`` changes the three (0 messages stops it);
``sent`` counts the messages its rounds queued, so a benchmark knows what the canister really sent.

Messages are the ``test`` canister's ``AppMessage`` (``text`` = the payload, ``timestamp`` = the canister time of
the round), so latency can be measured as with the official load tests. The ack interval is shortened to 70 s
(the Rust CDK requires more than the 60 s keep-alive timeout) because delivered messages are only deleted once
older than the ack interval: at benchmark rates the default 5 minutes would keep millions queued.
"""

from __future__ import annotations

from typing import Any, Final

from icws_fast.cdk import api
from icws_fast.cdk.api import query, update
from icws_fast.cdk.websocket import WS_TYPES_DID, WsCanister, WsHandlers, WsInitParams
from icws_fast.devnet.canisters.pingpong import APP_MESSAGE_DID, encode_app_message

FIREHOSE_ACK_INTERVAL_MS: Final = 70_000
MAX_MESSAGES_PER_ROUND: Final = 100_000
MAX_PAYLOAD_SIZE: Final = 2 * 1024 * 1024
#: Bytes one round may queue per client: anyone may call ``configure``, and the two maxima together (200 GB a
#: round) would exhaust the devnet's memory.
MAX_ROUND_BYTES: Final = 64 * 1024 * 1024
DEFAULT_INTERVAL_MS: Final = 100


class FirehoseCanister(WsCanister):
    """Sends rounds of messages to every connected client from a timer."""

    CANDID = (
        WS_TYPES_DID
        + APP_MESSAGE_DID
        + "type FirehoseConfig = record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 };\n"
    )

    #: A class attribute, so that an instance the devnet persisted before the counter existed restores with it.
    messages_sent = 0

    def __init__(self) -> None:
        super().__init__()
        self.messages_per_round = 0
        self.payload_size = 0
        self.interval_ms = DEFAULT_INTERVAL_MS
        self.rounds = 0
        self._timer: int | None = None

    def init(self) -> None:
        self.websocket.init(WsInitParams(WsHandlers(), send_ack_interval_ms=FIREHOSE_ACK_INTERVAL_MS))
        self._timer = None  # timers do not survive an upgrade; a stale id must not be cancelled later
        self._arm()

    def post_upgrade(self) -> None:
        self.init()

    def _arm(self) -> None:
        if self._timer is not None:
            api.clear_timer(self._timer)
            self._timer = None
        if self.messages_per_round > 0:
            self._timer = api.set_timer_interval(self.interval_ms * 1_000_000, self._round)

    def _round(self) -> None:
        clients = self.websocket.connected_clients()
        if not clients:
            return
        self.rounds += 1
        # The time is constant during one execution, so one encoding serves the whole round.
        message = encode_app_message("x" * self.payload_size, api.time())
        for client in clients:
            for _ in range(self.messages_per_round):
                self.websocket.send(client, message)
        self.messages_sent += len(clients) * self.messages_per_round

    @update("(FirehoseConfig) -> ()")
    def configure(self, config: dict[str, Any]) -> None:
        """Set the rate; traps on values above the limits (per message and per round) or a zero interval."""
        if config["messages_per_round"] > MAX_MESSAGES_PER_ROUND:
            api.trap(f"messages_per_round must be at most {MAX_MESSAGES_PER_ROUND}")
        if config["payload_size"] > MAX_PAYLOAD_SIZE:
            api.trap(f"payload_size must be at most {MAX_PAYLOAD_SIZE}")
        if config["messages_per_round"] * config["payload_size"] > MAX_ROUND_BYTES:
            api.trap(f"messages_per_round * payload_size must be at most {MAX_ROUND_BYTES}")
        if config["interval_ms"] == 0:
            api.trap("interval_ms must be positive")
        self.messages_per_round = config["messages_per_round"]
        self.payload_size = config["payload_size"]
        self.interval_ms = config["interval_ms"]
        self._arm()

    @query("() -> (FirehoseConfig)")
    def config(self) -> dict[str, Any]:
        """The current settings."""
        return {
            "messages_per_round": self.messages_per_round,
            "payload_size": self.payload_size,
            "interval_ms": self.interval_ms,
        }

    @query("() -> (nat64)")
    def sent(self) -> int:
        """How many messages the rounds have queued since the canister was installed or upgraded."""
        return self.messages_sent
