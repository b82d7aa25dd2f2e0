"""Run fuzz targets for a while each and report executions, coverage and crashes.

``python -m fuzz.run [TARGET ...] [--seconds 60] [--jobs 2]`` (no target: all of them).
Each target runs in its own process (libFuzzer ends the process when its time is up),
``--jobs`` at a time. The corpus that coverage grows is kept under ``--work-dir`` so that
later runs start where earlier ones stopped; the seeds are rebuilt from the vectors
every run. The exit status is 1 when a target found a new crash or libFuzzer stopped
early (a hang, memory exhaustion, a fatal signal).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz.harness import FUZZ_DIR, REGRESSIONS, TARGETS

_ROOT = FUZZ_DIR.parent
_STATS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_EXECS = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass
class Result:
    """What one target's run did. ``cov``/``ft`` are libFuzzer's coverage counters (edges, features)."""

    target: str
    seconds: float = 0.0
    runs: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    exit_code: int | None = None
    new_crashes: list[str] = field(default_factory=list)
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.new_crashes


def _command(target: str, seconds: int, work: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fuzz.worker",
        target,
        str(work / "seeds"),
        f"-max_total_time={seconds}",
        "-timeout=30",
        "-max_len=32768",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={REGRESSIONS / target}/",
        str(work / "corpus"),
        str(work / "seeds"),
    ]


def _result(target: str, log_path: Path, exit_code: int, seconds: float) -> Result:
    log = log_path.read_text(errors="replace")
    result = Result(target, round(seconds, 1), exit_code=exit_code, log=str(log_path))
    stats = _STATS.findall(log)
    if stats:
        result.cov, result.ft, result.corpus = (int(x) for x in stats[-1])
    done = _DONE.search(log)
    execs = _EXECS.findall(log)
    result.runs = int(done.group(1)) if done else int(execs[-1]) if execs else 0
    result.new_crashes = [line.split("NEW CRASH ", 1)[1] for line in log.splitlines() if "icws-fuzz: NEW CRASH" in line]
    return result


def run(targets: list[str], seconds: int, jobs: int, work_dir: Path) -> list[Result]:
    """Fuzz each of ``targets`` for ``seconds``, ``jobs`` processes at a time; their results in order."""
    pending = list(targets)
    running: dict[str, tuple[subprocess.Popen[bytes], Path, float]] = {}
    done: dict[str, Result] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                target = pending.pop(0)
                work = work_dir / target
                shutil.rmtree(work / "seeds", ignore_errors=True)
                (work / "corpus").mkdir(parents=True, exist_ok=True)
                (REGRESSIONS / target).mkdir(parents=True, exist_ok=True)  # libFuzzer's artifact folder
                log_path = work / "log.txt"
                with log_path.open("wb") as log:
                    proc = subprocess.Popen(_command(target, seconds, work), cwd=_ROOT, stdout=log, stderr=log)
                running[target] = (proc, log_path, time.monotonic())
            time.sleep(0.2)
            for target, (proc, log_path, started) in list(running.items()):
                if proc.poll() is not None:
                    del running[target]
                    done[target] = _result(target, log_path, proc.returncode, time.monotonic() - started)
    finally:
        for proc, _, _ in running.values():
            proc.kill()
    return [done[t] for t in targets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"default: all ({', '.join(TARGETS)})")
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    parser.add_argument("--jobs", type=int, default=2, help="targets fuzzed at once (default 2)")
    parser.add_argument("--work-dir", type=Path, default=_ROOT / "build" / "fuzz", help="corpora and logs")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; the targets are: {', '.join(TARGETS)}")
    results = run(args.targets or list(TARGETS), args.seconds, max(1, args.jobs), args.work_dir)
    print(f"{'target':<12} {'runs':>10} {'s':>6} {'cov':>6} {'ft':>7} {'corpus':>7}  outcome")
    for r in results:
        outcome = "ok" if r.ok else f"{len(r.new_crashes)} new crash(es), exit {r.exit_code}; log: {r.log}"
        print(f"{r.target:<12} {r.runs:>10} {r.seconds:>6} {r.cov:>6} {r.ft:>7} {r.corpus:>7}  {outcome}")
        for crash in r.new_crashes:
            print(f"    NEW CRASH {crash}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
