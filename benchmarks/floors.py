"""The ratio guard: benchmark *ratios* checked against the floors committed in ``benchmarks/floors.json``.

Absolute times depend on the machine and on whatever else runs on it; a ratio of two costs measured in one run
does much less. Two kinds are guarded, both "higher is better":

* **compiled speed-ups**: pure / compiled time of each twin pair of a pytest-benchmark run (``--benchmark-json``;
  ``benchmarks/conftest.py`` marks the pairs, keyed like ``test_cbor.py::test_decode[signed call envelope]``),
  each side's fastest round (``stats.min``): other jobs on the machine slow rounds down, never speed them up, and
  over 14 guard runs at load 5-11 the ratios of minimums strayed half as far below their median as those of
  medians (10 % against 17 % at worst);
* **capacity ratios**: figures of the gateway-bound quick run's JSON (``benchmarks/e2e/bench_capacity.py
  --quick --json``), each floor naming its numerator and denominator by JSON pointer (RFC 6901) or as a number,
  e.g. 1 / (gateway CPU per message / the bare picows server's); with several quick runs, their median.

A ratio fails when it is below its floor by more than its noise allowance (``floor * (1 - noise)``); so does a
floor with no result in the run, a pair whose compiled side runs the pure twin, a run with no compiled side, and
a compiled twin (a public function of ``icws_fast/_ext/*.pyx``) that no guarded pair benchmarks. Capacity floors
are skipped, saying so, when no capacity results are given.

Check: ``python -m benchmarks.floors check --results RUN.json [--capacity QUICK1.json ...]`` (``make bench-guard``).
Given several ``--results`` runs, each pair counts with its best ratio: ``make bench-guard`` measures again when
a ratio fails, so that a slow-down must show twice to fail the guard.
Recalibrate from several runs (the noise is their observed spread):
``python -m benchmarks.floors calibrate RUN1.json RUN2.json ... [--capacity QUICK.json ... --capacity ...] --write``
(``make floors``; each ``--capacity`` is one sample); it prints every floor it lowers or drops.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ROOT / "benchmarks" / "floors.json"
EXT_DIR = ROOT / "icws_fast" / "_ext"

# Calibration: a ratio may fall this many times the largest drop below the median seen over the calibration runs
# (a few runs show less than the tail), and never less than MIN_NOISE: a ratio that hardly moved in back-to-back
# runs still moves between machines' states. Fresh-clone CI runs of unchanged code on 2026-12-02 put
# test_lookup_vector_trees 35-38 % below a floor whose 8 calibration runs had strayed 4 % (its compiled side's
# fastest round 54 µs in one run, 85 µs in the next), and five more pairs 19-25 % below, in both the run and its
# re-measure. A twin whose compiled side runs the pure code fails on its own check, whatever the allowance.
NOISE_FACTOR = 2.0
MIN_NOISE = 0.40

# The statistic of each side of a twin pair (pytest-benchmark's stats): its fastest round.
STAT = "min"

# A row's status; BELOW and MISSING fail the guard.
OK = "ok"
WITHIN_NOISE = "ok (noise)"
BELOW = "BELOW FLOOR"
MISSING = "MISSING"
NO_FLOOR = "no floor"
SKIPPED = "skipped"
FAILING = (BELOW, MISSING)


class GuardError(Exception):
    """An input the guard cannot use (unreadable file, wrong shape): exit status 2, the message says which."""


@dataclass(frozen=True)
class Floor:
    """One committed floor: ``ratio`` passes while it is at least ``floor * (1 - noise)``."""

    floor: float
    noise: float
    measured: float
    note: str

    @property
    def allowed(self) -> float:
        return self.floor * (1 - self.noise)


@dataclass(frozen=True)
class CapacityFloor(Floor):
    """A capacity floor: its ratio is ``numerator`` over ``denominator``, each a JSON pointer into the capacity
    results or a number (``1`` over the pointer to a gateway/bare cost ratio: the bare/gateway one)."""

    numerator: str | float
    denominator: str | float


@dataclass(frozen=True)
class Floors:
    """``benchmarks/floors.json``: speed-up floors keyed by twin pair, capacity floors keyed by name."""

    about: str
    speedups: dict[str, Floor]
    capacity: dict[str, CapacityFloor]


@dataclass(frozen=True)
class Row:
    """One line of the guard's table."""

    kind: str  # "speed-up" or "capacity"
    name: str
    value: float | None
    floor: Floor | None
    status: str
    detail: str = ""


