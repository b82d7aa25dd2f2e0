"""Every input that ever crashed a fuzz target, replayed: each must now end in a return or an IcwsError.

Inputs whose bug is not fixed yet are listed in ``fuzz/regressions/xfail.json`` with the
crash they cause; they are strict xfails, so fixing the bug fails this test until the
entry is removed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import harness

_KNOWN = harness.known_crashes()


def _cases() -> list[object]:
    cases: list[object] = []
    for name in harness.TARGETS:
        for path in harness.regression_files(name):
            key = f"{name}/{path.name}"
            marks = [pytest.mark.xfail(strict=True, reason=_KNOWN[key])] if key in _KNOWN else []
            cases.append(pytest.param(name, path, id=key, marks=marks))
    return cases


@pytest.mark.parametrize(("name", "path"), _cases())
def test_regression_input_is_handled(name: str, path: Path) -> None:
    crash = harness.replay(harness.load(name), path.read_bytes())
    assert crash is None, f"{path} crashes target {name}:\n{crash.traceback}"


def test_every_known_crash_has_its_input() -> None:
    kept = {f"{name}/{path.name}" for name in harness.TARGETS for path in harness.regression_files(name)}
    assert set(_KNOWN) <= kept, f"xfail.json lists inputs that are not kept: {sorted(set(_KNOWN) - kept)}"
