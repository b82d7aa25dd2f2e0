"""The Grafana dashboard and the Prometheus alerts, checked against a real Prometheus scraping a real gateway.

Debian's ``prometheus`` package (``prometheus`` and ``promtool``; ``.ci/run`` installs it) runs on loopback and
scrapes an ``icws-gateway`` process in front of an ``icws-devnet`` process, every second, while a short load
runs: verifying clients exchanging messages with the ``test`` canister, and one client of the ``firehose``
canister that stops reading until the gateway closes it as a slow consumer. A second Prometheus scrapes an
``icws-gateway --workers 2`` whose worker 1 is killed and restarted, for what only a supervisor exports
(``worker_restarts_total``). Then every query of the dashboard (its variables substituted the way Grafana does)
and every alert expression (without its threshold) must return series through the HTTP API, from the supervisor
when it names a supervisor's metric: a misspelt metric or label returns none. ``promtool`` checks the rules and runs
their unit tests (``deploy/prometheus/alerts_test.yml``), which must fire every alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import yaml

from icws_fast.gateway.supervisor import SupervisorMetrics
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from tests.faults.verifying import VerifyingClient, push, settle
from tests.gateway.gw_rawclient import RawClient
from tests.processes import REPO, Child, DevnetProcess, GatewayProcess, free_port

PROMETHEUS_DIR: Final = REPO / "deploy" / "prometheus"
ALERTS: Final = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST: Final = PROMETHEUS_DIR / "alerts_test.yml"
DASHBOARD: Final = REPO / "deploy" / "grafana" / "icws-gateway.json"
JOB: Final = "icws-gateway"
SCRAPE_INTERVAL_S: Final = 1
#: What ``$__rate_interval`` becomes: the whole load falls within it.
RATE_WINDOW: Final = "1m"
#: What only the supervisor of ``--workers`` exports (its counters as queries name them).
SUPERVISOR_METRICS: Final = frozenset(
    family.name + ("_total" if family.type == "counter" else "") for family in SupervisorMetrics().registry.collect()
)
VERIFYING_CLIENTS: Final = 4
MESSAGES_PER_CLIENT: Final = 5
#: The gateway's --max-send-buffer: small, so that a client that stops reading is closed within a few rounds.
MAX_SEND_BUFFER: Final = 256 * 1024
_FIREHOSE_CONFIG: Final = candid.parse_args(
    "(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })"
)
# A trailing comparison with a number: the alert's threshold.
_THRESHOLD = re.compile(r"^(?P<query>.*\S)\s*(?:==|!=|>=|<=|>|<)\s*[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?\s*$", re.DOTALL)
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def tool(name: str) -> str:
    """The path of ``name`` (from Debian's prometheus package); in CI a missing one fails, elsewhere it skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: apt-get install --no-install-recommends prometheus (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_targets() -> list[tuple[str, str]]:
    """``(panel title / refId, expr)`` of every query of every panel."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def without_threshold(expr: str) -> str:
    match = _THRESHOLD.match(expr.strip())
    assert match is not None, f"the alert expression {expr!r} does not end with a comparison to a number"
    return match["query"]


# -- without Prometheus running ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_how_long_how_bad_what_and_where_to_read(rule: dict[str, Any]) -> None:
    assert "for" in rule, f"{rule['alert']} has no 'for:'"
    assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"], rule["alert"]
    assert annotations["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}"
    without_threshold(rule["expr"])  # each has a threshold the live check can take off
    assert f'job="{JOB}"' in rule["expr"], f"{rule['alert']} does not select job={JOB}"


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a case expecting the alert, not only its absence
    }
    quiet = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts no unit test fires"
    assert names - quiet == set(), "alerts no unit test shows quiet on a near miss"


def test_the_dashboard_is_importable_with_a_datasource_and_a_canister_variable() -> None:
    board = dashboard()
    assert board["id"] is None and board["uid"] == JOB
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["canister"]["type"] == "query"
    assert variables["job"]["query"] == JOB
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
    for where, expr in dashboard_targets():
        # Multi-value variables become regular expressions: only =~ matches them.
        for name in ("instance", "canister"):
            assert f"${name}" not in expr or re.search(rf'=~"\${name}"', expr), f"{where}: ${name} without =~"
        assert 'job="$job"' in expr, f"{where} does not select the job"


def test_promtool_checks_the_rules() -> None:
    result = _run([tool("promtool"), "check", "rules", str(ALERTS)])
    assert "SUCCESS" in result


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _run([tool("promtool"), "test", "rules", ALERTS_TEST.name], cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in result


def _run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{output}"
    return output


# -- Prometheus scraping a gateway under load ----------------------------------------------------------------------


@dataclass
class Scraped:
    """A Prometheus that scraped a gateway through a short load, and what the load used."""

    api: str  # http://127.0.0.1:PORT/api/v1
    instance: str
    canisters: list[str]

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.api}/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", f"{url}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float:
        """The one value ``expr`` returns."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def substitute(self, expr: str) -> str:
        """``expr`` with the dashboard's variables as Grafana sets them: multi-value ones as a regex alternation."""
        values = {
            "$__rate_interval": RATE_WINDOW,
            # Grafana escapes regex characters with a backslash, doubled inside the PromQL string.
            "$instance": re.escape(self.instance).replace("\\", "\\\\"),
            "$canister": "|".join(self.canisters),
            "$job": JOB,
        }
        for name, value in values.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"a variable the test does not know: {expr}"
        return expr


@contextlib.contextmanager
def _prometheus(tmp: Path, instance: str) -> Iterator[Scraped]:
    """A Prometheus on loopback, with the alert rules, scraping ``instance`` every second as job ``icws-gateway``,
    once it has scraped it once."""
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [instance]}]}],
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    command = [
        tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={address}",
        "--log.level=warn",
    ]
    with Child("prometheus", command) as child:
        scraped = Scraped(f"http://{address}/api/v1", instance, [])
        _wait_until_scraping(child, scraped)
        yield scraped


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    tool("prometheus")  # before starting anything
    with DevnetProcess(state_dir=tmp_path_factory.mktemp("devnet")) as devnet:
        yield devnet


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, devnet: DevnetProcess) -> Iterator[Scraped]:
    """One gateway (no ``--workers``) scraped through a load."""
    tmp = tmp_path_factory.mktemp("observability")
    gateway = GatewayProcess(devnet.url, tmp / "gateway", extra_args=["--max-send-buffer", str(MAX_SEND_BUFFER)])
    with gateway, _prometheus(tmp, gateway.metrics_url.split("://", 1)[1]) as scraped:
        started = time.time()
        asyncio.run(_load(devnet, gateway))
        scraped.canisters = sorted({str(devnet.canister_ids[name]) for name in ("test", "firehose")})
        _wait_for_a_scrape_after(scraped, started, time.time())
        yield scraped


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory, devnet: DevnetProcess) -> Iterator[Scraped]:
    """A supervisor of two workers (``--workers 2``) scraped before and after worker 1 is killed and restarted,
    for what only a supervisor exports."""
    tmp = tmp_path_factory.mktemp("supervised")
    with (
        GatewayProcess(devnet.url, tmp / "gateway", workers=2) as gateway,
        _prometheus(tmp, gateway.metrics_url.split("://", 1)[1]) as scraped,
    ):
        # The counter at zero first, as Prometheus must see it for increase() to count the restart.
        _wait_for_query(scraped, f'worker_restarts_total{{job="{JOB}", worker="1"}} == 0')
        killed = time.time()
        os.kill(gateway.worker_pids[1], signal.SIGKILL)
        assert gateway.worker_started() == 1
        # Ready again, as every rule must then find a healthy gateway (IcwsGatewayNotReady pends on a 0).
        _wait_for_query(scraped, f'gateway_ready{{job="{JOB}", worker="1"}} == 1', timeout_s=30.0)
        _wait_for_a_scrape_after(scraped, killed, time.time())
        yield scraped


