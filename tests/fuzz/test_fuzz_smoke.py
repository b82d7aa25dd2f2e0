"""Each fuzz target fuzzed for a short while (``ICWS_FUZZ_SECONDS``, default 20 s), two at a time.

One run of ``python -m fuzz.run`` covers every target, and each target's result is its
own test: it must have run, found coverage, and found no crash that is not already kept
as a known regression (a new one is written to ``fuzz/regressions/<target>/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fuzz import harness

pytestmark = pytest.mark.slow  # starts fuzzing processes; once per `make test` is enough

_SECONDS = int(os.environ.get("ICWS_FUZZ_SECONDS", "20"))
_JOBS = int(os.environ.get("ICWS_FUZZ_JOBS", "2"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("ICWS_FAST_REQUIRE_EXT"):
            pytest.fail("atheris is not installed: `pip install -e '.[fuzz]'` (make does it)")
        pytest.skip("atheris is not installed (pip install -e '.[fuzz]')")
    work = tmp_path_factory.mktemp("fuzz")
    out = work / "results.json"
    command = [sys.executable, "-m", "fuzz.run", "--seconds", str(_SECONDS), "--jobs", str(_JOBS)]
    command += ["--work-dir", str(work), "--json", str(out)]
    proc = subprocess.run(command, cwd=harness.FUZZ_DIR.parent, capture_output=True, text=True, check=False)
    if not out.exists():
        pytest.fail(f"fuzz.run wrote no results (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return {r["target"]: r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("name", harness.TARGETS)
def test_target_fuzzes_without_new_crashes(results: dict[str, dict[str, Any]], name: str) -> None:
    result = results[name]
    log = Path(result["log"]).read_text(errors="replace")[-3000:]
    assert result["exit_code"] == 0, f"libFuzzer stopped {name} early (exit {result['exit_code']}):\n{log}"
    assert not result["new_crashes"], f"{name} found new crashes: {result['new_crashes']}\n{log}"
    assert result["runs"] > 20 and result["cov"] > 0, f"{name} barely ran: {result}\n{log}"
