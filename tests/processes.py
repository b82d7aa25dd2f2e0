"""Child processes for the tests and benchmarks: start one, wait until it is ready, stop it.

Every process a test or benchmark starts (``icws-devnet``, ``icws-gateway``, a Node.js check, a benchmark
worker) goes through :class:`Child`: stdout and stderr share one pipe that a thread drains into a bounded log,
so a chatty child never blocks on a full pipe and a failure can show what it printed;
:meth:`Child.wait_for_line` waits for a start-up line with a timeout, and its error says which process, what
it waited for and the tail of that log; :meth:`Child.stop` sends SIGTERM and then SIGKILL when the child does
not exit in time. ``with`` (or ``async with``) stops the child even when the test fails.

:class:`DevnetProcess` and :class:`GatewayProcess` start the two console scripts with the options the tests
use and read what their start-up lines say (URL, root key, canister ids; principal, port, metrics address);
a gateway also reports its resident set size and its ``/metrics`` samples.

The ``*_async`` methods run the blocking ones in a worker thread: a test whose event loop serves something the
child talks to (an in-process devnet) must not block that loop while it waits.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from icws_fast.ic.principal import Principal

REPO: Final = Path(__file__).resolve().parent.parent
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 20.0
# The devnet's round length in tests: fast, so that calls and timers settle quickly.
TEST_ROUND_MS: Final = 10
_KEPT_LINES: Final = 10_000
_TAIL_LINES: Final = 40


class ChildProcessFailed(RuntimeError):
    """A child process exited, or printed nothing expected, before it was ready; the message holds its log tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a child that must keep its port across a restart)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``)."""
    user, system = cpu_times(pid)
    return user + system


def cpu_times(pid: int) -> tuple[float, float]:
    """The user and the system (kernel) CPU seconds process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` now, in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line: the process is exiting")


def console_script(name: str, module: str) -> list[str]:
    """The command that runs console script ``name`` of this environment, or ``python -m module`` without it."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with the repository root last on ``PYTHONPATH``.

    The root makes ``tests.*`` importable in the child (canister classes given as ``--canister name=module:Class``);
    a ``PYTHONPATH`` in ``extra`` comes before it (a benchmark running another tree's ``icws_fast``).
    """
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    return env


class Child:
    """A running child process whose output (stdout and stderr together) is collected line by line."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        stdin: bool = False,
    ) -> None:
        """Start ``command``; ``name`` is how errors call it; ``env`` is added to this process's environment.

        ``stdin`` gives the child a pipe for :meth:`send_line`; otherwise it reads from ``/dev/null``.
        """
        self.name = name
        self.command = list(command)
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(env),
            cwd=cwd,
        )
        self._lines: collections.deque[str] = collections.deque(maxlen=_KEPT_LINES)
        self._read = 0  # lines read from the pipe so far
        self._consumed = 0  # lines already looked at by wait_for_line
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, name=f"{name} output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while the child runs."""
        return self._proc.poll()

    @property
    def output(self) -> str:
        """What the child printed so far (the last 10 000 lines)."""
        with self._changed:
            return "\n".join(self._lines)

    def _drain(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        with stdout:
            for line in stdout:
                with self._changed:
                    self._lines.append(line.rstrip("\n"))
                    self._read += 1
                    self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def failure(self, what: str) -> ChildProcessFailed:
        """An error saying that this child ``what``, with its command line and the last lines it printed."""
        with self._changed:
            tail = list(self._lines)[-_TAIL_LINES:]
        shown = "\n".join(f"  | {line}" for line in tail) if tail else "  (nothing)"
        return ChildProcessFailed(
            f"{self.name} {what}\n  command: {shlex.join(self.command)}\n  last lines of its output:\n{shown}"
        )

    def wait_for_line(self, prefix: str, timeout: float = START_TIMEOUT_S) -> str:
        """The next line starting with ``prefix``, after the lines earlier calls looked at; without the newline.

        Raises :class:`ChildProcessFailed` when the child's output ends first or after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                oldest = self._read - len(self._lines)
                for index in range(max(self._consumed, oldest), self._read):
                    line = self._lines[index - oldest]
                    if line.startswith(prefix):
                        self._consumed = index + 1
                        return line
                self._consumed = self._read
                if self._eof:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self.failure(f"printed no line starting with {prefix!r} within {timeout:g} s")
                self._changed.wait(remaining)
        try:
            ended = f"exited with status {self._proc.wait(STOP_TIMEOUT_S)}"
        except subprocess.TimeoutExpired:
            ended = "closed its output"
        raise self.failure(f"{ended} before printing a line starting with {prefix!r}")

    def send_line(self, text: str, *, last: bool = False) -> None:
        """Write ``text`` and a newline to the child's stdin (started with ``stdin=True``); ``last`` then closes it."""
        if self._proc.stdin is None:
            raise ValueError(f"{self.name} was started without a stdin pipe (stdin=True)")
        self._proc.stdin.write(text + "\n")
        self._proc.stdin.flush()
        if last:
            self._proc.stdin.close()

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit by itself; its exit status. Raises if it still runs after ``timeout`` s."""
        try:
            status = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.failure(f"is still running after {timeout:g} s") from None
        self._reader.join(STOP_TIMEOUT_S)
        return status

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` (SIGKILL after ``timeout`` s if the child still runs) and reap it; its exit status.

        Stopping a child that has exited only reaps it.
        """
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        # A grandchild holding the pipe open would keep the reader going: it is a daemon, do not wait for ever.
        self._reader.join(STOP_TIMEOUT_S)
        return self._proc.returncode

    async def wait_for_line_async(self, prefix: str, timeout: float = START_TIMEOUT_S) -> str:
        """:meth:`wait_for_line` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_line, prefix, timeout)

    async def wait_async(self, timeout: float) -> int:
        """:meth:`wait` without blocking the event loop."""
        return await asyncio.to_thread(self.wait, timeout)

    async def stop_async(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """:meth:`stop` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, sig, timeout)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()


@dataclass
class DevnetProcess:
    """``icws-devnet`` in a child process, and what its start-up line says.

    ``state_dir`` keeps keys, ids and canister state across :meth:`restart` (on the same ``address``).
    ``extra_args`` are further options, such as ``["--subnet-delegation"]`` or ``["--canister",
    "name=module:Class"]`` (``tests.*`` modules included; without one the devnet hosts the demo canisters).
    """

    address: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    state_dir: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    round_ms: float = TEST_ROUND_MS
    env: dict[str, str] = field(default_factory=dict)
    child: Child | None = None
    # The start-up line: {"url", "root_key" (hex DER), "canisters": {name: id}}.
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def root_key_der(self) -> bytes:
        return bytes.fromhex(self.info["root_key"])

    @property
    def canister_ids(self) -> dict[str, Principal]:
        return {name: Principal.from_text(text) for name, text in self.info["canisters"].items()}

    @property
    def pid(self) -> int:
        if self.child is None:
            raise RuntimeError("the devnet is not running")
        return self.child.pid

    def command(self) -> list[str]:
        """The command line that starts this devnet."""
        command = [*console_script("icws-devnet", "icws_fast.devnet.cli"), "--address", self.address]
        command += ["--round-ms", str(self.round_ms), "--log-level", "WARNING"]
        if self.state_dir is not None:
            command += ["--state-dir", str(self.state_dir)]
        return [*command, *self.extra_args]

    def start(self) -> DevnetProcess:
        """Start the devnet and wait for its start-up line."""
        self.child = Child("icws-devnet", self.command(), env=self.env)
        try:
            self.info = json.loads(self.child.wait_for_line("{"))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` (SIGTERM: the devnet persists its state; SIGKILL: it cannot), then reap it.

        Its exit status, None if it was not running.
        """
        child, self.child = self.child, None
        return None if child is None else child.stop(sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> DevnetProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class GatewayProcess:
    """``icws-gateway`` in a child process in front of ``ic_url``, and what its start-up lines say.

    ``data_dir`` holds its key pair (so a restart keeps the principal) and its trace logs. ``address`` with port 0
    lets the OS choose a port at the first :meth:`start`; later starts listen on that port again, so clients
    reconnect to the same :attr:`url`. ``extra_args`` are further command-line options, ``env`` further
    environment variables (``RUST_LOG_STDOUT`` overrides the ``warn`` stdout level). ``workers`` above 1 starts
    a supervisor of that many workers (``--workers``); :attr:`principals` and :attr:`worker_pids` then say who
    each worker is, and :attr:`principal` is worker 0's.
    """

    ic_url: str
    data_dir: Path
    address: str = "127.0.0.1:0"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # The last process started; kept after it stops, for its exit status and output.
    child: Child | None = None
    workers: int = 1
    principal: str = ""
    principals: list[str] = field(default_factory=list)  # by worker index (one: the gateway's)
    worker_pids: list[int] = field(default_factory=list)  # by worker index; empty without workers
    url: str = ""  # ws:// or wss://, with the port the gateway listens on
    metrics_url: str = ""  # http://HOST:PORT of /metrics, /health and /ready

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        if self.child is None or self.child.returncode is not None:
            raise RuntimeError("the gateway is not running")
        return self.child.pid

    @property
    def output(self) -> str:
        """What the last gateway started printed (stdout and stderr), even after it stopped."""
        return "" if self.child is None else self.child.output

    def command(self) -> list[str]:
        """The command line that starts this gateway."""
        return [
            *console_script("icws-gateway", "icws_fast.gateway"),
            "--gateway-address",
            self.address,
            "--prometheus-endpoint",
            "127.0.0.1:0",
            "--ic-network-url",
            self.ic_url,
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warn",
            *(["--workers", str(self.workers)] if self.workers > 1 else []),
            *self.extra_args,
        ]

    def spawn(self) -> Child:
        """Start the gateway without waiting for it (for a test of how it fails to start)."""
        self.child = Child("icws-gateway", self.command(), env=self.env)
        return self.child

    def start(self) -> GatewayProcess:
        """Start the gateway and wait until it listens."""
        child = self.spawn()
        try:
            if self.workers > 1:
                self.principals, self.worker_pids = [""] * self.workers, [0] * self.workers
                for _ in range(self.workers):
                    self.worker_started(child)
            else:
                self.principals = [child.wait_for_line("gateway principal: ").split(": ", 1)[1]]
            self.principal = self.principals[0]
            # ``listening on ws://HOST:PORT (metrics on HOST:PORT)``: both ports were chosen by the OS.
            words = child.wait_for_line("listening on ").split()
        except BaseException:
            self.stop()
            raise
        self.url = words[2]
        self.metrics_url = f"http://{words[5].rstrip(')')}"
        self.address = self.url.split("://", 1)[1]  # a restart listens on the same port
        return self

    def worker_started(self, child: Child | None = None, timeout: float = START_TIMEOUT_S) -> int:
        """Wait for the supervisor's next ``worker I started: pid P, principal X`` line, note P and X; I."""
        child = child or self.child
        assert child is not None, "the gateway was never started"
        words = child.wait_for_line("worker ", timeout).replace(",", "").split()
        index = int(words[1])
        self.worker_pids[index], self.principals[index] = int(words[4]), words[6]
        return index

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` (SIGTERM: the gateway drains; SIGKILL: it cannot), then reap it.

        Its exit status (again when it already stopped), None if it was never started.
        """
        return None if self.child is None else self.child.stop(sig)

    def rss_bytes(self) -> int:
        """The running gateway's resident set size now, in bytes (Linux ``/proc``); with workers, the supervisor's."""
        return rss_bytes(self.pid)

    async def by_worker(self, name: str) -> dict[str, float]:
        """The samples ``name`` on the supervisor's ``/metrics`` (``--workers``), summed by ``worker`` label."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.metrics_url}/metrics") as resp:
            resp.raise_for_status()
            text = await resp.text()
        values: dict[str, float] = collections.defaultdict(float)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    values[sample.labels["worker"]] += sample.value
        return dict(values)

    async def metric(self, name: str) -> float:
        """The value of the unlabelled sample ``name`` on the gateway's ``/metrics``."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.metrics_url}/metrics") as resp:
            text = await resp.text()
        values = [line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")]
        if len(values) != 1:
            raise ValueError(f"{self.metrics_url}/metrics has {len(values)} unlabelled samples {name!r}, not one")
        return float(values[0])

    async def start_async(self) -> GatewayProcess:
        """:meth:`start` without blocking the event loop (the replica may be served by this loop)."""
        return await asyncio.to_thread(self.start)

    async def stop_async(self, sig: int = signal.SIGTERM) -> int | None:
        """:meth:`stop` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, sig)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> GatewayProcess:
        return await self.start_async()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()
