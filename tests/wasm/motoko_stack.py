"""The official Motoko CDK test canister on ``icws-devnet`` behind ``icws-gateway`` processes, and its Candid API.

The canister does not answer messages itself: a test drives it through its helper methods ``send``
(enqueue messages for a client) and ``close`` (close a client from the canister side), as the CDK's
own integration tests do. Application messages are ``AppMessage = record { text : text }``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.principal import Principal
from tests.interop.ws_stack import running_gateway
from tests.processes import DevnetProcess
from tests.wasm.wasm_canisters import MOTOKO_CDK_CANISTER

#: Small batches (a backlog takes several polls) and the shortest ack interval the CDK accepts
#: (it must exceed its 60 s keep-alive timeout).
MAX_MESSAGES_PER_BATCH: Final = 3
SEND_ACK_INTERVAL_MS: Final = 60_001
INIT_ARG: Final = f"({MAX_MESSAGES_PER_BATCH} : nat64, {SEND_ACK_INTERVAL_MS:_} : nat64)"
APP_MESSAGE: Final = "record { text : text }"

SERVICE: Final = candid.parse_did((MOTOKO_CDK_CANISTER.with_suffix(".did")).read_text()).service
assert SERVICE is not None


def encode_args(method: str, *values: Any) -> bytes:
    method_type = SERVICE.methods[method]
    assert isinstance(method_type, candid.FuncType)
    return candid.encode(list(method_type.args), list(values))


def decode_reply(method: str, reply: bytes) -> Any:
    method_type = SERVICE.methods[method]
    assert isinstance(method_type, candid.FuncType)
    values = candid.decode(reply, list(method_type.rets))
    return values[0] if values else None


def app_message(text: str) -> bytes:
    return candid.encode([candid.parse_type(APP_MESSAGE)], [{"text": text}])


async def call(agent: Agent, canister_id: Principal, method: str, *values: Any) -> Any:
    """Call an update method of the canister with Candid ``values``; its decoded result."""
    return decode_reply(method, await agent.call(canister_id, method, encode_args(method, *values)))


async def query(agent: Agent, canister_id: Principal, method: str, *values: Any) -> Any:
    return decode_reply(method, await agent.query(canister_id, method, encode_args(method, *values)))


@dataclass
class MotokoStack:
    devnet: DevnetProcess
    gateways: list[str]

    @property
    def canister_id(self) -> Principal:
        return self.devnet.canister_ids["mo"]


@contextlib.contextmanager
def motoko_devnet(state_dir: Path, init_arg: str = INIT_ARG) -> Iterator[DevnetProcess]:
    """``icws-devnet`` serving the Motoko CDK test canister as ``mo`` (``--canister mo=...wasm --init-arg``)."""
    args = ["--canister", f"mo={MOTOKO_CDK_CANISTER}", "--init-arg", f"mo={init_arg}"]
    with DevnetProcess(state_dir=state_dir, extra_args=args) as devnet:
        yield devnet


@contextlib.contextmanager
def motoko_stack(state_dir: Path, gateways: int = 2) -> Iterator[MotokoStack]:
    """The devnet and ``gateways`` gateway processes in front of it."""
    with motoko_devnet(state_dir / "devnet") as devnet, contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(running_gateway(devnet.url, state_dir / f"gateway{index}")) for index in range(gateways)
        ]
        yield MotokoStack(devnet, urls)
