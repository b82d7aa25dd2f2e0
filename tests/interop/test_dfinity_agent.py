"""Independent check: @dfinity/agent 2.x (Node) drives the devnet.

``check_devnet.mjs`` runs fetchRootKey, an update call on the v3 (synchronous) and on the v2 (+ read_state
polling) path, a query with agent-js's node signature verification, a read_state whose certificate agent-js
verifies, calls and a query through a delegation identity, and calls and a query whose signature is
corrupted (the devnet must refuse them with HTTP 4xx). agent-js was written by others: if it accepts the
devnet, the devnet speaks the IC interface. Both certification layouts are covered: certificates signed by
the root key, and certificates through a subnet delegation.

The Node dependencies are pinned in ``package-lock.json``; ``make test`` runs ``npm ci`` first, and this
test does it when ``node_modules`` is missing. Skipped only when ``node`` is not installed.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.interop.echo_canister import echo_devnet
from tests.interop.ws_stack import HERE

CHECKS = 7

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("subnet_delegation", [False, True], ids=["root-signed", "subnet-delegation"])
def test_dfinity_agent_accepts_the_devnet(node: str, subnet_delegation: bool) -> None:
    with echo_devnet(subnet_delegation=subnet_delegation) as devnet:
        result = subprocess.run(
            [node, str(HERE / "check_devnet.mjs"), json.dumps(devnet.info)],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,  # the exit code is asserted below, with the report
        )
    report = result.stdout + result.stderr
    outcomes = [line for line in result.stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    assert result.returncode == 0, report
    assert len(outcomes) == CHECKS and all(line.startswith("ok ") for line in outcomes), report
