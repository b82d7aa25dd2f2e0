"""``--read-buffer-size`` and ``--listen-backlog``: checked, shown by ``--help``, and given to the server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from icws_fast.cliconfig import config_from_argv
from icws_fast.errors import ConfigError
from icws_fast.gateway.cli import build_parser, main
from icws_fast.gateway.config import LISTEN_BACKLOG, READ_BUFFER_SIZE, GatewayConfig
from icws_fast.protocol import session as s
from tests.gateway.gw_harness import start_offline_gateway
from tests.gateway.gw_rawclient import RawClient


def test_the_flags_reach_the_config() -> None:
    argv = ["--read-buffer-size", "8192", "--listen-backlog", "512"]
    config = config_from_argv(GatewayConfig, build_parser(), argv, environ={})
    assert (config.read_buffer_size, config.listen_backlog) == (8192, 512)


def test_the_defaults_are_sized_for_many_idle_sessions() -> None:
    config = GatewayConfig()
    assert (config.read_buffer_size, config.listen_backlog) == (READ_BUFFER_SIZE, LISTEN_BACKLOG) == (2048, 4096)


def test_help_shows_the_flags_with_their_defaults() -> None:
    help_text = " ".join(build_parser().format_help().split())
    assert (
        "--read-buffer-size BYTES initial read buffer of each connection, in bytes (grows for larger frames)"
        " (default: 2048)" in help_text
    )
    assert (
        "--listen-backlog N connections the kernel queues for the gateway to accept (capped by net.core.somaxconn)"
        " (default: 4096)" in help_text
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--read-buffer-size", "1024"], "--read-buffer-size 1024: the read buffer must be at least 2048, got 1024"),
        (["--read-buffer-size", "2k"], "--read-buffer-size 2k: expected a whole number, got '2k'"),
        (["--listen-backlog", "0"], "--listen-backlog 0: the backlog must be positive, got 0"),
        (["--listen-backlog", "-5"], "--listen-backlog -5: the backlog must be positive, got -5"),
    ],
)
def test_bad_values_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_code_building_a_config_gets_the_same_checks() -> None:
    with pytest.raises(ConfigError, match="read_buffer_size"):
        GatewayConfig(read_buffer_size=100)
    with pytest.raises(ConfigError, match="listen_backlog"):
        GatewayConfig(listen_backlog=0)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read a listening socket's backlog")
async def test_the_listening_socket_has_the_backlog() -> None:
    gateway = await start_offline_gateway(listen_backlog=321)
    try:
        command = ["ss", "-ltnH", f"sport = :{gateway.port}"]
        ss = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=True)
        listing = ss.stdout.split()
        # State, Recv-Q (connections waiting), Send-Q (the backlog), local address...
        assert listing[0] == "LISTEN" and listing[2] == "321", listing
    finally:
        await gateway.drain()


async def test_frames_larger_than_the_read_buffer_arrive_whole() -> None:
    """The buffer grows for a frame that does not fit: a 64 KB frame is read as one frame, then judged."""
    gateway = await start_offline_gateway(read_buffer_size=2048)
    try:
        client = await RawClient.connect(f"ws://127.0.0.1:{gateway.port}")
        await client.handshake()
        client.send(b"\xa1\x68envelope" + b"\x58\x00" * 32_000)  # a ClientRequest whose envelope is no envelope
        closed = await client.wait_closed()
        assert closed.code == s.CLOSE_POLICY_VIOLATION and "invalid ws_open" in closed.reason
    finally:
        await gateway.drain()