# --- reading the inputs ------------------------------------------------------------------------------------------


def read_json(path: Path, what: str) -> Any:
    """The JSON document at ``path``; a GuardError naming ``what`` it should hold when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GuardError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GuardError(f"{what} at {path} is not readable JSON: {exc}") from None


def _number(entry: Mapping[str, Any], field: str, where: str) -> float:
    value = entry.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GuardError(f"{where}: '{field}' must be a finite number, not {value!r}")
    return float(value)


def _floor_fields(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise GuardError(f"{where}: a floor is an object, not {entry!r}")
    fields: dict[str, Any] = {f: _number(entry, f, where) for f in ("floor", "noise", "measured")}
    if fields["floor"] <= 0 or not 0 <= fields["noise"] < 1:
        raise GuardError(f"{where}: needs floor > 0 and 0 <= noise < 1, has {fields['floor']} and {fields['noise']}")
    fields["note"] = str(entry.get("note", ""))
    return fields


def parse_floors(doc: Any, source: Path) -> Floors:
    """The floors of a ``floors.json`` document; a GuardError naming the bad entry otherwise."""
    if not isinstance(doc, dict) or not isinstance(doc.get("speedups", {}), dict):
        raise GuardError(f"{source}: expected an object with 'speedups' and 'capacity' objects")
    capacity_doc = doc.get("capacity", {})
    if not isinstance(capacity_doc, dict):
        raise GuardError(f"{source}: 'capacity' must be an object")
    speedups = {
        pair: Floor(**_floor_fields(entry, f"{source}: speedups[{pair!r}]"))
        for pair, entry in doc.get("speedups", {}).items()
    }
    capacity = {}
    for name, entry in capacity_doc.items():
        where = f"{source}: capacity[{name!r}]"
        fields = _floor_fields(entry, where)
        for field in ("numerator", "denominator"):
            operand = entry.get(field)
            if isinstance(operand, int | float) and not isinstance(operand, bool) and operand > 0:
                operand = float(operand)
            elif not isinstance(operand, str) or not operand.startswith("/"):
                raise GuardError(
                    f"{where}: '{field}' must be a JSON pointer such as '/points/0/ratios/gateway/cpu_per_msg'"
                    f" or a positive number, not {operand!r}"
                )
            fields[field] = operand
        capacity[name] = CapacityFloor(**fields)
    return Floors(str(doc.get("about", "")), speedups, capacity)


def load_floors(path: Path = FLOORS) -> Floors:
    return parse_floors(read_json(path, "floors file"), path)


def resolve(doc: Any, pointer: str) -> Any:
    """The value at JSON pointer ``pointer`` (RFC 6901) in ``doc``; a KeyError naming the missing step."""
    value = doc
    for token in pointer.split("/")[1:]:
        step = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise KeyError(f"{pointer} (no {step!r} there)")
    return value


@dataclass(frozen=True)
class TwinRun:
    """The twin pairs of one pytest-benchmark run."""

    speedups: dict[str, float]  # pair -> pure time / compiled time (STAT), for pairs with both sides
    twins: dict[str, set[str]]  # pair -> the pure twins its pure side calls
    one_sided: dict[str, str]  # pair -> the only side the run has
    mispaired: dict[str, list[str]]  # pair -> pure twins its compiled side calls although its pure side does too


def twin_run(results: Any, source: Path) -> TwinRun:
    """The pairs of a ``--benchmark-json`` document (see ``benchmarks/conftest.py`` for their ``extra_info``)."""
    benchmarks = results.get("benchmarks") if isinstance(results, dict) else None
    if not isinstance(benchmarks, list):
        raise GuardError(f"{source} is not a pytest-benchmark JSON file (--benchmark-json): no 'benchmarks' list")
    sides: dict[str, dict[str, tuple[float, set[str]]]] = {}
    for bench in benchmarks:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        if not isinstance(info, dict) or info.get("impl") not in ("pure", "compiled"):
            continue  # not a twin benchmark
        impl, pair, called = info["impl"], str(info.get("pair")), info.get("twins", [])
        try:
            time = float(bench["stats"][STAT])
        except (KeyError, TypeError, ValueError):
            raise GuardError(f"{source}: benchmark {bench.get('fullname', pair)!r} has no stats.{STAT}") from None
        sides.setdefault(pair, {})[impl] = (time, set(called) if isinstance(called, list) else set())
    speedups, twins, one_sided, mispaired = {}, {}, {}, {}
    for pair, found in sides.items():
        if len(found) == 1:
            one_sided[pair] = next(iter(found))
            continue
        (pure, pure_twins), (compiled, compiled_twins) = found["pure"], found["compiled"]
        if compiled <= 0:
            raise GuardError(f"{source}: the compiled side of {pair!r} has {STAT} time {compiled}")
        speedups[pair] = pure / compiled
        twins[pair] = pure_twins
        if pure_twins & compiled_twins:
            mispaired[pair] = sorted(pure_twins & compiled_twins)
    return TwinRun(speedups, twins, one_sided, mispaired)


def best_of(runs: Sequence[TwinRun]) -> TwinRun:
    """One run of several: each pair with its best ratio, and what any of them shows of pairing and coverage."""
    speedups: dict[str, float] = {}
    twins: dict[str, set[str]] = {}
    one_sided: dict[str, str] = {}
    mispaired: dict[str, list[str]] = {}
    for run in runs:
        for pair, ratio in run.speedups.items():
            speedups[pair] = max(ratio, speedups.get(pair, ratio))
            twins[pair] = twins.get(pair, set()) | run.twins[pair]
        one_sided.update(run.one_sided)
        mispaired.update(run.mispaired)
    return TwinRun(speedups, twins, {p: side for p, side in one_sided.items() if p not in speedups}, mispaired)


def compiled_twins() -> list[str]:
    """Every compiled twin, ``"<module>.<name>"``: the public ``def`` s of ``EXT_DIR/*.pyx`` (the functions
    ``icws_fast._ext.twin`` binds; ``tests/test_ext_stubs.py`` holds the two lists equal)."""
    return sorted(
        f"{pyx.stem}.{name}"
        for pyx in EXT_DIR.glob("*.pyx")
        for name in re.findall(r"^def ([a-z]\w*)\(", pyx.read_text(), re.MULTILINE)
    )


def capacity_ratio(docs: Sequence[Any], floor: CapacityFloor) -> float:
    """``floor``'s ratio in the capacity results ``docs`` (one per quick run: the median of theirs);
    a KeyError or ValueError saying what is wrong."""
    ratios = []
    for doc in docs:
        values = []
        for operand in (floor.numerator, floor.denominator):
            value = resolve(doc, operand) if isinstance(operand, str) else operand
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{operand} is {value!r}, not a positive number")
            values.append(float(value))
        ratios.append(values[0] / values[1])
    return statistics.median(ratios)


# --- checking ----------------------------------------------------------------------------------------------------


def _judge(kind: str, name: str, value: float, floor: Floor) -> Row:
    if value >= floor.floor:
        return Row(kind, name, value, floor, OK)
    if value >= floor.allowed:
        return Row(kind, name, value, floor, WITHIN_NOISE)
    drop = 1 - value / floor.floor
    return Row(kind, name, value, floor, BELOW, f"{drop:.0%} below its floor, {floor.noise:.0%} allowed")


def structure_problems(floors: Floors, run: TwinRun, twins: Sequence[str]) -> list[str]:
    """What makes ``run`` unfit to guard ``twins`` whatever its times: a pure run, a compiled side that runs the
    pure twin, a twin no pair with a floor benchmarks (floors without a pair are MISSING rows of :func:`check`)."""
    problems = []
    if not run.speedups and run.one_sided and set(run.one_sided.values()) == {"pure"}:
        problems.append(
            "the run has no compiled benchmark: it ran pure (ICWS_FAST_PURE=1, or the extensions are not built);"
            " run `make ext` and the guard with ICWS_FAST_REQUIRE_EXT=1"
        )
    for pair, called in sorted(run.mispaired.items()):
        problems.append(
            f"{pair}: its compiled side calls the pure {', '.join(called)}: the pair does not compare the twins"
        )
    guarded = set().union(*(run.twins[pair] for pair in floors.speedups if pair in run.speedups))
    problems += [
        f"compiled twin {twin} has no guarded benchmark pair: benchmark it parametrized with ids 'pure' and"
        " 'compiled' (benchmarks/conftest.py) and give the pair a floor in benchmarks/floors.json"
        for twin in twins
        if twin not in guarded
    ]
    return problems


def check(floors: Floors, run: TwinRun, capacity: Sequence[Any], twins: Sequence[str]) -> tuple[list[Row], list[str]]:
    """The table rows and the failures (each a sentence) of ``run`` and the ``capacity`` results of the quick
    runs that go with it (none: not measured)."""
    rows: list[Row] = []
    for pair, floor in sorted(floors.speedups.items()):
        if pair in run.speedups:
            rows.append(_judge("speed-up", pair, run.speedups[pair], floor))
        else:
            side = run.one_sided.get(pair)
            detail = f"only its {side} side ran" if side else "not in the results: renamed, removed or deselected?"
            rows.append(Row("speed-up", pair, None, floor, MISSING, detail))
    for pair in sorted(set(run.speedups) - set(floors.speedups)):
        rows.append(Row("speed-up", pair, run.speedups[pair], None, NO_FLOOR, "unguarded: add its floor"))
    for name, floor in sorted(floors.capacity.items()):
        if not capacity:
            rows.append(Row("capacity", name, None, floor, SKIPPED, "no capacity results"))
            continue
        try:
            row = _judge("capacity", name, capacity_ratio(capacity, floor), floor)
            median = f"median of {len(capacity)} runs" if len(capacity) > 1 else ""
            rows.append(replace(row, detail=", ".join(part for part in (row.detail, median) if part)))
        except KeyError as exc:
            rows.append(Row("capacity", name, None, floor, MISSING, f"the capacity results lack {exc.args[0]}"))
        except ValueError as exc:
            rows.append(Row("capacity", name, None, floor, MISSING, f"in the capacity results, {exc}"))
    problems = structure_problems(floors, run, twins)
    problems += [f"{row.kind} {row.name}: {row.status}, {row.detail}" for row in rows if row.status in FAILING]
    return rows, problems


def render(rows: Iterable[Row]) -> str:
    """The table: status, ratio now, floor, lowest value allowed, what is measured."""

    def cell(value: float | None) -> str:
        return f"{value:8.2f}" if value is not None else f"{'-':>8}"

    lines = [f"{'status':<12} {'now':>8} {'floor':>8} {'allowed':>8}  ratio"]
    for row in rows:
        floor, allowed = (row.floor.floor, row.floor.allowed) if row.floor else (None, None)
        detail = f"  ({row.detail})" if row.detail else ""
        lines.append(f"{row.status:<12} {cell(row.value)} {cell(floor)} {cell(allowed)}  {row.kind} {row.name}{detail}")
    return "\n".join(lines)


# --- calibrating -------------------------------------------------------------------------------------------------


def _calibrated(name: str, values: Sequence[float], note: str, unit: str = "runs") -> dict[str, Any]:
    """A floor at the median of ``values`` with the noise allowance their spread calls for; a GuardError when
    that allowance would reach 100 % (the ratio cannot be guarded as it is measured)."""
    median = statistics.median(values)
    drop = (median - min(values)) / median
    noise = math.ceil(max(MIN_NOISE, NOISE_FACTOR * drop) * 100) / 100
    spread = f"{min(values):.2f}-{max(values):.2f}"
    if noise >= 1:
        raise GuardError(
            f"{name}: {len(values)} {unit} gave {spread}, a drop of {drop:.0%} below their median: too noisy to"
            " guard; measure it longer (or calibrate on a quieter machine)"
        )
    return {
        "floor": round(median, 2),
        "noise": noise,
        "measured": round(median, 3),
        "note": f"{note}; {len(values)} {unit} gave {spread} (largest drop below the median {drop:.1%})",
    }


def _load_note(docs: Sequence[Any]) -> str:
    loads = [doc.get("machine_info", {}).get("loadavg") for doc in docs if isinstance(doc, dict)]
    loads = [load for load in loads if isinstance(load, int | float)]
    return f", 1-min load {min(loads):.1f}-{max(loads):.1f}" if loads else ""


def calibrate(runs: Sequence[Path], capacity_runs: Sequence[Sequence[Path]], previous: Floors) -> dict[str, Any]:
    """A new ``floors.json`` document: every pair the ``runs`` all measured, and the ``previous`` capacity floors
    measured again in ``capacity_runs`` (kept unchanged when there are none). Each item of ``capacity_runs`` is
    one sample, the median of its quick runs, as the guard takes it."""
    docs = [read_json(path, "benchmark results") for path in runs]
    parsed = [twin_run(doc, path) for doc, path in zip(docs, runs, strict=True)]
    pairs = set.intersection(*(set(run.speedups) for run in parsed)) if parsed else set()
    day = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    max_times = {bench["options"]["max_time"] for doc in docs for bench in doc["benchmarks"] if "options" in bench}
    max_time = "/".join(map(str, sorted(max_times)))
    micro_note = f"pure/compiled {STAT} time, `make floors` on {day} (max_time {max_time} s{_load_note(docs)})"
    speedups = {pair: _calibrated(pair, [run.speedups[pair] for run in parsed], micro_note) for pair in sorted(pairs)}
    capacity_docs = [[read_json(path, "capacity results") for path in sample] for sample in capacity_runs]
    capacity: dict[str, Any] = {}
    for name, floor in previous.capacity.items():
        entry: dict[str, Any] = {"numerator": floor.numerator, "denominator": floor.denominator}
        if capacity_docs:
            values = [capacity_ratio(sample, floor) for sample in capacity_docs]
            runs_per_sample = "/".join(sorted({str(len(sample)) for sample in capacity_docs}))
            note = f"median of {runs_per_sample} capacity quick runs, `make floors` on {day}"
            entry.update(_calibrated(name, values, note, "samples"))
        else:
            entry.update(floor=floor.floor, noise=floor.noise, measured=floor.measured, note=floor.note)
        capacity[name] = entry
    return {"about": previous.about, "speedups": speedups, "capacity": capacity}


def _lowered(previous: Floors, new: Floors) -> list[str]:
    old = {**previous.speedups, **previous.capacity}
    fresh = {**new.speedups, **new.capacity}
    return [
        f"lowered: {name}: {old[name].floor} -> {floor.floor}"
        for name, floor in sorted(fresh.items())
        if name in old and floor.floor < old[name].floor
    ] + [f"dropped: {name}" for name in sorted(set(old) - set(fresh))]


# --- command line ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--floors", type=Path, default=FLOORS, help="the floors file (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="check one run against the floors")
    check_cmd.add_argument(
        "--results", type=Path, nargs="+", required=True, help="pytest-benchmark --benchmark-json outputs (best ratio)"
    )
    check_cmd.add_argument(
        "--capacity",
        type=Path,
        nargs="+",
        default=[],
        help="capacity quick-run JSONs (the median counts; absent: skipped)",
    )
    calibrate_cmd = commands.add_parser("calibrate", help="new floors from several runs")
    calibrate_cmd.add_argument("runs", type=Path, nargs="+", help="pytest-benchmark --benchmark-json outputs")
    calibrate_cmd.add_argument(
        "--capacity", type=Path, nargs="+", action="append", default=[], help="one sample: capacity quick-run JSONs"
    )
    calibrate_cmd.add_argument("--write", action="store_true", help="write the floors file (default: print it)")
    args = parser.parse_args(argv)
    try:
        fresh = args.command == "calibrate" and not args.floors.exists()
        previous = Floors("", {}, {}) if fresh else load_floors(args.floors)
        if args.command == "calibrate":
            doc = calibrate(args.runs, args.capacity, previous)
            text = json.dumps(doc, indent=2) + "\n"
            for line in _lowered(previous, parse_floors(doc, args.floors)):
                print(line, file=sys.stderr)
            if args.write:
                args.floors.write_text(text)
                counts = f"{len(doc['speedups'])} speed-up and {len(doc['capacity'])} capacity floors"
                print(f"wrote {args.floors}: {counts}")
            else:
                print(text, end="")
            return 0
        run = best_of([twin_run(read_json(path, "benchmark results"), path) for path in args.results])
        capacity = [read_json(path, "capacity results") for path in args.capacity if path.exists()]
        rows, problems = check(previous, run, capacity, compiled_twins())
    except GuardError as exc:
        print(f"ratio guard: {exc}", file=sys.stderr)
        return 2
    print(render(rows))
    if not capacity:
        where = " ".join(map(str, args.capacity)) or "(no --capacity given)"
        print(
            f"gateway/bare capacity ratios skipped: no capacity results at {where}"
            " (the gateway-bound quick run of benchmarks/e2e writes them)"
        )
    if problems:
        print(f"\nratio guard FAILED ({len(problems)}):", *(f"  - {p}" for p in problems), sep="\n")
        print(
            "A real slow-down: find it with the benchmark side by side (both sides in one run). An intended change"
            " or a renamed benchmark: recalibrate with `make floors` and commit benchmarks/floors.json."
        )
        return 1
    print(f"\nratio guard: {sum(row.status in (OK, WITHIN_NOISE) for row in rows)} ratios at or above their floors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
