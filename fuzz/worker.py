"""The process that fuzzes one target; ``python -m fuzz.run`` starts it.

Usage: ``python -m fuzz.worker TARGET SEED_DIR [libFuzzer flags and corpus folders...]``

It writes the target's seeds to ``SEED_DIR``, learns which kept regression inputs still
crash (those bugs are known and are not reported again), and hands over to libFuzzer with
the structure-aware mutator. A crash does not stop the run: each new kind of crash
(exception type and where it was raised) is kept under ``fuzz/regressions/<target>/``,
replaced by a shorter input when one turns up, and reported on stderr as ``NEW CRASH``.
libFuzzer itself keeps inputs that hang or kill the process in the same folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["icws_fast"]):
    from fuzz import harness, mutator
    from icws_fast.errors import IcwsError


def _libfuzzer_mutate(data: bytes, max_size: int) -> bytes:
    """libFuzzer's byte mutator; ``atheris.Mutate`` is only bound to it once ``Fuzz()`` has loaded libFuzzer."""
    mutated: bytes = atheris.Mutate(data, max_size)
    return mutated


def main(argv: list[str]) -> None:
    name, seed_dir, libfuzzer_args = argv[1], Path(argv[2]), argv[3:]
    with atheris.instrument_imports(include=["icws_fast"]):
        target = harness.load(name)
    seed_dir.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(target.seeds()):
        (seed_dir / f"seed-{i:04d}").write_bytes(seed)
    known: set[str] = set()
    for path in harness.regression_files(name):
        crash = harness.replay(target, path.read_bytes())
        if crash is not None:
            known.add(crash.signature)
    kept: dict[str, Path] = {}

    def record(crash: harness.Crash, data: bytes) -> None:
        if crash.signature in known:
            return
        previous = kept.get(crash.signature)
        if previous is not None and previous.stat().st_size <= len(data):
            return
        path = harness.crash_path(name, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        kept[crash.signature] = path
        if previous is None:
            print(f"icws-fuzz: NEW CRASH {crash.summary} -> {path}\n{crash.traceback}", file=sys.stderr, flush=True)
        else:
            previous.unlink()
            print(f"icws-fuzz: shorter input ({len(data)} bytes) for {crash.signature} -> {path}", file=sys.stderr)

    def test_one_input(data: bytes) -> None:
        try:
            target.one_input(data)
        except IcwsError:
            pass
        except Exception as exc:  # the outcome being hunted: keep the input, go on fuzzing
            record(harness.Crash.from_exception(exc), data)

    atheris.Setup(
        [argv[0], *libfuzzer_args],
        test_one_input,
        custom_mutator=mutator.custom_mutator(target.prefix, _libfuzzer_mutate),
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
