"""The ``_ext`` stubs (``*.pyi``) state the pure twins' signatures, and the compiled functions take their parameters.

mypy reads the stubs; nothing else ties them to the code, so this test does: every public function of a ``.pyx``
is in its stub and bound by :func:`icws_fast._ext.twin`, its stub signature is the pure function's (parameters,
kinds, defaults present, resolved annotations), and the compiled function takes the same parameters with the same
default values.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from icws_fast import _ext

# The modules that bind compiled twins; importing them fills _ext.BINDINGS. A twin bound elsewhere has no
# BINDINGS entry here, so the completeness test below names it.
OWNERS = (
    "icws_fast.ic.cbor",
    "icws_fast.ic.hashtree",
    "icws_fast.protocol.types",
    "icws_fast.protocol.certified",
    "icws_fast.protocol.session",
    "icws_fast.protocol.poller",
    "icws_fast.gateway.fanout",
)
for _owner in OWNERS:
    importlib.import_module(_owner)

EXT_DIR = Path(_ext.__file__).parent
MODULES = sorted(path.stem for path in EXT_DIR.glob("*.pyx"))
BINDINGS = sorted(_ext.BINDINGS)


def _stub(module: str) -> dict[str, Any]:
    """The namespace the stub of ``module`` defines (stubs are valid Python; bodies are ``...``)."""
    path = EXT_DIR / f"{module}.pyi"
    namespace: dict[str, Any] = {"__name__": f"icws_fast._ext.{module}"}
    exec(compile("from __future__ import annotations\n" + path.read_text(), str(path), "exec"), namespace)
    return namespace


def _functions(namespace: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    module = namespace["__name__"]
    return {
        name: value
        for name, value in namespace.items()
        if inspect.isfunction(value) and value.__module__ == module and not name.startswith("_")
    }


def _shape(fn: Callable[..., Any]) -> list[tuple[str, Any, bool]]:
    return [(p.name, p.kind, p.default is p.empty) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("module", MODULES)
def test_every_public_compiled_function_is_stubbed_and_bound(module: str) -> None:
    pyx = (EXT_DIR / f"{module}.pyx").read_text()
    public = set(re.findall(r"^def ([a-z]\w*)\(", pyx, re.MULTILINE))
    assert set(_functions(_stub(module))) == public
    assert {name for owner, name in BINDINGS if owner == module} == public


@pytest.mark.parametrize(("module", "name"), BINDINGS, ids=[f"{m}.{n}" for m, n in BINDINGS])
def test_stub_states_the_pure_signature(module: str, name: str) -> None:
    pure, _ = _ext.BINDINGS[(module, name)]
    namespace = _stub(module)
    stub = namespace[name]
    assert _shape(stub) == _shape(pure)
    assert typing.get_type_hints(stub, globalns=namespace) == typing.get_type_hints(pure)


@pytest.mark.parametrize(("module", "name"), BINDINGS, ids=[f"{m}.{n}" for m, n in BINDINGS])
def test_compiled_takes_the_pure_parameters(module: str, name: str) -> None:
    pure, bound = _ext.BINDINGS[(module, name)]
    if bound is pure:
        pytest.skip("pure mode (ICWS_FAST_PURE=1), or the extension is not built: no compiled twin")
    expected = [(p.name, p.kind, p.default) for p in inspect.signature(pure).parameters.values()]
    assert [(p.name, p.kind, p.default) for p in inspect.signature(bound).parameters.values()] == expected
