"""One worker of ``icws-gateway --workers N``: a full gateway started by the supervisor, not by people.

``python -m icws_fast.gateway.worker INDEX SOCKET SUPERVISOR_PID FLAGS...``: the gateway the flags describe,
with the identity of worker ``INDEX`` (:func:`~icws_fast.gateway.identity.key_file`), listening with
``SO_REUSEPORT`` on the port the supervisor holds, and serving ``/metrics``, ``/health`` and ``/ready`` on the
Unix socket ``SOCKET`` for the supervisor to ask. It drains on SIGTERM/SIGINT, and gets SIGTERM when the
supervisor dies, so no orphan keeps serving on the port.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import sys
from pathlib import Path

from icws_fast import cliconfig
from icws_fast.gateway.cli import build_parser, run
from icws_fast.gateway.config import GatewayConfig

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with(supervisor_pid: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies (Linux); if it died already, end now."""
    if sys.platform != "linux":  # pragma: no cover - the supervisor runs where SO_REUSEPORT spreads connections
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # reparented before prctl took effect
        sys.exit(f"icws-gateway worker: error: the supervisor (pid {supervisor_pid}) is gone")


def main(argv: list[str] | None = None) -> int:
    """Run worker ``INDEX`` until SIGTERM/SIGINT; the exit code (as ``icws-gateway``'s)."""
    index, socket, supervisor_pid, *flags = sys.argv[1:] if argv is None else argv
    _end_with(int(supervisor_pid))
    config = cliconfig.config_from_argv(GatewayConfig, build_parser(), flags)
    config = dataclasses.replace(config, reuse_port=True, metrics_host=None, metrics_socket=Path(socket))
    return run(config, worker=int(index))


if __name__ == "__main__":
    sys.exit(main())
