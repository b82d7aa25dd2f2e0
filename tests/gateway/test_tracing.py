"""OpenTelemetry traces: a real gateway exports OTLP/gRPC to a collector on loopback, recorded by the test.

The collector is a real gRPC server implementing the OTLP ``TraceService``; the gateway runs in
process against a devnet, and the project's SDK client opens a session and exchanges a message.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest

from icws_fast.client import IcWebSocket
from icws_fast.devnet import Devnet
from icws_fast.gateway import tracing
from icws_fast.gateway.config import GatewayConfig
from icws_fast.gateway.server import Gateway
from tests.gateway.gw_harness import start_gateway
from tests.processes import GatewayProcess, free_port


class Collector:
    """An OTLP/gRPC trace collector on 127.0.0.1 that keeps every span it is sent, with its resource."""

    def __init__(self) -> None:
        grpc = pytest.importorskip("grpc")
        pytest.importorskip("opentelemetry.sdk")
        service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc")
        messages = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self._lock = threading.Lock()
        collector = self

        class Servicer(service.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                with collector._lock:
                    for resource_spans in request.resource_spans:
                        resource = _attributes(resource_spans.resource.attributes)
                        for scope_spans in resource_spans.scope_spans:
                            collector.spans.extend((resource, s) for s in scope_spans.spans)
                return messages.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        service.add_TraceServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def named(self, name: str) -> list[Any]:
        with self._lock:
            return [s for _, s in self.spans if s.name == name]

    def stop(self) -> None:
        self._server.stop(grace=None)


def _attributes(key_values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in key_values:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.stop()


@pytest.fixture
def _tracing_off() -> Iterator[None]:
    """Tracing is process-wide: whatever a test turns on is off again after it."""
    yield
    tracing.shutdown_tracing(timeout_s=2.0)


async def _echo_session(devnet: Devnet, gateway: Gateway) -> str:
    """Open a session with the demo ``test`` canister, exchange one message, close; returns the client key."""
    ws = await IcWebSocket.connect(
        f"ws://127.0.0.1:{gateway.port}", devnet.canister_ids["test"], devnet.url, root_key_der=devnet.root_key_der
    )
    assert (await asyncio.wait_for(ws.recv(), 20))["text"] == "ping"
    await ws.send({"text": "traced", "timestamp": 0})
    assert (await asyncio.wait_for(ws.recv(), 20))["text"] == "traced ping"
    client_key = str(ws.client_key)
    await ws.close()
    return client_key


@pytest.mark.slow
@pytest.mark.usefixtures("_tracing_off")
async def test_a_session_is_traced_end_to_end(collector, devnet):
    gateway = await start_gateway(devnet.url)
    principal = str(gateway.principal)
    tracing.setup_tracing(collector.endpoint, principal)
    try:
        client_key = await _echo_session(devnet, gateway)
    finally:
        # Also waits for the connection to go and for its ws_close: every span is finished after this.
        await gateway.drain()
    await asyncio.to_thread(tracing.shutdown_tracing)

    canister = devnet.canister_ids["test"].to_text()
    for resource, _ in collector.spans:
        # The Rust gateway's service name, and the whole principal besides.
        assert resource["service.name"] == f"ic-ws-gw-{principal[:5]}"
        assert resource["gateway.principal"] == principal

    (session,) = collector.named("client_session")
    assert _attributes(session.attributes) == {"canister_id": canister, "client_key": client_key}
    assert session.end_time_unix_nano > session.start_time_unix_nano

    relays = collector.named("relay")
    methods = sorted(_attributes(r.attributes)["method"] for r in relays)
    assert methods == ["ws_message", "ws_open"]
    for relay in relays:
        # Each relay belongs to its session's trace, as a child of the session span.
        assert relay.trace_id == session.trace_id and relay.parent_span_id == session.span_id
        assert _attributes(relay.attributes)["canister_id"] == canister
        assert relay.status.code != relay.status.STATUS_CODE_ERROR

    polls = collector.named("poll")
    assert polls and all(_attributes(p.attributes)["canister_id"] == canister for p in polls)
    assert all(isinstance(_attributes(p.attributes)["nonce"], int) for p in polls)
    replies = [_attributes(r.attributes) for r in collector.named("poll_reply")]
    assert replies and all(r["canister_id"] == canister for r in replies)
    # The CDK's open message, the canister's "ping" and its echo came through the poller.
    assert sum(r["messages"] for r in replies) >= 3

    (close,) = collector.named("ws_close")
    assert _attributes(close.attributes) == {"canister_id": canister}


@pytest.mark.slow
@pytest.mark.usefixtures("_tracing_off")
async def test_an_unreachable_collector_does_not_hold_up_the_gateway(devnet):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    gateway = await start_gateway(devnet.url)
    tracing.setup_tracing(f"http://127.0.0.1:{free_port()}", str(gateway.principal))
    try:
        # Spans are produced all along and their export fails; sessions go on as without tracing.
        for _ in range(2):
            await _echo_session(devnet, gateway)
    finally:
        await gateway.drain()
    await asyncio.to_thread(tracing.shutdown_tracing, 1.0)
    with tracing.span("after_shutdown") as after:
        assert after is tracing.NO_SPAN


@pytest.mark.parametrize("form", ["http://127.0.0.1:{port}", "http://127.0.0.1:{port}/", "127.0.0.1:{port}"])
@pytest.mark.usefixtures("_tracing_off")
def test_every_plaintext_form_the_flag_takes_reaches_the_collector(collector, form):
    endpoint = form.format(port=collector.port)
    GatewayConfig(opentelemetry_collector_endpoint=endpoint)  # the flag's check takes it
    tracing.setup_tracing(endpoint, "aaaaa-aa")
    with tracing.span("probe", canister_id="aaaaa-aa"):
        pass
    tracing.shutdown_tracing()
    assert len(collector.named("probe")) == 1


def test_spans_cost_nothing_while_tracing_is_off():
    with tracing.span("poll", canister_id="aaaaa-aa") as current:
        assert current is tracing.NO_SPAN
    session = tracing.start_span("client_session")
    assert session is tracing.NO_SPAN and tracing.span_context(session) is None
    session.set_attributes({"canister_id": "aaaaa-aa"})
    session.end()


def test_the_gateway_does_not_import_opentelemetry_without_the_flag():
    code = (
        "import sys, icws_fast.gateway.cli, icws_fast.gateway.server;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# Runs the real command with the otel packages made unimportable, as on an install without the extra.
_WITHOUT_OTEL = """
import sys
class _NoOtel:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoOtel())
from icws_fast.gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_flag_without_the_otel_extra_exits_1_with_a_message(tmp_path):
    argv = ["--data-dir", str(tmp_path / "data"), "--gateway-address", "127.0.0.1:0"]
    argv += ["--prometheus-endpoint", "127.0.0.1:0", "--ic-network-url", "http://127.0.0.1:9"]
    argv += ["--opentelemetry-collector-endpoint", "http://127.0.0.1:4317"]
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, *argv],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "RUST_LOG_STDOUT": "error"},
    )
    assert proc.returncode == 1
    assert "'otel' extra" in proc.stderr and "pip install" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
async def test_the_command_exports_its_spans_before_it_exits(collector, devnet, tmp_path):
    """``icws-gateway --opentelemetry-collector-endpoint``: the spans still queued at SIGTERM reach the collector."""
    otel = ["--opentelemetry-collector-endpoint", collector.endpoint]
    async with GatewayProcess(devnet.url, tmp_path / "data", extra_args=otel) as gateway:
        ws = await IcWebSocket.connect(
            gateway.url, devnet.canister_ids["test"], devnet.url, root_key_der=devnet.root_key_der
        )
        assert (await asyncio.wait_for(ws.recv(), 20))["text"] == "ping"
        assert await gateway.stop_async(signal.SIGTERM) == 0
    (session,) = collector.named("client_session")
    assert _attributes(session.attributes)["canister_id"] == devnet.canister_ids["test"].to_text()
    assert [_attributes(r.attributes)["method"] for r in collector.named("relay")] == ["ws_open"]
