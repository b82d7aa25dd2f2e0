"""The official JS client SDK, ic-websocket-js 0.5.x on @dfinity/agent 2.x (Node), against our gateway and devnet.

Each test runs one check of ``check_ic_websocket.mjs`` against one shared ``icws-devnet`` + ``icws-gateway`` pair
(see ``ws_stack.py``): open / send / receive with secp256k1 and Ed25519 identities, 50 clients at once, the
ack / keep-alive cycle, close from the client and from the canister, reconnect, the chat broadcast. The SDK
verifies every certificate itself, so a passing check means the official client accepts what our gateway relays
and our devnet certifies; the negative control shows it refuses them under another replica's root key.

The Node dependencies are pinned in ``package-lock.json`` (``make test`` runs ``npm ci`` first; the ``node``
fixture does it when ``node_modules`` is missing). Skipped only when ``node`` is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.ws_stack import HERE, running_gateway, running_stack
from tests.processes import Child, DevnetProcess, free_port

pytestmark = [pytest.mark.interop, pytest.mark.slow]
# The SDK logs every message at "info".
NODE_ENV = {"LOG_LEVEL": "warn"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_stack(tmp_path_factory.mktemp("ws-stack")) as info:
        yield info


def run_check(node: str, name: str, info: dict[str, Any], timeout: float = 180) -> None:
    """Run one named check; its output is the assertion message."""
    result = subprocess.run(
        [node, str(HERE / "check_ic_websocket.mjs"), name, json.dumps(info)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,  # asserted below, with the output
        env={**os.environ, **NODE_ENV},
    )
    assert result.returncode == 0 and f"ok {name}" in result.stdout.splitlines(), result.stdout + result.stderr


@pytest.mark.parametrize(
    "check",
    [
        "open-send-receive",
        "fifty-clients",
        "ack-keep-alive",
        "close-from-client",
        "close-from-canister-and-reconnect",
        "chat-broadcast",
    ],
)
def test_ic_websocket_js(node: str, stack: dict[str, Any], check: str) -> None:
    run_check(node, check, stack)


def test_ic_websocket_js_through_a_subnet_delegation(node: str, tmp_path: Path) -> None:
    """Certificates signed by a subnet key delegated from the root key (the mainnet layout) pass the SDK too."""
    with running_stack(tmp_path, subnet_delegation=True) as info:
        run_check(node, "open-send-receive", info)


def test_ic_websocket_js_reconnects_after_a_gateway_restart(node: str, stack: dict[str, Any], tmp_path: Path) -> None:
    """A gateway of its own on a fixed port, drained (SIGTERM) under a connected client, then started again."""
    address = f"127.0.0.1:{free_port()}"
    with running_gateway(stack["ic_url"], tmp_path, address) as gateway_url:
        config = json.dumps({**stack, "gateway_url": gateway_url})
        command = [node, str(HERE / "check_ic_websocket.mjs"), "gateway-restart", config]
        check = Child("check_ic_websocket.mjs gateway-restart", command, cwd=HERE, env=NODE_ENV, stdin=True)
        try:
            check.wait_for_line("connected", timeout=120)
        except BaseException:
            check.stop()
            raise
    # Leaving the block drained the gateway, which closes its clients; then a new gateway starts on the same port.
    with check:
        check.wait_for_line("closed ", timeout=120)
        with running_gateway(stack["ic_url"], tmp_path, address):
            check.send_line("restarted", last=True)
            assert check.wait(120) == 0 and "ok gateway-restart" in check.output.splitlines(), check.output


def test_ic_websocket_js_refuses_a_foreign_root_key(
    node: str, stack: dict[str, Any], devnet_process: DevnetProcess
) -> None:
    """The negative control: certificates of our devnet checked against another devnet's root key fail."""
    assert devnet_process.info["root_key"] != stack["root_key"]
    run_check(node, "foreign-root-key-refused", {**stack, "other_ic_url": devnet_process.url})