def _wait_for_query(scraped: Scraped, expr: str, timeout_s: float = 15.0) -> None:
    """Until ``expr`` returns a series."""
    deadline = time.monotonic() + timeout_s
    while not scraped.query(expr):
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr} returned no series within {timeout_s:g} s")
        time.sleep(0.2)


def prometheus_for(expr: str, request: pytest.FixtureRequest) -> Scraped:
    """The Prometheus that can answer ``expr``: the supervisor's when it names a metric only a supervisor
    exports, else the single gateway's (which saw the load)."""
    only_supervised = any(re.search(rf"\b{name}\b", expr) for name in SUPERVISOR_METRICS)
    scraped: Scraped = request.getfixturevalue("supervised" if only_supervised else "scraped")
    return scraped


def _wait_until_scraping(child: Child, scraped: Scraped, timeout_s: float = 30.0) -> None:
    """Until Prometheus answers and has scraped the gateway once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.returncode is not None:
            raise child.failure("exited while starting")
        try:
            if scraped.query(f'up{{job="{JOB}"}} == 1'):
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.2)
    raise child.failure(f"did not scrape the gateway within {timeout_s:g} s")


def _wait_for_a_scrape_after(scraped: Scraped, started: float, ended: float, timeout_s: float = 15.0) -> None:
    """Until two scrapes that began after the load ended are stored: the last values include all of it, and a
    series the load's end created (a close code) has the two samples ``rate()`` needs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if scraped.value(f'timestamp(up{{job="{JOB}"}})') > ended + 2 * SCRAPE_INTERVAL_S:
            return
        time.sleep(0.2)
    raise AssertionError(f"no scrape stored within {timeout_s:g} s after the load (which took {ended - started:.1f} s)")


