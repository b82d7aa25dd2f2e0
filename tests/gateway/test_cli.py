"""The ``icws-gateway`` command: flags, identity kept across restarts, logs, signals; EnvFilter parsing."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
from gw_rawclient import RawClient

from icws_fast.gateway.cli import build_parser
from icws_fast.gateway.identity import load_or_create_identity
from icws_fast.gateway.logs import EnvFilter
from icws_fast.ic.identity import Ed25519Identity


def test_defaults_match_the_rust_gateway():
    args = build_parser().parse_args([])
    assert args.gateway_address == ("0.0.0.0", 8080)
    assert args.ic_network_url == "http://127.0.0.1:4943"
    assert args.polling_interval == 100
    assert args.prometheus_endpoint == ("0.0.0.0", 9000)
    assert args.tls_certificate_pem_path is None and args.opentelemetry_collector_endpoint is None


def test_allow_list_flag():
    args = build_parser().parse_args(["--allowed-canister-id", "aaaaa-aa", "--allowed-canister-id", "2vxsx-fae"])
    assert [str(p) for p in args.allowed_canister_id] == ["aaaaa-aa", "2vxsx-fae"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--gateway-address", "nope"],
        ["--polling-interval", "0"],
        ["--log-format", "xml"],
        ["--allowed-canister-id", "not-a-principal"],
    ],
)
def test_bad_flags_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2


def test_identity_is_created_once_and_kept(tmp_path):
    path = tmp_path / "data" / "key_pair"
    first = load_or_create_identity(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_identity(path).sender == first.sender
    path.write_bytes(b"not a key")
    with pytest.raises(ValueError):
        load_or_create_identity(path)


def test_identity_reads_the_rust_gateway_key_pair_format(tmp_path):
    # ring's generate_pkcs8 (what the Rust gateway stores) is version-2 PKCS#8, with the public key.
    rust_identity = Ed25519Identity.from_seed(bytes(range(32)))
    der = rust_identity.to_der()
    assert der[:5] == bytes.fromhex("3051020101")  # SEQUENCE, INTEGER 1 (= PKCS#8 version 2)
    path = tmp_path / "data" / "key_pair"
    path.parent.mkdir()
    path.write_bytes(der)
    assert load_or_create_identity(path).sender == rust_identity.sender
    path.write_text(rust_identity.to_pem())
    assert load_or_create_identity(path).sender == rust_identity.sender


def test_env_filter():
    f = EnvFilter("warn,icws_fast::gateway=debug,ic_websocket_gateway::poller=error,picows=off")
    assert f.level_for("icws_fast.gateway.server") == logging.DEBUG
    assert f.level_for("icws_fast.gateway.poller") == logging.ERROR
    assert f.level_for("icws_fast.gatewayx") == logging.WARNING
    assert f.level_for("picows.server") > logging.CRITICAL
    assert f.level_for("aiohttp") == logging.WARNING
    assert f.lowest == logging.DEBUG
    assert EnvFilter("trace").level_for("x") == logging.DEBUG
    with pytest.raises(ValueError):
        EnvFilter("loud")


async def _read_line(stream: asyncio.StreamReader, prefix: str) -> str:
    while True:
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        if not line:
            raise AssertionError(f"gateway exited before printing {prefix!r}")
        if line.startswith(prefix):
            return line.strip()


async def _start(tmp_path: Path, ic_url: str) -> tuple[asyncio.subprocess.Process, str, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "icws_fast.gateway",
        "--gateway-address",
        "127.0.0.1:0",
        "--prometheus-endpoint",
        "127.0.0.1:0",
        "--ic-network-url",
        ic_url,
        "--log-format",
        "json",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "RUST_LOG_STDOUT": "warn", "RUST_LOG_FILE": "info"},
    )
    assert proc.stdout is not None
    principal = (await _read_line(proc.stdout, "gateway principal:")).split(":", 1)[1].strip()
    listening = await _read_line(proc.stdout, "listening on ")
    port = int(listening.split()[2].rsplit(":", 1)[1])
    return proc, principal, port


@pytest.mark.slow
async def test_cli_keeps_its_principal_and_exits_0_on_sigterm(tmp_path):
    from icws_fast.devnet import Devnet

    async with Devnet(address="127.0.0.1:0") as devnet:
        proc, principal, port = await _start(tmp_path, devnet.url)
        try:
            client = await RawClient.connect(f"ws://127.0.0.1:{port}")
            assert str(await client.handshake()) == principal
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert (tmp_path / "data" / "key_pair").exists()
        logs = list((tmp_path / "data" / "traces").glob("gateway_*.log"))
        assert logs and '"level": "INFO"' in logs[0].read_text()

        proc, again, _ = await _start(tmp_path, devnet.url)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert again == principal


@pytest.mark.slow
async def test_cli_fails_to_start_without_a_replica(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "icws_fast.gateway",
        "--gateway-address",
        "127.0.0.1:0",
        "--prometheus-endpoint",
        "127.0.0.1:0",
        "--ic-network-url",
        "http://127.0.0.1:9",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(proc.wait(), 60) == 1


def test_tracing_is_optional():
    """Without the flag spans cost nothing (the missing-extra exit is tested in test_tracing.py)."""
    from icws_fast.gateway import tracing

    with tracing.span("noop", canister_id="aaaaa-aa"):
        pass
