"""What the ratio guard (``benchmarks/floors.py``) needs from a benchmark run: which benchmarks are twin pairs.

A *twin benchmark* is one parametrized with an id ``pure`` and an id ``compiled`` (one ``-``-separated token of
its pytest id, as ``tests.twins.implementations`` and ``@pytest.mark.parametrize("impl", ["pure", "compiled"])``
produce); the two tests whose ids differ only in that token are a *pair*. Each such test gets

* the ``twin`` marker, so ``pytest benchmarks -m twin`` runs every pair and nothing else (the guard's run);
* in its benchmark's ``extra_info`` (kept in ``--benchmark-json``): ``impl`` (``pure`` or ``compiled``),
  ``pair`` (its node id without the token and the ``benchmarks/`` prefix, e.g.
  ``test_cbor.py::test_decode[signed call envelope]``: the key of its floor) and ``twins``, the pure twins
  (``"_cbor.decode"``, named as in ``icws_fast._ext.BINDINGS``) the benchmarked callable called, found by running
  it once under a profiler before it is timed. Only calls made from outside any twin count, so a twin that only
  runs inside another one (``encode_message`` inside ``encode_frames``) is not taken as benchmarked on its own.

The checker pairs benchmarks by ``pair``, and requires every compiled twin to be called by the pure side of a
guarded pair, so a new twin cannot escape the guard and no list of benchmarks is kept by hand.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from icws_fast import _ext

IMPLS = ("pure", "compiled")


def twin_split(nodeid: str) -> tuple[str, str] | None:
    """``(impl, pair)`` of a twin benchmark's node id, or None when it is not one (see the module docstring)."""
    path, _, rest = nodeid.partition("::")
    name, bracket, ids = rest.partition("[")
    tokens = ids[:-1].split("-") if bracket else []
    impls = [token for token in tokens if token in IMPLS]
    if len(impls) != 1:
        return None
    tokens.remove(impls[0])
    pair = f"{path.removeprefix('benchmarks/')}::{name}" + (f"[{'-'.join(tokens)}]" if tokens else "")
    return impls[0], pair


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "twin: a pure/compiled twin benchmark pair member (benchmarks/conftest.py)")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """The 1-minute load average at the end of the run: how busy the machine was (the floors' notes quote it)."""
    machine_info["loadavg"] = round(os.getloadavg()[0], 2)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]) -> None:
    """Drop every round's time from ``--benchmark-json`` unless ``--benchmark-save-data`` asks for them.

    pytest-benchmark writes them all to that file (tens of MB for the fast benchmarks); the statistics stay,
    and the guard uses only those.
    """
    if not config.getoption("benchmark_save_data"):
        for bench in output_json["benchmarks"]:
            bench["stats"].pop("data", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if twin_split(item.nodeid) is not None:
            item.add_marker(pytest.mark.twin)


def called_twins(function: Callable[..., Any], *args: Any, **kwargs: Any) -> list[str]:
    """The pure twins ``function(*args, **kwargs)`` calls from outside any twin, as ``"<module>.<name>"``."""
    codes = {pure.__code__: f"{module}.{name}" for (module, name), (pure, _) in _ext.BINDINGS.items()}
    found: set[str] = set()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in codes:
            outer = frame.f_back
            while outer is not None and outer.f_code not in codes:
                outer = outer.f_back
            if outer is None:
                found.add(codes[frame.f_code])

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        function(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    return sorted(found)


class TwinBenchmark(BenchmarkFixture):
    """pytest-benchmark's fixture for a twin benchmark: records ``twins`` before it times the callable."""

    def __call__(self, function_to_benchmark: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.extra_info["twins"] = called_twins(function_to_benchmark, *args, **kwargs)
        return super().__call__(function_to_benchmark, *args, **kwargs)  # type: ignore[no-untyped-call]


@pytest.fixture
def benchmark(benchmark: BenchmarkFixture, request: pytest.FixtureRequest) -> BenchmarkFixture:
    """pytest-benchmark's ``benchmark``; for a twin benchmark, a :class:`TwinBenchmark` with ``impl`` and ``pair``.

    pytest-benchmark accepts only its own fixture class here, and creates the instance itself: the instance is
    turned into the subclass (which adds no state) rather than wrapped.
    """
    split = twin_split(request.node.nodeid)
    if split is not None:
        benchmark.__class__ = TwinBenchmark
        benchmark.extra_info.update({"impl": split[0], "pair": split[1]})
    return benchmark
