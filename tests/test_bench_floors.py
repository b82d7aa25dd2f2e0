"""The ratio guard (``benchmarks/floors.py``): its verdicts on made-up runs, and the real twin benchmarks' coverage.

The made-up runs are pytest-benchmark JSON documents with chosen times, so every verdict is known in advance;
no test here times anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import floors
from benchmarks.conftest import called_twins, twin_split
from icws_fast.gateway import fanout
from icws_fast.ic import hashtree
from tests.processes import REPO

DECODE = "test_cbor.py::test_decode[signed call envelope]"
SPLICE = "test_fanout.py::test_splice"


def _bench(pair: str, impl: str, time: float, twins: list[str]) -> dict[str, Any]:
    # The guard reads the fastest round (stats.min); a median twice as long shows it does not read that.
    return {
        "fullname": f"benchmarks/{pair}[{impl}]",
        "extra_info": {"impl": impl, "pair": pair, "twins": twins if impl == "pure" else []},
        "stats": {"min": time, "median": time * (2 if impl == "pure" else 1)},
    }


def _run(speedups: dict[str, float], twins: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A pytest-benchmark document whose pairs have these pure/compiled ratios (compiled time 1 µs)."""
    twins = twins or {}
    benchmarks = []
    for pair, ratio in speedups.items():
        benchmarks += [_bench(pair, "pure", ratio * 1e-6, twins.get(pair, [])), _bench(pair, "compiled", 1e-6, [])]
    return {"machine_info": {"loadavg": 1.5}, "benchmarks": benchmarks}


def _floor(floor: float, noise: float) -> dict[str, Any]:
    return {"floor": floor, "noise": noise, "measured": floor, "note": "made up"}


CAPACITY_FLOOR = {"numerator": "/bare/cpu_us", "denominator": "/gateway/cpu_us", **_floor(0.5, 0.2)}
FLOORS = {
    "about": "test floors",
    "speedups": {DECODE: _floor(10.0, 0.2), SPLICE: _floor(4.0, 0.1)},
    "capacity": {"bare/gateway CPU per message": CAPACITY_FLOOR},
}
TWINS = {DECODE: ["_cbor.decode"], SPLICE: ["_fanout.encode_frames"]}


