"""Compiled (Cython) twins of the hot functions, and the one seam that picks them.

Every ``_ext`` module mirrors functions of a pure-Python module with the same
signatures and results. The pure module calls :func:`compiled` once at import
time and rebinds its public names to the compiled ones when they are present.

``ICWS_FAST_PURE=1`` forces the pure implementations; ``ICWS_FAST_REQUIRE_EXT=1``
turns a missing compiled module into an ImportError (CI uses it so that a broken
build cannot pass silently as pure).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE: bool = os.environ.get("ICWS_FAST_PURE", "") not in ("", "0")
REQUIRE: bool = os.environ.get("ICWS_FAST_REQUIRE_EXT", "") not in ("", "0")


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
