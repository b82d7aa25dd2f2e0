"""Starting gateways for the tests: in-process, real sockets on free loopback ports."""

from __future__ import annotations

from icws_fast.gateway.config import GatewayConfig
from icws_fast.gateway.server import Gateway
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity


async def start_gateway(ic_url: str, *, agent_root_key: bytes | None = None, **overrides: object) -> Gateway:
    """A gateway on a free loopback port, metrics on another; the caller drains it.

    ``agent_root_key`` spares the agent fetching the root key (for gateways whose replica is unreachable).
    """
    settings: dict[str, object] = {
        "ic_url": ic_url,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "polling_interval_s": 0.02,
        "close_timeout_s": 0.5,
        "drain_timeout_s": 5.0,
    }
    settings.update(overrides)
    config = GatewayConfig(**settings)  # type: ignore[arg-type]
    identity = Ed25519Identity.generate()
    gateway = Gateway(config, identity, Agent(ic_url, identity, root_key=agent_root_key))
    await gateway.start()
    return gateway


# Where nothing listens (the discard port), and a root key nothing is ever certified against.
OFFLINE_IC_URL = "http://127.0.0.1:9"
OFFLINE_ROOT_KEY = b"\x00" * 133


async def start_offline_gateway(**overrides: object) -> Gateway:
    """A gateway whose replica is unreachable: enough for everything before a ws_open reaches the IC."""
    return await start_gateway(OFFLINE_IC_URL, agent_root_key=OFFLINE_ROOT_KEY, verify_certificates=False, **overrides)
