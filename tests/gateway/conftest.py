"""Fixtures of the gateway tests: an in-process gateway (real sockets) whose replica is unreachable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from icws_fast.gateway.server import Gateway
from tests.gateway.gw_harness import start_offline_gateway


@pytest.fixture
async def offline_gateway() -> AsyncIterator[Gateway]:
    """A gateway whose replica is unreachable: enough for everything before a ws_open reaches the IC."""
    gateway = await start_offline_gateway(open_timeout_s=1.0, handshake_timeout_s=0.5)
    yield gateway
    await gateway.drain()
