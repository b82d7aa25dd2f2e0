"""The ``icws-gateway`` console script as a subprocess, for tests that signal it or measure it from outside.

:class:`GatewayProcess` starts the gateway on a given WebSocket port (metrics on a free one), waits for its
``listening on`` line and keeps its output in a file (a pipe nobody reads would block the gateway once full).
``stop()`` sends SIGTERM and returns the exit status; ``rss_bytes()`` reads its resident set size; ``metric()``
reads one sample of its ``/metrics``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.plugins.devnet import free_port, terminate

_START_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"listening on ws://[^ ]+:(\d+) \(metrics on [^ ]+:(\d+)\)")


@dataclass
class GatewayProcess:
    """A running ``icws-gateway`` for ``ic_url`` on ``port`` (0: a free one, kept across :meth:`restart`)."""

    ic_url: str
    data_dir: Path
    port: int = 0
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        """What the gateway wrote to stdout and stderr so far."""
        path = self.data_dir / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        script = Path(sys.executable).with_name("icws-gateway")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "icws_fast.gateway"]
        command += [
            *("--gateway-address", f"127.0.0.1:{self.port}", "--prometheus-endpoint", "127.0.0.1:0"),
            *("--ic-network-url", self.ic_url, "--data-dir", str(self.data_dir), "--polling-interval", "20"),
            *self.extra_args,
        ]
        seen = len(self.output)  # a restart appends: only what this process writes counts
        env = {**os.environ, "RUST_LOG_STDOUT": "warn", "RUST_LOG_FILE": "info"}
        with (self.data_dir / "output.log").open("ab") as output:
            self.proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            if match := _LISTENING.search(self.output[seen:]):
                self.metrics_port = int(match.group(2))
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"icws-gateway did not start listening; its output:\n{self.output}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then wait at most ``timeout_s`` (then SIGKILL); the exit status (None if it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        return terminate(proc, timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def rss_bytes(self) -> int:
        """The gateway's resident set size now (Linux ``/proc``)."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        (kib,) = re.findall(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(kib) * 1024

    async def metric(self, name: str) -> float:
        """The value of the unlabelled sample ``name`` on the gateway's ``/metrics``."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp,
        ):
            text = await resp.text()
        (value,) = re.findall(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(value)
