"""The demo canisters the devnet hosts by default, in a fixed order (so their canister ids are stable).

- ``test``: the official ic-websocket-gateway test canister (ping / pong), see :mod:`.pingpong`;
- ``chat``: broadcasts every message to every connected client and keeps the latest, see :mod:`.chat`;
- ``firehose``: sends configurable rounds of messages from a timer, for benchmarks, see :mod:`.firehose`.
"""

from __future__ import annotations

from typing import Final

from icws_fast.cdk.api import Canister
from icws_fast.devnet.canisters.chat import ChatCanister
from icws_fast.devnet.canisters.firehose import FirehoseCanister
from icws_fast.devnet.canisters.pingpong import PingPongCanister

__all__ = ["DEMO_CANISTERS", "ChatCanister", "FirehoseCanister", "PingPongCanister"]

DEMO_CANISTERS: Final[dict[str, type[Canister]]] = {
    "test": PingPongCanister,
    "chat": ChatCanister,
    "firehose": FirehoseCanister,
}