async def _load(devnet: DevnetProcess, gateway: GatewayProcess) -> None:
    """Verifying clients exchanging messages, then a firehose client that stops reading and is closed."""
    test = devnet.canister_ids["test"]
    clients = [
        await VerifyingClient.connect(f"client-{n}", gateway.url, test, devnet) for n in range(VERIFYING_CLIENTS)
    ]
    async with Agent(devnet.url, root_key=devnet.root_key_der) as agent:
        for client in clients:
            await client.send(MESSAGES_PER_CLIENT)
            await push(agent, test, client, f"pushed to {client.name}")
        await settle(clients)
        await asyncio.gather(*(c.close() for c in clients))

        stuck = await RawClient.connect(gateway.url)
        await stuck.open(devnet.canister_ids["firehose"])
        stuck.transport.underlying_transport.pause_reading()
        firehose = devnet.canister_ids["firehose"]
        rounds = {"messages_per_round": 8, "payload_size": 128 * 1024, "interval_ms": 100}
        await agent.call(firehose, "configure", candid.encode(_FIREHOSE_CONFIG, [rounds]))
        try:
            await _wait_for_sample(gateway, 'errors_total{kind="slow_consumer"} 1.0')
        finally:
            stopped = {"messages_per_round": 0, "payload_size": 0, "interval_ms": 100}
            await agent.call(firehose, "configure", candid.encode(_FIREHOSE_CONFIG, [stopped]))
            stuck.abort()
    await _wait_for_sample(gateway, "clients_connected 0.0")


