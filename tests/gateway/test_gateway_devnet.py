"""The gateway end to end: raw clients over real sockets, the gateway, a devnet hosting the demo canisters."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gw_harness import start_gateway
from gw_rawclient import RawClient, open_request

from icws_fast.gateway.server import Gateway
from icws_fast.ic.principal import Principal
from icws_fast.protocol import session as s
from icws_fast.protocol.types import OpenMessage, decode_service_message

pytestmark = pytest.mark.slow


@pytest.fixture
async def devnet() -> AsyncIterator[object]:
    from icws_fast.devnet import Devnet

    async with Devnet(address="127.0.0.1:0", round_ms=10) as dn:
        if "test" not in dn.canister_ids:
            pytest.skip("the demo canisters are not available")
        yield dn


@pytest.fixture
async def gateway(devnet) -> AsyncIterator[Gateway]:
    gw = await start_gateway(devnet.url)
    yield gw
    await gw.drain()


def ws_url(gateway: Gateway, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{gateway.port}"


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    value = gateway.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def open_client(gateway: Gateway, canister_id: Principal, **kw: object) -> RawClient:
    client = await RawClient.connect(ws_url(gateway, "wss" if kw.get("ssl_context") else "ws"), **kw)  # type: ignore[arg-type]
    first = await client.open(canister_id)
    assert first.is_service_message and first.sequence_num == 1
    assert decode_service_message(first.content) == OpenMessage(client.key)
    return client


async def test_open_registers_and_polls(devnet, gateway):
    client = await open_client(gateway, devnet.canister_ids["test"])
    assert metric(gateway, "active_pollers") == 1
    assert metric(gateway, "clients_connected") == 1
    assert metric(gateway, "relayed_envelopes_to_ic_total", canister_id=str(devnet.canister_ids["test"]), outcome="ok")
    client.close()
    await eventually(lambda: metric(gateway, "active_pollers") == 0)
    await eventually(lambda: metric(gateway, "ws_close_calls_total", outcome="ok") == 1)


async def test_many_clients_on_several_canisters_get_their_own_messages(devnet, gateway):
    canisters = [cid for name, cid in devnet.canister_ids.items() if name in ("test", "chat")]
    clients = await asyncio.gather(*(open_client(gateway, canisters[i % len(canisters)]) for i in range(24)))
    assert metric(gateway, "active_pollers") == len(canisters)
    # Keep-alives are relayed in order per client; the canister accepts them only in sequence.
    for _ in range(3):
        for client in clients:
            client.send_keep_alive()
    await asyncio.sleep(0.3)
    for client in clients:
        assert client.listener.closed is None
    for client in clients:
        client.close()
    await eventually(lambda: metric(gateway, "ws_close_calls_total", outcome="ok") == len(clients))
    await eventually(lambda: metric(gateway, "active_pollers") == 0)


async def test_client_that_dies_is_closed_at_the_canister(devnet, gateway):
    client = await open_client(gateway, devnet.canister_ids["test"])
    client.abort()
    await eventually(lambda: metric(gateway, "ws_close_calls_total", outcome="ok") == 1)
    assert metric(gateway, "clients_connected") == 0


async def test_poller_stops_and_restarts_without_replaying(devnet, gateway):
    canister = devnet.canister_ids["test"]
    first = await open_client(gateway, canister)
    first.close()
    await eventually(lambda: metric(gateway, "active_pollers") == 0)
    # A new client gets a fresh OpenMessage (sequence 1) and nothing of the previous client's queue.
    second = await open_client(gateway, canister)
    assert metric(gateway, "active_pollers") == 1
    second.close()


async def test_unknown_canister_is_reported_to_the_client(devnet, gateway):
    client = await RawClient.connect(ws_url(gateway))
    await client.handshake()
    unknown = Principal.from_text("aaaaa-aa")
    client.send(open_request(client.identity, unknown, gateway.principal, 1))
    closed = await client.wait_closed()
    assert closed.code == s.CLOSE_INTERNAL_ERROR and "ws_open failed" in closed.reason
    good = await open_client(gateway, devnet.canister_ids["test"])
    good.close()


async def test_drain_closes_sessions_and_calls_ws_close(devnet):
    gateway = await start_gateway(devnet.url)
    clients = [await open_client(gateway, devnet.canister_ids["test"]) for _ in range(5)]
    await gateway.drain()
    for client in clients:
        closed = await client.wait_closed()
        assert closed.code == s.CLOSE_GOING_AWAY
    assert metric(gateway, "ws_close_calls_total", outcome="ok") == 5
    with pytest.raises(OSError):
        await RawClient.connect(ws_url(gateway))


async def test_ready_turns_unready_on_drain(devnet):
    gateway = await start_gateway(devnet.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gateway.metrics_port}/ready") as resp:
            assert resp.status == 200
        gateway._accepting = False
        async with http.get(f"http://127.0.0.1:{gateway.metrics_port}/ready") as resp:
            assert resp.status == 503
    await gateway.drain()


async def test_devnet_restart_under_load(devnet, gateway):
    clients = [await open_client(gateway, devnet.canister_ids["test"]) for _ in range(4)]
    await devnet.stop()
    await asyncio.sleep(0.3)
    await devnet.start()
    # Sessions survive a replica blip: the poller backs off and resumes with the same nonce.
    newcomer = await open_client(gateway, devnet.canister_ids["test"])
    for client in [*clients, newcomer]:
        assert client.listener.closed is None
        client.close()


def _self_signed(tmp_path) -> tuple[str, str, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    return str(cert_path), str(key_path), client_ctx


async def test_tls(devnet, tmp_path):
    from icws_fast.gateway.cli import _ssl_context

    cert_path, key_path, client_ctx = _self_signed(tmp_path)
    gateway = await start_gateway(devnet.url, ssl_context=_ssl_context(cert_path, key_path))
    try:
        client = await open_client(gateway, devnet.canister_ids["test"], ssl_context=client_ctx)
        assert client.transport.is_secure
        client.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await RawClient.connect(ws_url(gateway, "wss"), ssl_context=ssl.create_default_context())
    finally:
        await gateway.drain()
