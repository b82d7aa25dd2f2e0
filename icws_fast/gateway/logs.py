"""Logging set-up: stdout and ``./data/traces/gateway_{start}.log``, filtered like Rust's EnvFilter.

``RUST_LOG_STDOUT`` (default ``info``, or ``--log-level``) and ``RUST_LOG_FILE`` (default
``trace``) take EnvFilter directives: a comma-separated list of ``level`` or ``target=level``
items, where the most specific matching target wins. Targets are logger names (dots or Rust's
``::``); the Rust gateway's crate name ``ic_websocket_gateway`` means ``icws_fast.gateway`` so
existing settings keep working. Levels: ``off``, ``error``, ``warn``, ``info``, ``debug``, ``trace``
(Python has no trace level: it maps to DEBUG), and Python's own names.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

_LEVELS = {
    "off": logging.CRITICAL + 10,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
    "critical": logging.CRITICAL,
}
_TARGET_ALIASES = {"ic_websocket_gateway": "icws_fast.gateway"}


class EnvFilter(logging.Filter):
    """Passes a record when its level reaches the level of the most specific directive matching its logger."""

    def __init__(self, spec: str, default: int = logging.INFO) -> None:
        super().__init__()
        self.default = default
        self.targets: list[tuple[str, int]] = []
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            target, sep, level_name = item.rpartition("=")
            level = _LEVELS.get(level_name.strip().lower())
            if level is None:
                raise ValueError(f"unknown log level {level_name!r} in {spec!r}")
            if not sep:
                self.default = level
                continue
            name = target.strip().replace("::", ".")
            crate, dot, rest = name.partition(".")
            if crate in _TARGET_ALIASES:
                name = _TARGET_ALIASES[crate] + dot + rest
            self.targets.append((name, level))
        # Longest target first, so the first match is the most specific one.
        self.targets.sort(key=lambda t: len(t[0]), reverse=True)

    def level_for(self, logger_name: str) -> int:
        """The threshold for records of ``logger_name``."""
        for target, level in self.targets:
            if logger_name == target or logger_name.startswith(target + "."):
                return level
        return self.default

    @property
    def lowest(self) -> int:
        """The lowest threshold any directive sets (what the root logger must let through)."""
        return min([self.default, *(level for _, level in self.targets)])

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level_for(record.name)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, target, message, the exception if any, and ``process`` when
    several processes share the output (``worker 1``, ``supervisor``)."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "target": record.name,
            "message": record.getMessage(),
        }
        if self._process is not None:
            entry["process"] = self._process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(
    *,
    stdout_spec: str,
    file_spec: str,
    log_format: str = "text",
    traces_dir: Path | None = None,
    process: str | None = None,
) -> Path | None:
    """Install the stdout handler and, when ``traces_dir`` is given, the file handler; returns the log file path.

    ``process`` names this process among several writing to one stdout (the workers of ``--workers`` and their
    supervisor): every line says it, and the file is ``gateway_{start}_{process}.log`` (spaces as ``-``).
    """
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter(process)
    else:
        tag = "" if process is None else f"[{process}] "
        formatter = logging.Formatter(f"%(asctime)s %(levelname)-5s {tag}%(name)s: %(message)s")
        formatter.converter = time.gmtime
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    filters = [EnvFilter(stdout_spec)]
    stdout_handler = logging.StreamHandler(sys.stdout)
    stdout_handler.setFormatter(formatter)
    stdout_handler.addFilter(filters[0])
    root.addHandler(stdout_handler)
    path = None
    if traces_dir is not None:
        traces_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if process is None else "_" + process.replace(" ", "-")
        path = traces_dir / f"gateway_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}{suffix}.log"
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(formatter)
        filters.append(EnvFilter(file_spec, default=logging.DEBUG))
        file_handler.addFilter(filters[-1])
        root.addHandler(file_handler)
    root.setLevel(min(f.lowest for f in filters))
    return path
