"""``make run`` (``icws_fast.devnet.run_all``) with real processes: it fails loudly and says why, or prints its
banner only once every component answers, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from icws_fast.devnet.run_all import READY_BANNER, state_dir
from tests.processes import REPO, Child, free_port

RUN_ALL = [sys.executable, "-m", "icws_fast.devnet.run_all"]
VARIABLES = {
    "--devnet-address": "DEVNET_ADDRESS",
    "--gateway-address": "GATEWAY_ADDRESS",
    "--metrics-address": "METRICS_ADDRESS",
    "--chat-page-address": "CHAT_PAGE_ADDRESS",
}


@pytest.fixture
def addresses() -> dict[str, str]:
    """Free loopback addresses for every listener (no chat page unless a test asks for one)."""
    return {flag: f"127.0.0.1:{free_port()}" for flag in VARIABLES} | {"--chat-page-address": "off"}


def _argv(addresses: dict[str, str], data_dir: Path) -> list[str]:
    return [*RUN_ALL, *(arg for item in addresses.items() for arg in item), "--data-dir", str(data_dir)]


def _run_all(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A socket listening on a loopback port: another program holding the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@pytest.mark.parametrize("flag", list(VARIABLES))
def test_a_taken_port_fails_naming_the_port_and_its_variable(
    flag: str, addresses: dict[str, str], listening: socket.socket, tmp_path: Path
) -> None:
    port = listening.getsockname()[1]
    addresses[flag] = f"127.0.0.1:{port}"
    run = _run_all(_argv(addresses, tmp_path / "data"))
    assert run.returncode == 1
    assert f"port {port} is taken" in run.stderr
    assert f"make run {VARIABLES[flag]}=127.0.0.1:{port + 1}" in run.stderr
    assert READY_BANNER not in run.stdout
    # The check runs before anything starts: no state was created.
    assert not (tmp_path / "data").exists()


def test_one_port_given_twice_is_refused(addresses: dict[str, str], tmp_path: Path) -> None:
    addresses["--metrics-address"] = addresses["--gateway-address"]
    run = _run_all(_argv(addresses, tmp_path / "data"))
    assert run.returncode == 1
    assert "the gateway and the gateway's metrics endpoint are both given" in run.stderr
    assert "METRICS_ADDRESS" in run.stderr


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:65536"])
def test_an_address_that_is_not_host_port_is_refused(address: str, addresses: dict[str, str], tmp_path: Path) -> None:
    addresses["--gateway-address"] = address
    run = _run_all(_argv(addresses, tmp_path / "data"))
    assert run.returncode == 1
    assert f"the gateway address {address!r} is not HOST:PORT" in run.stderr
    assert "GATEWAY_ADDRESS" in run.stderr


def test_a_devnet_that_fails_to_start_is_quoted(addresses: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # The devnet's state directory is a file: the devnet process exits with its own error.
    state_dir(data_dir, "devnet", addresses["--devnet-address"]).write_text("not a directory")
    run = _run_all(_argv(addresses, data_dir), timeout=120)
    assert run.returncode == 1
    assert "make run: error: the devnet exited with code" in run.stderr
    assert "  | " in run.stderr  # its last output is quoted
    assert READY_BANNER not in run.stdout


@pytest.mark.slow
def test_a_gateway_that_fails_to_start_is_quoted(addresses: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    gateway_state = state_dir(data_dir, "gateway", addresses["--gateway-address"])
    gateway_state.write_text("not a directory")  # the gateway cannot create its traces/ there
    run = _run_all(_argv(addresses, data_dir), timeout=120)
    assert run.returncode == 1
    assert "make run: error: the gateway exited with code 1 while starting" in run.stderr
    assert f"  | icws-gateway: error: cannot create {gateway_state / 'traces'}" in run.stderr
    assert READY_BANNER not in run.stdout


@pytest.mark.slow
def test_the_banner_comes_once_everything_answers_and_ctrl_c_stops_it(
    addresses: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with Child("make run", _argv(addresses, data_dir)) as run:
        run.wait_for_line(READY_BANNER, timeout=120)
        # Printed after the readiness checks: each component answers now, without any retry.
        with urllib.request.urlopen(f"http://{addresses['--metrics-address']}/ready", timeout=5) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"http://{addresses['--devnet-address']}/api/v2/status", timeout=5) as status:
            assert status.status == 200
        with socket.create_connection(addresses["--gateway-address"].split(":"), timeout=5):
            pass
        assert state_dir(data_dir, "devnet", addresses["--devnet-address"]).is_dir()
        assert state_dir(data_dir, "gateway", addresses["--gateway-address"]).is_dir()
        assert run.stop(signal.SIGINT, timeout=60) == 0
    assert "stopping" in run.output
    for flag in ("--devnet-address", "--gateway-address", "--metrics-address"):
        host, port = addresses[flag].split(":")
        with pytest.raises(ConnectionRefusedError):  # the children exited with it
            socket.create_connection((host, int(port)), timeout=5).close()


def test_state_directories_are_per_address(tmp_path: Path) -> None:
    first = state_dir(tmp_path, "devnet", "127.0.0.1:4943")
    assert first == tmp_path / "devnet-127.0.0.1-4943"
    assert state_dir(tmp_path, "devnet", "127.0.0.1:4944") != first
    assert state_dir(tmp_path, "devnet", "[::1]:4943") == tmp_path / "devnet-1-4943"


def test_clean_removes_the_state_of_the_given_addresses_only(addresses: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    devnet = state_dir(data_dir, "devnet", addresses["--devnet-address"])
    gateway = state_dir(data_dir, "gateway", addresses["--gateway-address"])
    other = state_dir(data_dir, "devnet", "127.0.0.1:1")
    for directory in (devnet, gateway, other):
        directory.mkdir(parents=True)
        (directory / "state").write_text("kept across runs")
    run = _run_all([*_argv(addresses, data_dir), "--clean"])
    assert run.returncode == 0, run.stderr
    assert f"removed {devnet}" in run.stdout
    assert f"removed {gateway}" in run.stdout
    assert not devnet.exists()
    assert not gateway.exists()
    assert other.is_dir()
    again = _run_all([*_argv(addresses, data_dir), "--clean"])
    assert f"nothing to remove: {devnet} does not exist" in again.stdout


def test_make_passes_every_address_through() -> None:
    values = {
        "DEVNET_ADDRESS": "127.0.0.2:1001",
        "GATEWAY_ADDRESS": "127.0.0.2:1002",
        "METRICS_ADDRESS": "127.0.0.2:1003",
        "CHAT_PAGE_ADDRESS": "127.0.0.2:1004",
    }
    variables = [f"{name}={value}" for name, value in values.items()]
    for target, extra in (("run", ""), ("run-clean", " --clean")):
        dry = subprocess.run(
            ["make", "-n", target, *variables], cwd=REPO, check=False, capture_output=True, text=True, timeout=60
        )
        assert dry.returncode == 0, dry.stderr
        command = next(line for line in dry.stdout.splitlines() if "icws_fast.devnet.run_all" in line)
        assert f"-m icws_fast.devnet.run_all{extra} " in command
        for flag, name in VARIABLES.items():
            assert f"{flag} {values[name]}" in command


def test_a_chat_page_that_cannot_be_built_says_what_to_do(addresses: dict[str, str], tmp_path: Path) -> None:
    addresses["--chat-page-address"] = f"127.0.0.1:{free_port()}"
    # No npm on the PATH (the console scripts are found next to the Python running run_all, not on the PATH).
    run = subprocess.run(
        _argv(addresses, tmp_path / "data"),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert run.returncode == 1
    assert "the chat page cannot be built: npm is not installed" in run.stderr
    assert "apt-get install nodejs npm" in run.stderr
    assert "make run CHAT_PAGE_ADDRESS=off" in run.stderr
    assert READY_BANNER not in run.stdout
    assert not (tmp_path / "data").exists()  # nothing was started
