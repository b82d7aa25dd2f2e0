"""Pass/fail thresholds for a campaign, and the verdict that sets Locust's exit code.

A campaign passes when its error rate and the 99th percentile of each metric named in ``--max-p99`` stay within
their thresholds; otherwise Locust exits with status 1 (as the Rust gateway's CI fails on any failed virtual
user), and the summary names each metric over its threshold. The options (also environment variables):

- ``--max-error-rate`` / ``ICWS_MAX_ERROR_RATE`` (default 0): failures divided by operations (every sample but
  the per-message ``latency`` ones, which would dilute the rate with the stream's volume);
- ``--max-p99`` / ``ICWS_MAX_P99``: ``TYPE/NAME=MS`` pairs separated by commas, ``NAME`` may be ``*``
  (``icws/open=2000,latency/*=3000``); a metric without samples is reported and not judged.

In a distributed run only the master (or the ``--processes`` parent) judges, on the aggregated stats.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Final

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import RequestStats

from icws_fast.errors import ConfigError
from icws_load.reports import LATENCY

DEFAULT_MAX_P99: Final = "icws/open=5000,icws/echo=5000,icws/chat=5000,latency/*=5000"


@dataclass(frozen=True)
class P99Limit:
    """The 99th percentile of the metrics ``request_type/name`` (``name`` a glob) must be at most ``max_ms``."""

    request_type: str
    name: str
    max_ms: float

    def matches(self, request_type: str, name: str) -> bool:
        return request_type == self.request_type and fnmatch.fnmatchcase(name, self.name)


def parse_p99_limits(text: str) -> list[P99Limit]:
    """``TYPE/NAME=MS,...`` as :class:`P99Limit` s; raises :class:`~icws_fast.errors.ConfigError` on a bad pair."""
    limits = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        metric, _, value = item.rpartition("=")
        request_type, _, name = metric.strip().partition("/")
        try:
            max_ms = float(value)
        except ValueError:
            max_ms = float("nan")
        if not (request_type and name and max_ms >= 0):
            raise ConfigError("--max-p99", f"{item!r} is not TYPE/NAME=MILLISECONDS (e.g. icws/open=2000)")
        limits.append(P99Limit(request_type, name.strip(), max_ms))
    return limits


def verdict(stats: RequestStats, max_error_rate: float, limits: list[P99Limit]) -> tuple[bool, list[str]]:
    """Whether the campaign passed, and the summary's lines: one per metric, then the error rate and the verdict."""
    lines = [f"{'metric':<32} {'samples':>8} {'fails':>6} {'p50 ms':>8} {'p99 ms':>8}  threshold"]
    failed: list[str] = []
    judged: set[P99Limit] = set()
    operations = failures = 0
    for (name, request_type), entry in sorted(stats.entries.items(), key=lambda item: (item[0][1], item[0][0])):
        if request_type != LATENCY:
            operations += entry.num_requests
        failures += entry.num_failures
        metric = f"{request_type}/{name}"
        p99 = entry.get_response_time_percentile(0.99) if entry.num_requests else 0
        limit = next((each for each in limits if each.matches(request_type, name)), None)
        mark = ""
        if limit is not None and entry.num_requests:
            judged.add(limit)
            ok = p99 <= limit.max_ms
            mark = f"p99 <= {limit.max_ms:g} ms {'PASS' if ok else 'FAIL'}"
            if not ok:
                failed.append(f"{metric} p99 {p99} ms > {limit.max_ms:g} ms")
        p50 = entry.get_response_time_percentile(0.5) if entry.num_requests else 0
        lines.append(f"{metric:<32} {entry.num_requests:>8} {entry.num_failures:>6} {p50:>8} {p99:>8}  {mark}".rstrip())
    lines += [f"(no samples for {each.request_type}/{each.name}: not judged)" for each in limits if each not in judged]
    error_rate = failures / operations if operations else 0.0
    if operations == 0:
        failed.append("no operation completed (is the gateway reachable?)")
    if error_rate > max_error_rate:
        failed.append(f"error rate {error_rate:.4f} ({failures} of {operations}) > {max_error_rate:g}")
    lines.append(f"error rate {error_rate:.4f} ({failures} failures / {operations} operations), max {max_error_rate:g}")
    lines.append("PASS" if not failed else "FAIL: " + "; ".join(failed))
    return not failed, lines


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument(
        "--max-error-rate",
        type=float,
        env_var="ICWS_MAX_ERROR_RATE",
        default=0.0,
        help="fail the campaign when failures / operations exceeds this (default 0: any failure fails)",
    )
    parser.add_argument(
        "--max-p99",
        type=str,
        env_var="ICWS_MAX_P99",
        default=DEFAULT_MAX_P99,
        help=f"TYPE/NAME=MS,... 99th-percentile limits in milliseconds, NAME may be * (default {DEFAULT_MAX_P99})",
    )


@events.init.add_listener
def _check_options(environment: Environment, **_: Any) -> None:
    # A typo in a threshold must stop the campaign before it runs, not after.
    if environment.parsed_options is not None:
        parse_p99_limits(environment.parsed_options.max_p99)


#: The summary of the judged campaign, printed at the very end, after Locust's own tables.
_summary: list[str] = []


@events.quitting.add_listener
def _judge(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner) or runner is None or environment.parsed_options is None:
        return
    options = environment.parsed_options
    passed, lines = verdict(environment.stats, options.max_error_rate, parse_p99_limits(options.max_p99))
    if runner.exceptions:
        # Setting the exit code below overrides Locust's own failure for a crashed user: carry it over.
        crashes = sum(each["count"] for each in runner.exceptions.values())
        lines[-1] = ("FAIL: " if passed else lines[-1] + "; ") + f"{crashes} exceptions in users (see the report above)"
        passed = False
    _summary[:] = ["", "icws campaign summary", *lines]
    environment.process_exit_code = 0 if passed else 1


@events.quit.add_listener
def _print_summary(**_: Any) -> None:
    if _summary:
        print("\n".join(_summary), flush=True)
