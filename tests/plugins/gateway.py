"""The ``gateway`` fixture: an in-process gateway (real sockets on loopback) in front of the ``devnet`` fixture.

Registered for every test by ``tests/conftest.py``; the devnet's canisters and options are those of the
``devnet_canisters`` and ``devnet_options`` fixtures (see ``tests/plugins/devnet.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from icws_fast.devnet import Devnet
from icws_fast.gateway.server import Gateway
from tests.gateway.gw_harness import start_gateway


@pytest_asyncio.fixture
async def gateway(devnet: Devnet) -> AsyncIterator[Gateway]:
    """A gateway on a free loopback port in front of ``devnet``, drained after the test."""
    gw = await start_gateway(devnet.url)
    yield gw
    await gw.drain()
