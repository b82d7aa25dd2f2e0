"""The whole IC WebSocket stack for the official JS SDK checks: ``icws-devnet`` and ``icws-gateway`` processes.

Both are the console scripts a deployment runs, each in its own process, on free loopback ports. The devnet
hosts the demo ``test`` and ``chat`` canisters (Rust CDK default parameters) and ``quick``, the test canister with
an ack / keep-alive cycle of seconds so that the SDK's keep-alive path runs within a test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from tests.canisters import AckCyclePingPongCanister
from tests.processes import DevnetProcess, GatewayProcess

HERE: Final = Path(__file__).resolve().parent
# The cycle the SDK is configured with (``ackMessageIntervalMs``): it must equal the canister's.
SEND_ACK_INTERVAL_MS: Final = 2000
KEEP_ALIVE_TIMEOUT_MS: Final = 1500


class QuickAckPingPongCanister(AckCyclePingPongCanister):
    """The ``test`` canister acking every 2 s and dropping clients whose keep-alive is 1.5 s late."""

    SEND_ACK_INTERVAL_MS = SEND_ACK_INTERVAL_MS
    KEEP_ALIVE_TIMEOUT_MS = KEEP_ALIVE_TIMEOUT_MS


def gateway_process(ic_url: str, data_dir: Path, address: str = "127.0.0.1:0") -> GatewayProcess:
    """``icws-gateway`` on ``address`` in front of ``ic_url`` (not started): the one the interop tests run."""
    return GatewayProcess(ic_url, data_dir, address, extra_args=["--polling-interval", "20"])


@contextlib.contextmanager
def running_gateway(ic_url: str, data_dir: Path, address: str = "127.0.0.1:0") -> Iterator[str]:
    """``icws-gateway`` on ``address`` in front of ``ic_url``; yields its ``ws://`` URL, drains it (SIGTERM) on exit."""
    with gateway_process(ic_url, data_dir, address) as gateway:
        yield gateway.url


def stack_devnet(state_dir: Path, *, subnet_delegation: bool = False) -> DevnetProcess:
    """``icws-devnet`` (not started) hosting ``test``, ``chat`` and ``quick``, its state in ``state_dir/devnet``.

    ``subnet_delegation`` makes the devnet certify through a subnet delegation, as mainnet application subnets do.
    """
    return DevnetProcess(
        state_dir=state_dir / "devnet",
        extra_args=[
            "--canister",
            "test=icws_fast.devnet.canisters.pingpong:PingPongCanister",
            "--canister",
            "chat=icws_fast.devnet.canisters.chat:ChatCanister",
            "--canister",
            f"quick={__name__}:QuickAckPingPongCanister",
            *(["--subnet-delegation"] if subnet_delegation else []),
        ],
    )


@contextlib.contextmanager
def running_stack(state_dir: Path, *, subnet_delegation: bool = False) -> Iterator[dict[str, Any]]:
    """Devnet + gateway; yields ``{"ic_url", "root_key", "canisters", "gateway_url", "ack_interval_ms"}``.

    ``canisters`` maps ``test``, ``chat`` and ``quick`` to their ids; ``ack_interval_ms`` is ``quick``'s cycle.
    """
    devnet = stack_devnet(state_dir, subnet_delegation=subnet_delegation)
    with devnet, running_gateway(devnet.url, state_dir / "gateway") as gateway_url:
        yield {
            "ic_url": devnet.url,
            "root_key": devnet.info["root_key"],
            "canisters": devnet.info["canisters"],
            "gateway_url": gateway_url,
            "ack_interval_ms": SEND_ACK_INTERVAL_MS,
        }
