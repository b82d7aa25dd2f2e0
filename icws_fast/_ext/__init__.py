"""Compiled (Cython) twins of the hot functions, and the one seam that picks them.

Every ``_ext`` module mirrors functions of a pure-Python module with the same
signatures, results and errors (its ``.pyi`` stub states them). The pure module
defines each such function as ``<name>_pure`` and binds its public name through
:func:`twin`, always the same way::

    def encode_frames_pure(keys: Sequence[bytes], contents: Sequence[bytes], suffix: bytes) -> bytes: ...

    encode_frames = _ext.twin("_fanout", encode_frames_pure)

so the pure function stays reachable as ``<name>_pure`` whichever one is bound
(the twin tests compare the two), and pure code calls ``*_pure`` names only.

``ICWS_FAST_PURE=1`` forces the pure implementations; ``ICWS_FAST_REQUIRE_EXT=1``
turns a missing compiled module into an ImportError (CI uses it so that a broken
build cannot pass silently as pure).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar, cast

PURE: bool = os.environ.get("ICWS_FAST_PURE", "") not in ("", "0")
REQUIRE: bool = os.environ.get("ICWS_FAST_REQUIRE_EXT", "") not in ("", "0")

_PURE_SUFFIX = "_pure"
_F = TypeVar("_F", bound=Callable[..., Any])

#: Every binding :func:`twin` has made: ``(module, name)`` -> ``(pure function, bound function)``; the two are
#: the same function when the compiled module is not used. The twin tests and the stub check read it.
BINDINGS: dict[tuple[str, str], tuple[Callable[..., Any], Callable[..., Any]]] = {}


def compiled(name: str) -> ModuleType | None:
    """The compiled module ``icws_fast._ext.<name>``, or None in pure mode or when it is not built."""
    if PURE:
        return None
    try:
        return importlib.import_module(f"icws_fast._ext.{name}")
    except ImportError:
        if REQUIRE:
            raise
        return None


def twin(module: str, pure: _F) -> _F:
    """The compiled twin of ``pure`` from ``icws_fast._ext.<module>``, or ``pure`` itself when there is none.

    ``pure`` must be named ``<name>_pure``; its twin is ``<name>`` in the compiled module, with the same
    signature (the module's stub and ``tests/test_ext_stubs.py`` hold them to it), so the result keeps the
    pure function's type. A compiled module that lacks ``<name>`` was built from older sources: that is an
    ImportError saying so, never a silent fallback.
    """
    name = pure.__name__
    if not name.endswith(_PURE_SUFFIX):
        raise ValueError(f"a pure twin is named '<name>{_PURE_SUFFIX}', not {name!r}")
    public = name[: -len(_PURE_SUFFIX)]
    bound = pure
    ext = compiled(module)
    if ext is not None:
        try:
            bound = cast(_F, getattr(ext, public))
        except AttributeError:
            raise ImportError(
                f"{ext.__name__} ({ext.__file__}) has no {public}: it was built from older sources;"
                " rebuild it with `make ext` (or set ICWS_FAST_PURE=1)"
            ) from None
    BINDINGS[(module, public)] = (pure, bound)
    return bound