@pytest.fixture
def fake_ext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``_ext`` folder whose compiled twins are ``_cbor.decode`` and ``_fanout.encode_frames`` (TWINS)."""
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "_cbor.pyx").write_text("cdef _helper():\n    pass\n\ndef decode(data):\n    pass\n")
    (ext / "_fanout.pyx").write_text("def encode_frames(keys, contents, suffix):\n    pass\n")
    monkeypatch.setattr(floors, "EXT_DIR", ext)


def _write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def _main(tmp_path: Path, run: Any, capacity: Any = None, floor_doc: Any = FLOORS, *extra: str) -> int:
    args = ["--floors", str(_write(tmp_path, "floors.json", floor_doc)), "check"]
    args += ["--results", str(_write(tmp_path, "run.json", run))]
    if capacity is not None:
        args += ["--capacity", str(_write(tmp_path, "capacity.json", capacity))]
    return floors.main([*args, *extra])


def _check(run: dict[str, Any], twins: list[str], capacity: Any = ()) -> tuple[list[floors.Row], list[str]]:
    parsed = floors.parse_floors(FLOORS, Path("floors.json"))
    return floors.check(parsed, floors.twin_run(run, Path("run.json")), capacity, twins)


def test_all_above_floor_passes(fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = _main(
        tmp_path, _run({DECODE: 12.0, SPLICE: 4.0}, TWINS), {"bare": {"cpu_us": 9}, "gateway": {"cpu_us": 12}}
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "ratio guard: 3 ratios at or above their floors" in out
    assert "0.75" in out  # the capacity ratio 9/12


def test_a_ratio_below_its_floor_by_more_than_the_noise_fails_naming_it(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(tmp_path, _run({DECODE: 7.0, SPLICE: 4.5}, TWINS)) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(floors.BELOW))
    assert row.split()[2:5] == ["7.00", "10.00", "8.00"]  # now, floor, allowed = floor * (1 - 0.2)
    assert DECODE in row
    assert f"speed-up {DECODE}: BELOW FLOOR, 30% below its floor, 20% allowed" in out
    assert "ratio guard FAILED (1)" in out


def test_a_drop_within_the_noise_allowance_passes(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 8.01 is 19.9 % under the floor of 10 (allowance 20 %); 3.61 is 9.75 % under 4 (allowance 10 %).
    assert _main(tmp_path, _run({DECODE: 8.01, SPLICE: 3.61}, TWINS)) == 0
    out = capsys.readouterr().out
    assert out.count(floors.WITHIN_NOISE) == 2
    assert _main(tmp_path, _run({DECODE: 8.01, SPLICE: 3.59}, TWINS)) == 1  # 10.25 % under: beyond it
    assert f"{SPLICE}: BELOW FLOOR" in capsys.readouterr().out


def test_a_ratio_fails_only_when_no_run_reaches_its_floor(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floor_path = str(_write(tmp_path, "floors.json", FLOORS))
    slowed = str(_write(tmp_path, "slowed.json", _run({DECODE: 6.0, SPLICE: 4.0}, TWINS)))
    again = str(_write(tmp_path, "again.json", _run({DECODE: 11.0, SPLICE: 3.0}, TWINS)))
    assert floors.main(["--floors", floor_path, "check", "--results", slowed, again]) == 0
    rows = {line.split("  ")[-1].strip(): line.split()[1] for line in capsys.readouterr().out.splitlines()[1:3]}
    assert rows == {f"speed-up {DECODE}": "11.00", f"speed-up {SPLICE}": "4.00"}  # each pair's best run
    still = str(_write(tmp_path, "still.json", _run({DECODE: 7.0, SPLICE: 4.0}, TWINS)))
    assert floors.main(["--floors", floor_path, "check", "--results", slowed, still]) == 1
    assert f"speed-up {DECODE}: BELOW FLOOR, 30% below its floor" in capsys.readouterr().out


def test_a_floor_with_no_benchmark_in_the_run_fails(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(tmp_path, _run({DECODE: 12.0}, TWINS)) == 1
    out = capsys.readouterr().out
    assert f"speed-up {SPLICE}: MISSING, not in the results: renamed, removed or deselected?" in out


def test_a_pair_with_one_side_is_missing() -> None:
    run = _run({DECODE: 12.0, SPLICE: 4.0}, TWINS)
    run["benchmarks"] = [
        b for b in run["benchmarks"] if (b["extra_info"]["pair"], b["extra_info"]["impl"]) != (SPLICE, "compiled")
    ]
    _, problems = _check(run, ["_cbor.decode"])
    assert problems == [f"speed-up {SPLICE}: MISSING, only its pure side ran"]


def test_a_twin_no_guarded_pair_calls_fails() -> None:
    run = _run(
        {DECODE: 12.0, SPLICE: 4.0, "test_new.py::test_unguarded": 3.0},
        {**TWINS, "test_new.py::test_unguarded": ["_hashtree.fork_hash"]},
    )
    rows, problems = _check(run, ["_cbor.decode", "_fanout.encode_frames", "_hashtree.fork_hash"])
    # The pair runs, but without a floor it guards nothing: the twin it calls is not covered.
    assert [row.status for row in rows if row.name == "test_new.py::test_unguarded"] == [floors.NO_FLOOR]
    assert len(problems) == 1
    assert problems[0].startswith("compiled twin _hashtree.fork_hash has no guarded benchmark pair")


def test_a_compiled_side_running_the_pure_twin_fails() -> None:
    run = _run({DECODE: 1.0, SPLICE: 4.0}, TWINS)
    for bench in run["benchmarks"]:
        bench["extra_info"]["twins"] = TWINS[bench["extra_info"]["pair"]]
    _, problems = _check(run, ["_cbor.decode", "_fanout.encode_frames"])
    assert f"{DECODE}: its compiled side calls the pure _cbor.decode: the pair does not compare the twins" in problems


def test_a_pure_run_is_refused() -> None:
    run = _run({DECODE: 12.0}, TWINS)
    run["benchmarks"] = [b for b in run["benchmarks"] if b["extra_info"]["impl"] == "pure"]
    _, problems = _check(run, ["_cbor.decode"])
    assert problems[0].startswith("the run has no compiled benchmark: it ran pure")


def test_absent_capacity_results_are_skipped_saying_so(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-capacity.json"
    status = _main(tmp_path, _run({DECODE: 12.0, SPLICE: 4.0}, TWINS), None, FLOORS, "--capacity", str(missing))
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"gateway/bare capacity ratios skipped: no capacity results at {missing}" in out
    assert "skipped" in next(line for line in out.splitlines() if "bare/gateway CPU per message" in line)


def test_capacity_ratio_below_floor_and_missing_figure(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run({DECODE: 12.0, SPLICE: 4.0}, TWINS)
    assert _main(tmp_path, run, {"bare": {"cpu_us": 9}, "gateway": {"cpu_us": 30}}) == 1  # 0.3 < 0.5 * 0.8
    assert "capacity bare/gateway CPU per message: BELOW FLOOR, 40% below its floor" in capsys.readouterr().out
    assert _main(tmp_path, run, {"bare": {"cpu_us": 9}}) == 1
    assert "MISSING, the capacity results lack /gateway/cpu_us (no 'gateway' there)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("floor_doc", "message"),
    [
        ({"speedups": {DECODE: {"floor": "ten", "noise": 0.1, "measured": 10}}}, "'floor' must be a finite number"),
        ({"speedups": {DECODE: _floor(10, 1.5)}}, "needs floor > 0 and 0 <= noise < 1"),
        ({"capacity": {"c": {**CAPACITY_FLOOR, "numerator": "bare"}}}, "'numerator' must be a JSON pointer"),
        ([1, 2], "expected an object with 'speedups' and 'capacity' objects"),
    ],
)
def test_a_bad_floors_file_is_a_clear_error(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], floor_doc: Any, message: str
) -> None:
    assert _main(tmp_path, _run({DECODE: 12.0}), None, floor_doc) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ratio guard: {tmp_path / 'floors.json'}")
    assert message in err


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ("{not json", "benchmark results at {run} is not readable JSON"),
        ({"results": []}, "{run} is not a pytest-benchmark JSON file (--benchmark-json): no 'benchmarks' list"),
    ],
)
def test_unusable_results_are_a_clear_error(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], results: Any, message: str
) -> None:
    assert _main(tmp_path, results) == 2
    assert message.format(run=tmp_path / "run.json") in capsys.readouterr().err


def test_missing_results_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "floors.json", FLOORS)
    assert floors.main(["--floors", str(path), "check", "--results", str(tmp_path / "none.json")]) == 2
    assert f"ratio guard: benchmark results not found: {tmp_path / 'none.json'}" in capsys.readouterr().err


def test_calibrate_sets_floor_at_the_median_and_noise_from_the_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [_write(tmp_path, f"run{i}.json", _run({DECODE: r, SPLICE: 4.0})) for i, r in enumerate((9, 10, 11, 7.0))]
    # Two samples of three quick runs each (as the guard takes them): medians 0.5 and 0.4 (gateway 10 and 12.5 us).
    capacity = [
        str(_write(tmp_path, f"cap{i}.json", {"bare": {"cpu_us": 5}, "gateway": {"cpu_us": g}}))
        for i, g in enumerate((10, 10, 30, 12.5, 12.5, 5))
    ]
    floor_path = _write(tmp_path, "floors.json", FLOORS)
    argv = ["--floors", str(floor_path), "calibrate", *map(str, runs), "--write"]
    argv += ["--capacity", *capacity[:3], "--capacity", *capacity[3:]]
    assert floors.main(argv) == 0
    written = json.loads(floor_path.read_text())
    decode = written["speedups"][DECODE]
    # Median 9.5; the lowest run is 26.3 % below it: allowance 2 x 26.3 % = 52.6 %, rounded up to 53 %.
    assert (decode["floor"], decode["measured"], decode["noise"]) == (9.5, 9.5, 0.53)
    assert "4 runs gave 7.00-11.00" in decode["note"] and "1-min load 1.5-1.5" in decode["note"]
    assert written["speedups"][SPLICE]["noise"] == floors.MIN_NOISE  # no spread: the minimum allowance
    cap = written["capacity"]["bare/gateway CPU per message"]
    # Median of the samples 0.45, the lower one 11.1 % below it: 22.3 %, under the minimum allowance.
    assert (cap["numerator"], cap["floor"], cap["noise"]) == ("/bare/cpu_us", 0.45, floors.MIN_NOISE)
    assert cap["note"].startswith("median of 3 capacity quick runs")
    assert written["about"] == "test floors"
    assert f"lowered: {DECODE}: 10.0 -> 9.5" in capsys.readouterr().err


def test_json_pointers_follow_rfc_6901() -> None:
    doc = {"points": [{"a/b": {"m~n": 3}}]}
    assert floors.resolve(doc, "/points/0/a~1b/m~0n") == 3
    with pytest.raises(KeyError, match="no '1' there"):
        floors.resolve(doc, "/points/1")


@pytest.mark.parametrize(
    ("nodeid", "split"),
    [
        ("benchmarks/test_fanout.py::test_splice[pure]", ("pure", "test_fanout.py::test_splice")),
        (
            "benchmarks/test_cbor.py::test_decode[compiled-50-message ws batch witness]",
            ("compiled", "test_cbor.py::test_decode[50-message ws batch witness]"),
        ),
        ("benchmarks/test_x.py::test_y[a-pure-b]", ("pure", "test_x.py::test_y[a-b]")),
        ("benchmarks/test_fanout.py::test_generic_cbor_per_message", None),
        ("benchmarks/test_x.py::test_y[pure-compiled]", None),
        ("benchmarks/test_x.py::test_y[purely]", None),
    ],
)
def test_twin_benchmarks_are_told_by_their_ids(nodeid: str, split: tuple[str, str] | None) -> None:
    assert twin_split(nodeid) == split


def test_only_twins_called_from_outside_a_twin_count() -> None:
    suffix = fanout.batch_suffix_pure(b"cert", b"tree")

    def batch() -> None:
        fanout.encode_frames_pure([b"k"], [b"c"], suffix)  # calls encode_message_pure inside
        hashtree.leaf_hash_pure(b"x")

    assert called_twins(batch) == ["_fanout.encode_frames", "_hashtree.leaf_hash"]


@pytest.mark.slow
def test_every_compiled_twin_has_a_guarded_benchmark_pair(tmp_path: Path) -> None:
    """The twin benchmarks, run once each (their times are not looked at), cover every compiled twin with a
    floored pair, and every floor has its pair: what ``make bench-guard`` then times."""
    if os.environ.get("ICWS_FAST_PURE", "") not in ("", "0"):
        pytest.skip("pure mode (ICWS_FAST_PURE=1): no compiled side to pair")
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "pytest", "benchmarks", "-m", "twin", "-q", "-p", "no:cacheprovider"]
    command += ["--benchmark-only", "--benchmark-enable", "--benchmark-max-time=0", "--benchmark-min-rounds=1"]
    done = subprocess.run(
        [*command, f"--benchmark-json={results}"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    committed = floors.load_floors()
    run = floors.twin_run(json.loads(results.read_text()), results)
    assert floors.structure_problems(committed, run, floors.compiled_twins()) == []
    assert sorted(set(committed.speedups) - set(run.speedups)) == []  # every floor's pair ran, both sides


def test_a_capacity_ratio_can_invert_a_cost_ratio() -> None:
    entry = {"numerator": 1, "denominator": "/points/0/ratios/gateway/cpu_per_msg", **_floor(0.3, 0.2)}
    floor = floors.parse_floors({"capacity": {"bare/gateway": entry}}, Path("floors.json")).capacity["bare/gateway"]
    assert floors.capacity_ratio([{"points": [{"ratios": {"gateway": {"cpu_per_msg": 2.5}}}]}], floor) == 0.4
    with pytest.raises(ValueError, match="/points/0/ratios/gateway/cpu_per_msg is 0, not a positive number"):
        floors.capacity_ratio([{"points": [{"ratios": {"gateway": {"cpu_per_msg": 0}}}]}], floor)


def test_the_capacity_ratio_of_several_quick_runs_is_their_median(
    fake_ext: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [
        str(_write(tmp_path, f"cap{i}.json", {"bare": {"cpu_us": 5}, "gateway": {"cpu_us": g}}))
        for i, g in enumerate((8, 40, 9))  # 0.625, 0.125 (a run disturbed), 0.556
    ]
    status = _main(tmp_path, _run({DECODE: 12.0, SPLICE: 4.0}, TWINS), None, FLOORS, "--capacity", *paths)
    out = capsys.readouterr().out
    assert status == 0, out
    row = next(line for line in out.splitlines() if "bare/gateway CPU per message" in line)
    assert row.split()[:2] == ["ok", "0.56"] and row.endswith("(median of 3 runs)")
    assert _main(tmp_path, _run({DECODE: 12.0, SPLICE: 4.0}, TWINS), None, FLOORS, "--capacity", *paths[:2]) == 1
    assert "BELOW FLOOR, 25% below its floor, 20% allowed, median of 2 runs" in capsys.readouterr().out


def test_calibrate_refuses_a_ratio_too_noisy_to_guard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_write(tmp_path, f"run{i}.json", _run({DECODE: r, SPLICE: 4.0})) for i, r in enumerate((10, 10, 4))]
    floor_path = _write(tmp_path, "floors.json", FLOORS)
    before = floor_path.read_text()
    assert floors.main(["--floors", str(floor_path), "calibrate", *map(str, runs), "--write"]) == 2
    err = capsys.readouterr().err
    assert f"{DECODE}: 3 runs gave 4.00-10.00, a drop of 60% below their median: too noisy to guard" in err
    assert floor_path.read_text() == before
