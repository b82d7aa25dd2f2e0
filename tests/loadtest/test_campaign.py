"""The Locust campaign (``loadtest/locustfile.py``) run headless as a user runs it, against a devnet and a gateway.

Each scenario runs a few seconds on its own and must pass its thresholds with samples of what it measures;
an impossible threshold must fail the run and name the metric; ``--processes 2`` and a master with two
workers (separate processes on loopback) must aggregate every worker's samples in the master's CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.fake_gateway import FakeGateway
from tests.client.icws_sim import CANISTER_ID
from tests.processes import REPO, Child, DevnetProcess, GatewayProcess, console_script, free_port

pytestmark = pytest.mark.slow

LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
RUN_S = 3
# Room for Locust's start-up (gevent, imports) and its stop on top of the run time.
EXIT_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A devnet and a gateway for the whole module; the campaign's environment variables pointing at them."""
    root = tmp_path_factory.mktemp("loadtest")
    with DevnetProcess(state_dir=root / "devnet") as devnet, GatewayProcess(devnet.url, root / "gateway") as gateway:
        yield {
            "ICWS_GATEWAY_URL": gateway.url,
            "ICWS_IC_URL": devnet.url,
            "ICWS_RECV_TIMEOUT_S": "10",
            "ICWS_IDLE_CHECK_S": "1",
            "ICWS_FIREHOSE_INTERVAL_MS": "100",
        }


def locust(env: dict[str, str], *args: str, name: str = "locust") -> Child:
    """``locust -f loadtest/locustfile.py --headless ARGS`` in a child process."""
    command = [*console_script("locust", "locust"), "-f", str(LOCUSTFILE), "--headless", "--only-summary", *args]
    return Child(name, command, env=env, cwd=REPO)


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run a campaign to its end: its exit status and its output."""
    with locust(env, *args) as child:
        return child.wait(EXIT_TIMEOUT_S), child.output


def stats(csv_prefix: Path) -> dict[str, dict[str, str]]:
    """The rows of a ``--csv`` stats file by ``TYPE/NAME``."""
    with open(f"{csv_prefix}_stats.csv", newline="") as file:
        return {f"{row['Type']}/{row['Name']}": row for row in csv.DictReader(file)}


def count(rows: dict[str, dict[str, str]], metric: str) -> int:
    return int(rows[metric]["Request Count"]) if metric in rows else 0


# What each scenario must have measured: one metric an operation of it produces, one a message produces.
SCENARIOS = {
    "EchoUser": ["icws/open", "icws/echo", "latency/test"],
    "ChurnUser": ["icws/open", "icws/echo", "icws/close"],
    "IdleUser": ["icws/open", "icws/idle"],
    "ChatUser": ["icws/open", "icws/chat", "latency/chat"],
    "FirehoseUser": ["icws/open", "latency/firehose"],
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_its_thresholds(stack: dict[str, str], tmp_path: Path, scenario: str) -> None:
    status, output = run(
        stack, scenario, "-u", "2", "-r", "2", "-t", f"{RUN_S}s", "--csv", str(tmp_path / "run"),
        "--max-p99", "icws/*=10000,latency/*=10000",
    )  # fmt: skip
    assert status == 0, output
    assert "\nPASS\n" in output + "\n", output
    rows = stats(tmp_path / "run")
    for metric in SCENARIOS[scenario]:
        assert count(rows, metric) > 0, f"{scenario} produced no {metric} sample:\n{output}"
    assert rows["/Aggregated"]["Failure Count"] == "0", output
    assert not any(metric.startswith("violation/") for metric in rows), output


def test_tags_pick_the_scenarios(stack: dict[str, str], tmp_path: Path) -> None:
    status, output = run(
        stack, "--tags", "stream", "-u", "2", "-r", "2", "-t", f"{RUN_S}s", "--csv", str(tmp_path / "run")
    )
    assert status == 0, output
    rows = stats(tmp_path / "run")
    assert count(rows, "latency/chat") > 0 and count(rows, "latency/firehose") > 0, output
    # The echo canister's scenarios have no "stream" task: none of them ran.
    assert count(rows, "latency/test") == 0 and count(rows, "icws/echo") == 0, output


def test_an_impossible_threshold_fails_the_run_and_names_the_metric(stack: dict[str, str]) -> None:
    status, output = run(stack, "EchoUser", "-u", "1", "-r", "1", "-t", f"{RUN_S}s", "--max-p99", "icws/open=0.001")
    assert status == 1, output
    assert "FAIL: icws/open p99 " in output and "> 0.001 ms" in output, output


def test_a_malformed_threshold_stops_before_the_run(stack: dict[str, str]) -> None:
    status, output = run(stack, "EchoUser", "-u", "1", "-t", "30s", "--max-p99", "icws/open<100")
    assert status != 0
    assert "'icws/open<100' is not TYPE/NAME=MILLISECONDS" in output, output
    assert "campaign summary" not in output


@pytest.mark.parametrize(
    ("mode", "violation"),
    [("gap", "sequence gap"), ("bad_cert", "verification failure"), ("drop", "connection lost")],
)
def test_a_violation_is_counted_and_fails_the_run(tmp_path: Path, mode: str, violation: str) -> None:
    # A fake gateway misbehaves right after each connection's greeting: the idle user sees it at once.
    with FakeGateway(mode) as gateway:
        env = {
            "ICWS_GATEWAY_URL": gateway.url,
            "ICWS_IC_URL": gateway.ic_url,
            "ICWS_CANISTER_ID": str(CANISTER_ID),
            "ICWS_IDLE_CHECK_S": "0.5",
        }
        status, output = run(env, "IdleUser", "-u", "1", "-r", "1", "-t", f"{RUN_S}s", "--csv", str(tmp_path / "run"))
    assert status == 1, output
    rows = stats(tmp_path / "run")
    assert int(rows[f"violation/{violation}"]["Failure Count"]) >= 1, output
    assert "FAIL: error rate " in output, output


def test_processes_aggregate_every_worker(stack: dict[str, str], tmp_path: Path) -> None:
    users = 4
    status, output = run(
        stack, "EchoUser", "-u", str(users), "-r", str(users), "-t", f"{RUN_S}s", "--processes", "2",
        "--csv", str(tmp_path / "run"), "--html", str(tmp_path / "report.html"),
    )  # fmt: skip
    assert status == 0, output
    rows = stats(tmp_path / "run")
    # Each user opens once: fewer opens than users would mean a worker's samples are missing.
    assert count(rows, "icws/open") >= users, output
    assert count(rows, "icws/echo") >= users, output
    html = (tmp_path / "report.html").read_text()
    assert "latency" in html and "echo" in html


def test_master_and_workers_on_loopback(stack: dict[str, str], tmp_path: Path) -> None:
    users, port = 4, free_port()
    master = locust(
        stack, "EchoUser", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        "--expect-workers", "2", "-u", str(users), "-r", str(users), "-t", f"{RUN_S}s",
        "--csv", str(tmp_path / "run"), name="locust master",
    )  # fmt: skip
    with master:
        workers = [
            locust(
                stack, "EchoUser", "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), name=f"w{n}"
            )
            for n in range(2)
        ]
        try:
            status = master.wait(EXIT_TIMEOUT_S)
            assert [worker.wait(EXIT_TIMEOUT_S) for worker in workers] == [0, 0]
        finally:
            for worker in workers:
                worker.stop()
    assert status == 0, master.output
    assert "\nPASS" in master.output, master.output
    rows = stats(tmp_path / "run")
    assert count(rows, "icws/open") >= users, master.output