async def _wait_for_sample(gateway: GatewayProcess, line: str, timeout_s: float = 30.0) -> None:
    """Until the gateway's /metrics has ``line`` (a sample and its value)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{gateway.metrics_url}/metrics") as resp:
                if line in (await resp.text()).splitlines():
                    return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{gateway.metrics_url}/metrics did not show {line!r} within {timeout_s:g} s")


@pytest.mark.slow
@pytest.mark.parametrize(("where", "expr"), dashboard_targets(), ids=[where for where, _ in dashboard_targets()])
def test_every_dashboard_query_returns_data(request: pytest.FixtureRequest, where: str, expr: str) -> None:
    scraped = prometheus_for(expr, request)
    query = scraped.substitute(expr)
    assert scraped.query(query), f"the panel query {where} returned no series: {query}"


@pytest.mark.slow
def test_the_dashboard_variables_list_what_the_load_used(scraped: Scraped) -> None:
    found = {}
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = _LABEL_VALUES.match(var["definition"])
        assert match is not None, f"variable {var['name']}: {var['definition']}"
        selector = scraped.substitute(match["selector"])
        found[var["name"]] = set(scraped.get(f"label/{match['label']}/values", **{"match[]": selector}))
    assert found == {"instance": {scraped.instance}, "canister": set(scraped.canisters)}


@pytest.mark.slow
@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_expression_returns_data(request: pytest.FixtureRequest, rule: dict[str, Any]) -> None:
    query = without_threshold(rule["expr"])
    assert prometheus_for(query, request).query(query), f"{rule['alert']}: {query} returned no series"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["scraped", "supervised"])
def test_prometheus_evaluates_every_rule_without_error(request: pytest.FixtureRequest, which: str) -> None:
    scraped: Scraped = request.getfixturevalue(which)
    rules = [rule for group in scraped.get("rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        # One restart is no crash loop: quiet too.
        assert rule["state"] == "inactive", f"{rule['name']} is {rule['state']} after a healthy load"


@pytest.mark.slow
def test_the_killed_worker_shows_in_the_restart_alert_and_panel(supervised: Scraped) -> None:
    rule = next(rule for rule in alert_rules() if rule["alert"] == "IcwsWorkerCrashLooping")
    counted = {
        series["metric"]["worker"]: float(series["value"][1])
        for series in supervised.query(without_threshold(rule["expr"]))
    }
    assert counted.keys() == {"0", "1"} and counted["0"] == 0 and counted["1"] >= 1, counted
    assert supervised.value(f'worker_restarts_total{{job="{JOB}", worker="1"}}') == 1
    panel = next(expr for where, expr in dashboard_targets() if where.startswith("Worker restarts /"))
    shown = {s["metric"]["worker"]: float(s["value"][1]) for s in supervised.query(supervised.substitute(panel))}
    assert shown["1"] > 0 and shown["0"] == 0, shown


@pytest.mark.slow
def test_the_load_shows_in_the_scraped_metrics(scraped: Scraped) -> None:
    selector = f'job="{JOB}"'
    opened = VERIFYING_CLIENTS + 1
    assert scraped.value(f"up{{{selector}}}") == 1
    assert scraped.value(f"gateway_ready{{{selector}}}") == 1
    assert scraped.value(f"sum(client_connected_count_total{{{selector}}})") == opened
    # Each client's ws_open and messages; pending: the IC took the call, its verdict came after the wait.
    relayed = VERIFYING_CLIENTS * (1 + MESSAGES_PER_CLIENT) + 1
    assert scraped.value(f'sum(relayed_envelopes_to_ic_total{{{selector}, outcome=~"accepted|pending"}})') == relayed
    assert scraped.value(f"sum(relayed_messages_to_clients_total{{{selector}}})") >= VERIFYING_CLIENTS * (
        2 + MESSAGES_PER_CLIENT
    )
    assert scraped.value(f"sum(relayed_bytes_to_clients_total{{{selector}}})") > 0
    assert scraped.value(f"poller_duration_count{{{selector}}}") > 0
    assert scraped.value(f'errors_total{{{selector}, kind="slow_consumer"}}') == 1
    assert scraped.value(f'closed_connections_total{{{selector}, code="1008"}}') == 1
    assert scraped.value(f"client_send_queue_bytes_count{{{selector}}}") > 0
    assert scraped.value(f"clients_connected{{{selector}}}") == 0
    assert scraped.value(f"process_resident_memory_bytes{{{selector}}}") > 10_000_000
    assert scraped.value(f"process_cpu_seconds_total{{{selector}}}") > 0
