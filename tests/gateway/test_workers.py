"""``icws-gateway --workers N`` for real: a supervisor, its worker processes on one port, and the devnet.

Sessions are IC WebSocket sessions of the client SDK (every certificate checked) with the devnet's test
canister; the handshake tells each client which worker (gateway principal) it got.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from icws_fast.cliconfig import config_from_argv
from icws_fast.client import IcWebSocket
from icws_fast.errors import ConnectionClosed
from icws_fast.gateway.cli import build_parser, main
from icws_fast.gateway.config import GatewayConfig
from icws_fast.gateway.identity import key_file, load_or_create_identity
from icws_fast.gateway.supervisor import merge_metrics
from tests.processes import DevnetProcess, GatewayProcess

# Sessions per test: enough that the kernel gives both workers some (all on one: 2 / 2**16).
SESSIONS = 16


# -- without processes -------------------------------------------------------------------------------


def test_auto_is_the_cpus_this_process_may_use_and_0_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    def config(argv: list[str]) -> GatewayConfig:
        return config_from_argv(GatewayConfig, build_parser(), argv, environ={})

    assert config(["--workers", "auto"]).workers == len(os.sched_getaffinity(0))
    assert config([]).workers == 1 and GatewayConfig().workers == 1
    with pytest.raises(SystemExit) as exited:
        main(["--workers", "0"])
    assert exited.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_merged_metrics_label_each_sample_with_its_worker() -> None:
    one = "# HELP clients_connected open\n# TYPE clients_connected gauge\nclients_connected 3.0\n"
    two = (
        "# HELP clients_connected open\n# TYPE clients_connected gauge\nclients_connected 4.0\n"
        '# HELP errors_total Errors\n# TYPE errors_total counter\nerrors_total{kind="canister"} 1.0\n'
    )
    families = {f.name: f for f in merge_metrics([("0", one), ("1", two), ("2", "not { metrics")])}
    assert [(s.labels, s.value) for s in families["clients_connected"].samples] == [
        ({"worker": "0"}, 3.0),
        ({"worker": "1"}, 4.0),
    ]
    assert [(s.name, s.labels) for s in families["errors"].samples] == [
        ("errors_total", {"kind": "canister", "worker": "1"})
    ]


# -- with processes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def devnet_process() -> Iterator[DevnetProcess]:
    with DevnetProcess() as devnet:
        yield devnet


@pytest.fixture
async def workers(devnet_process: DevnetProcess, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    gateway = GatewayProcess(devnet_process.url, tmp_path / "data", workers=2, extra_args=["--drain-timeout", "3"])
    async with gateway:
        yield gateway


async def _session(gateway: GatewayProcess, devnet: DevnetProcess) -> IcWebSocket:
    ws = await IcWebSocket.connect(
        gateway.url, devnet.canister_ids["test"], devnet.url, root_key_der=devnet.root_key_der
    )
    assert (await asyncio.wait_for(ws.recv(), 20))["text"] == "ping"
    return ws


async def _echo(ws: IcWebSocket, text: str) -> None:
    await ws.send({"text": text, "timestamp": 0})
    assert (await asyncio.wait_for(ws.recv(), 20))["text"] == f"{text} ping"


async def _get(gateway: GatewayProcess, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.metrics_url}{path}") as response:
        return response.status, await response.text()


def _principal(ws: IcWebSocket) -> str:
    return str(ws.gateway_principal)


@pytest.mark.slow
async def test_every_worker_takes_sessions_with_its_own_principal(
    workers: GatewayProcess, devnet_process: DevnetProcess
) -> None:
    data = workers.data_dir
    assert workers.principals == [str(load_or_create_identity(key_file(data, i)).sender) for i in range(2)]
    assert (data / "key_pair").exists() and (data / "key_pair_1").exists()
    assert len(set(workers.principals)) == 2
    sessions = await asyncio.gather(*(_session(workers, devnet_process) for _ in range(SESSIONS)))
    await asyncio.gather(*(_echo(ws, f"hello {n}") for n, ws in enumerate(sessions)))
    per_principal = collections.Counter(_principal(ws) for ws in sessions)
    assert set(per_principal) == set(workers.principals), "the kernel gave every session to one worker"

    # One /metrics for the whole: each worker's sessions under its own label, adding up to the sessions open.
    connected = await workers.by_worker("clients_connected")
    assert connected == {str(i): float(per_principal[p]) for i, p in enumerate(workers.principals)}
    opened = await workers.by_worker("client_connected_count_total")
    assert sum(opened.values()) == SESSIONS
    assert set(await workers.by_worker("process_resident_memory_bytes")) == {"0", "1", "supervisor"}
    assert await workers.by_worker("worker_restarts_total") == {"0": 0.0, "1": 0.0}
    assert await _get(workers, "/health") == (200, "ok\n")
    assert await _get(workers, "/ready") == (200, "ready\n")
    await asyncio.gather(*(ws.close() for ws in sessions))


@pytest.mark.slow
async def test_a_killed_worker_comes_back_with_its_identity_and_the_others_keep_their_sessions(
    workers: GatewayProcess, devnet_process: DevnetProcess
) -> None:
    principals, pids = list(workers.principals), list(workers.worker_pids)
    key = (workers.data_dir / "key_pair_1").read_bytes()
    sessions = await asyncio.gather(*(_session(workers, devnet_process) for _ in range(SESSIONS)))
    survivors = [ws for ws in sessions if _principal(ws) == principals[0]]
    assert survivors and len(survivors) < SESSIONS

    os.kill(pids[1], signal.SIGKILL)
    assert await asyncio.to_thread(workers.worker_started) == 1
    assert workers.principals == principals and workers.worker_pids[1] != pids[1]
    assert (workers.data_dir / "key_pair_1").read_bytes() == key
    assert f"worker 1 (pid {pids[1]}) exited with signal SIGKILL" in workers.output
    # Worker 0's sessions never noticed.
    await asyncio.gather(*(_echo(ws, f"still here {n}") for n, ws in enumerate(survivors)))
    assert await workers.by_worker("worker_restarts_total") == {"0": 0.0, "1": 1.0}

    # The new worker 1 takes new sessions under the old principal (the supervisor waited for its /health only
    # at the first start: wait for it to listen).
    async def listening() -> None:
        while (await workers.by_worker("gateway_ready")).get("1") != 1.0:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.05)

    await asyncio.wait_for(listening(), 30)
    fresh = await asyncio.gather(*(_session(workers, devnet_process) for _ in range(SESSIONS)))
    assert principals[1] in {_principal(ws) for ws in fresh}
    await asyncio.gather(*(ws.close() for ws in [*survivors, *fresh]))


@pytest.mark.slow
async def test_sigterm_drains_every_worker_and_exits_0(workers: GatewayProcess, devnet_process: DevnetProcess) -> None:
    sessions = await asyncio.gather(*(_session(workers, devnet_process) for _ in range(SESSIONS)))
    assert workers.child is not None
    child = workers.child
    child_pids = list(workers.worker_pids)
    # Worker 0 held up (its SIGTERM waits), so that the supervisor is seen draining: /ready says no at once.
    os.kill(child_pids[0], signal.SIGSTOP)
    try:
        os.kill(child.pid, signal.SIGTERM)

        async def draining() -> None:
            while (await _get(workers, "/ready"))[0] != 503:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.02)

        await asyncio.wait_for(draining(), 10)
    finally:
        os.kill(child_pids[0], signal.SIGCONT)
    # The drain bound (--drain-timeout 3) plus the supervisor's margin; a hung drain fails here.
    assert await child.wait_async(3 + 5 + 2) == 0
    for ws in sessions:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.code == 1001
    for pid in child_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
async def test_health_and_ready_hold_while_one_worker_answers(workers: GatewayProcess) -> None:
    first, second = workers.worker_pids
    try:
        os.kill(first, signal.SIGSTOP)  # stuck: its socket no longer answers
        assert await _get(workers, "/health") == (200, "ok\n")
        assert await _get(workers, "/ready") == (200, "ready\n")
        assert set(await workers.by_worker("clients_connected")) == {"1"}
        os.kill(second, signal.SIGSTOP)
        assert await _get(workers, "/health") == (503, "no worker is healthy\n")
        assert await _get(workers, "/ready") == (503, "not ready\n")
    finally:
        os.kill(first, signal.SIGCONT)
        os.kill(second, signal.SIGCONT)
    assert await _get(workers, "/ready") == (200, "ready\n")


@pytest.mark.slow
def test_a_port_taken_by_another_program_fails_the_start(devnet_process: DevnetProcess, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        gateway = GatewayProcess(devnet_process.url, tmp_path / "data", address=f"127.0.0.1:{port}", workers=2)
        child = gateway.spawn()
        assert child.wait(30) == 1
    assert "icws-gateway: error: cannot listen:" in child.output and "Address already in use" in child.output
    assert "worker 0 started" not in child.output


@pytest.mark.slow
def test_a_worker_that_cannot_start_fails_the_command(tmp_path: Path) -> None:
    gateway = GatewayProcess("http://127.0.0.1:9", tmp_path / "data", workers=2)
    child = gateway.spawn()
    assert child.wait(30) == 1
    assert "icws-gateway worker 0: error: the gateway failed to start" in child.output or (
        "icws-gateway worker 1: error: the gateway failed to start" in child.output
    )
    assert "exited with status 1 while starting (its error is above)" in child.output
    assert "Traceback" not in child.output
