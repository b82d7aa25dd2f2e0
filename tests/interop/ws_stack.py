"""The whole IC WebSocket stack for the official JS SDK checks: ``icws-devnet`` and ``icws-gateway`` processes.

Both are the console scripts a deployment runs, each in its own process, on free loopback ports. The devnet
hosts the demo ``test`` and ``chat`` canisters (Rust CDK default parameters) and ``quick``, the test canister with
an ack / keep-alive cycle of seconds so that the SDK's keep-alive path runs within a test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from icws_fast.cdk.websocket import WsHandlers, WsInitParams
from icws_fast.devnet.canisters.pingpong import PingPongCanister
from tests.plugins.devnet import DevnetProcess, free_port

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parents[1]
# The cycle the SDK is configured with (``ackMessageIntervalMs``): it must equal the canister's.
SEND_ACK_INTERVAL_MS: Final = 2000
KEEP_ALIVE_TIMEOUT_MS: Final = 1500
_START_TIMEOUT_S: Final = 30.0


class QuickAckTestCanister(PingPongCanister):
    """The ``test`` canister acking every 2 s and dropping clients whose keep-alive is 1.5 s late."""

    __test__ = False

    def ws_params(self) -> WsInitParams:
        return WsInitParams(
            WsHandlers(self.on_open, self.on_message, self.on_close),
            send_ack_interval_ms=SEND_ACK_INTERVAL_MS,
            keep_alive_timeout_ms=KEEP_ALIVE_TIMEOUT_MS,
        )


def _gateway_command(ic_url: str, data_dir: Path, address: str) -> list[str]:
    script = shutil.which("icws-gateway", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "icws_fast.gateway"]
    return [
        *command,
        "--gateway-address",
        address,
        "--prometheus-endpoint",
        "127.0.0.1:0",
        "--ic-network-url",
        ic_url,
        "--polling-interval",
        "20",
        "--data-dir",
        str(data_dir),
        "--log-level",
        "warn",
    ]


@contextlib.contextmanager
def gateway_process(ic_url: str, data_dir: Path, address: str = "127.0.0.1:0") -> Iterator[str]:
    """``icws-gateway`` on ``address`` in front of ``ic_url``; yields its ``ws://`` URL, drains it (SIGTERM) on exit."""
    proc = subprocess.Popen(
        _gateway_command(ic_url, data_dir, address), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        url = None
        # The start-up line is ``listening on ws://HOST:PORT (metrics on ...)``; the port was chosen by the OS.
        for line in proc.stdout:
            output.append(line)
            if line.startswith("listening on "):
                url = line.split()[2]
                break
        if url is None:
            raise RuntimeError(f"icws-gateway exited with {proc.wait()} before listening:\n{''.join(output)}")
        # Keep reading so the gateway never blocks on a full pipe (its warnings stay available for debugging).
        threading.Thread(target=output.extend, args=(proc.stdout,), daemon=True).start()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_stack(state_dir: Path, *, subnet_delegation: bool = False) -> Iterator[dict[str, Any]]:
    """Devnet + gateway; yields ``{"ic_url", "root_key", "canisters", "gateway_url", "ack_interval_ms"}``.

    ``canisters`` maps ``test``, ``chat`` and ``quick`` to their ids; ``ack_interval_ms`` is ``quick``'s cycle.
    ``subnet_delegation`` makes the devnet certify through a subnet delegation, as mainnet application subnets do.
    """
    devnet = DevnetProcess(
        address=f"127.0.0.1:{free_port()}",
        state_dir=state_dir / "devnet",
        extra_args=[
            "--canister",
            "test=icws_fast.devnet.canisters.pingpong:PingPongCanister",
            "--canister",
            "chat=icws_fast.devnet.canisters.chat:ChatCanister",
            "--canister",
            f"quick={__name__}:QuickAckTestCanister",
            *(["--subnet-delegation"] if subnet_delegation else []),
        ],
        # The devnet imports this module to find QuickAckTestCanister.
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
    )
    devnet.start()
    try:
        with gateway_process(devnet.url, state_dir / "gateway") as gateway_url:
            yield {
                "ic_url": devnet.url,
                "root_key": devnet.info["root_key"],
                "canisters": devnet.info["canisters"],
                "gateway_url": gateway_url,
                "ack_interval_ms": SEND_ACK_INTERVAL_MS,
            }
    finally:
        devnet.stop()
