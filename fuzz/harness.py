"""What a fuzz target is, what counts as a crash, and where crashing inputs are kept.

A target feeds one input to a parser a peer can reach. The allowed outcomes are a return
or an :class:`~icws_fast.errors.IcwsError`; any other exception is a crash, and so is
:class:`Violation`, raised when an outcome breaks a property it must have, such as the
pure and the compiled twin of a function agreeing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from icws_fast.errors import IcwsError

FUZZ_DIR = Path(__file__).resolve().parent
REGRESSIONS = FUZZ_DIR / "regressions"
XFAIL_FILE = REGRESSIONS / "xfail.json"
_PACKAGE_DIR = FUZZ_DIR.parent / "icws_fast"

# The targets, in the order `python -m fuzz.run` runs them; each is a module of fuzz.targets.
TARGETS = (
    "cbor",
    "candid",
    "envelope",
    "hashtree",
    "certificate",
    "wsbatch",
    "session",
    "client",
    "http",
)


class Violation(AssertionError):
    """A property every outcome must have does not hold (e.g. a close reason longer than a close frame allows)."""


class TwinMismatch(Violation):
    """The pure and the compiled twin of a function answered the same input differently."""


@dataclass(frozen=True)
class Target:
    """A loaded fuzz target.

    ``one_input`` runs one input; ``seeds`` yields the starting corpus (built from
    ``../shared/vectors`` and from well-formed messages the target signs itself);
    ``prefix`` is how many leading bytes select a mode rather than carry CBOR (the
    structure-aware mutator keeps them).
    """

    name: str
    one_input: Callable[[bytes], None]
    seeds: Callable[[], Iterator[bytes]]
    prefix: int


def load(name: str) -> Target:
    """The target ``name`` (one of :data:`TARGETS`)."""
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; the targets are: {', '.join(TARGETS)}")
    module: ModuleType = importlib.import_module(f"fuzz.targets.{name}")
    return Target(name, module.one_input, module.seeds, getattr(module, "PREFIX", 0))


@dataclass(frozen=True)
class Crash:
    """A forbidden outcome: ``signature`` identifies the bug, ``summary`` describes it for people."""

    signature: str
    summary: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> Crash:
        frames = traceback.extract_tb(exc.__traceback__)
        # The innermost frame inside icws_fast names where the bug is; a crash in the harness keeps its own.
        where = next((f for f in reversed(frames) if Path(f.filename).is_relative_to(_PACKAGE_DIR)), None)
        if where is None and frames:
            where = frames[-1]
        place = f"{_short(where.filename)}:{where.name}" if where else "?"
        kind = type(exc).__name__
        message = str(exc).splitlines()[0][:200] if str(exc) else ""
        text = "".join(traceback.format_exception(exc))
        return cls(f"{kind} in {place}", f"{kind} in {place}:{where.lineno if where else 0}: {message}", text)


def _short(filename: str) -> str:
    path = Path(filename)
    for root in (_PACKAGE_DIR.parent, FUZZ_DIR.parent):
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name


def replay(target: Target, data: bytes) -> Crash | None:
    """Run ``data`` through ``target``; the crash it causes, or None if the outcome is allowed."""
    try:
        target.one_input(data)
    except IcwsError:
        return None
    except Exception as exc:  # anything else a peer's bytes cause is the bug being hunted
        return Crash.from_exception(exc)
    return None


def regression_files(name: str) -> list[Path]:
    """The kept inputs of target ``name``, sorted."""
    folder = REGRESSIONS / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def crash_path(name: str, data: bytes) -> Path:
    """Where an input that crashed target ``name`` is kept (libFuzzer's naming: ``crash-<sha1>``)."""
    return REGRESSIONS / name / f"crash-{hashlib.sha1(data).hexdigest()}"


def known_crashes() -> dict[str, str]:
    """``{"<target>/<file>": summary}``: kept inputs that still crash, until the parser is fixed."""
    if not XFAIL_FILE.exists():
        return {}
    entries: dict[str, Any] = json.loads(XFAIL_FILE.read_text())
    return {key: str(value) for key, value in entries.items()}


def same(a: Any, b: Any) -> bool:
    """Whether two results are the same: same type and same ``repr``, all the way down.

    ``repr`` tells apart what ``==`` merges (``True`` and ``1``, ``-0.0`` and ``0.0``, a list
    and a tuple) and merges what ``==`` tells apart (NaN and NaN), and it runs in C.
    """
    return type(a) is type(b) and repr(a) == repr(b)


def twins(what: str, pure: Callable[..., Any], compiled: Callable[..., Any] | None, *args: Any) -> Any:
    """``pure(*args)``, after checking that ``compiled(*args)`` agrees (same value, or both raise IcwsError).

    An :class:`IcwsError` of the pure twin is re-raised; any other exception of either twin
    propagates as the crash it is. ``compiled`` is None in pure mode or when it is not built.
    """
    try:
        expected = pure(*args)
    except IcwsError as exc:
        if compiled is not None:
            try:
                got = compiled(*args)
            except IcwsError:
                raise exc from None
            raise TwinMismatch(
                f"{what}: pure raised {type(exc).__name__}({exc}), compiled returned {got!r:.200}"
            ) from None
        raise
    if compiled is not None:
        try:
            got = compiled(*args)
        except IcwsError as exc:
            raise TwinMismatch(
                f"{what}: pure returned {expected!r:.200}, compiled raised {type(exc).__name__}({exc})"
            ) from None
        if not same(expected, got):
            raise TwinMismatch(f"{what}: pure returned {expected!r:.200}, compiled {got!r:.200}")
    return expected
