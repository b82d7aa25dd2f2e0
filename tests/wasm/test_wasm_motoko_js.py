"""ic-websocket-js (Node) with the official Motoko CDK test canister on the devnet, through two icws-gateways.

The official client SDK and the official canister CDK, with only our gateway and devnet between them:
open, messages both ways, a backlog in batches of 3, a second gateway, close from either side
(``check_motoko_js.mjs``; the SDK verifies every certificate itself).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import node  # noqa: F401 - the fixture: Node with tests/interop's packages
from tests.wasm.motoko_stack import MotokoStack, motoko_stack

pytestmark = [pytest.mark.interop, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotokoStack]:
    with motoko_stack(tmp_path_factory.mktemp("motoko-js")) as running:
        yield running


def test_ic_websocket_js_with_the_motoko_cdk_canister(node: str, stack: MotokoStack) -> None:  # noqa: F811
    config = {"ic_url": stack.devnet.url, "canister_id": str(stack.canister_id), "gateway_urls": stack.gateways}
    result = subprocess.run(
        [node, str(HERE / "check_motoko_js.mjs"), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,  # asserted below, with the output
        env={**os.environ, "LOG_LEVEL": "warn"},
    )
    assert result.returncode == 0 and "ok" in result.stdout.splitlines(), result.stdout + result.stderr
