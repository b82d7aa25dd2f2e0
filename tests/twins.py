"""The one way twin tests get a pure function and its compiled twin, and compare what they do.

A module with a compiled twin defines ``<name>_pure`` and binds ``<name>`` through
:func:`icws_fast._ext.twin`. In the compiled run the public name *is* the compiled function, so a test
that compares ``module.<name>`` with the compiled module compares the compiled function with itself;
these helpers always hand out the pure function as one side and the compiled one as the other.

In pure mode (``ICWS_FAST_PURE=1``), or when the extensions are not built, the compiled side is skipped
with the reason; under ``ICWS_FAST_REQUIRE_EXT=1`` it always runs (a missing twin fails).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from icws_fast import _ext


@dataclass(frozen=True)
class Twin:
    """A pure function and its compiled twin (None, with ``skip_reason``, when the run has none)."""

    pure: Callable[..., Any]
    compiled: Callable[..., Any] | None
    skip_reason: str


def twin(owner: ModuleType, name: str) -> Twin:
    """The pure ``owner.<name>_pure`` and the compiled function ``owner.<name>`` is bound to, if any."""
    pure = getattr(owner, f"{name}_pure")
    bound = getattr(owner, name)
    if bound is not pure:
        assert bound.__module__.startswith("icws_fast._ext."), f"{owner.__name__}.{name} is bound to {bound!r}"
        return Twin(pure, bound, "")
    if _ext.PURE:
        return Twin(pure, None, "pure mode (ICWS_FAST_PURE=1): no compiled twin to compare")
    # twin() raises ImportError instead of falling back when ICWS_FAST_REQUIRE_EXT=1.
    assert not _ext.REQUIRE, f"{owner.__name__}.{name} is pure although ICWS_FAST_REQUIRE_EXT=1"
    return Twin(pure, None, f"the compiled twin of {owner.__name__}.{name} is not built (make ext)")


def compiled(owner: ModuleType, name: str) -> Callable[..., Any]:
    """The compiled twin of ``owner.<name>``; skips the calling test when there is none."""
    found = twin(owner, name)
    if found.compiled is None:
        pytest.skip(found.skip_reason)
    return found.compiled


def skip_unless_compiled(owner: ModuleType, name: str) -> pytest.MarkDecorator:
    """A ``skipif`` mark (for ``pytestmark``) for tests that need the compiled twin of ``owner.<name>``."""
    found = twin(owner, name)
    return pytest.mark.skipif(found.compiled is None, reason=found.skip_reason)


def implementations(owner: ModuleType, *names: str) -> list[Any]:
    """Parameters ``pure`` and ``compiled`` for ``@pytest.mark.parametrize``: each a namespace of ``names``.

    The compiled parameter is skipped, with the reason, when the run has no compiled twins.
    """
    found = {name: twin(owner, name) for name in names}
    pure = SimpleNamespace(**{name: t.pure for name, t in found.items()})
    missing = [t.skip_reason for t in found.values() if t.compiled is None]
    if missing:
        return [pytest.param(pure, id="pure"), pytest.param(None, id="compiled", marks=pytest.mark.skip(missing[0]))]
    fast = SimpleNamespace(**{name: t.compiled for name, t in found.items()})
    return [pytest.param(pure, id="pure"), pytest.param(fast, id="compiled")]


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """``("ok", result)``, or ``("raised", exception class, message)``: what twins must agree on."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # the comparison is the point, whatever the class
        return ("raised", type(exc), str(exc))


def assert_agree(owner: ModuleType, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Call the pure ``owner.<name>`` and its compiled twin on the same arguments: same result or same error.

    Returns the pure outcome. Skips the calling test when the run has no compiled twin.
    """
    fast = compiled(owner, name)
    expected = outcome(getattr(owner, f"{name}_pure"), *args, **kwargs)
    assert outcome(fast, *args, **kwargs) == expected, (name, args, kwargs)
    return expected
