"""The Python canister development kit: what canister code sees (like ``ic-cdk`` for Rust).

A canister is a subclass of :class:`Canister` whose public entry points are marked with
:func:`update` or :func:`query` and a Candid signature, resolved against the class's
``CANDID`` text (``type X = ...;`` definitions)::

    class Counter(Canister):
        CANDID = "type Count = nat64;"

        def __init__(self) -> None:
            self.count = 0

        @update("() -> (Count)")
        def increment(self) -> int:
            self.count += 1
            return self.count

        @query("() -> (Count)")
        def get(self) -> int:
            return self.count

Methods take the decoded arguments positionally and return the result (a tuple when the
signature has several results, nothing for ``()``). The system API functions below
(:func:`caller`, :func:`time`, ...) are valid only while the host runs a method, a timer or
a lifecycle hook; the host (the devnet) installs its implementation of :class:`System`
with :func:`system_context`. Canister code never imports the host.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NoReturn, TypeVar

from icws_fast.errors import CandidError, IcwsError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

__all__ = [
    "Canister",
    "MethodSpec",
    "System",
    "Trap",
    "caller",
    "canister_self",
    "certified_data_set",
    "certified_data_set_deferred",
    "clear_timer",
    "data_certificate",
    "query",
    "set_timer",
    "set_timer_interval",
    "system_context",
    "time",
    "trap",
    "update",
]

MethodKind = Literal["update", "query"]
F = TypeVar("F", bound=Callable[..., Any])

_SPEC_ATTRIBUTE = "__icws_method__"
MAX_CERTIFIED_DATA = 32


class Trap(IcwsError):
    """Raised by :func:`trap`: the canister aborts the message; the host turns it into a reject."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class MethodSpec:
    """An exported method: its kind, Candid signature text, and the parsed argument/result types."""

    kind: MethodKind
    signature: str
    arg_types: tuple[candid.Type, ...]
    ret_types: tuple[candid.Type, ...]


def _split_signature(signature: str) -> tuple[str, str]:
    """``"(A, B) -> (C)"`` -> ``("(A, B)", "(C)")``, splitting at the top-level arrow only."""
    depth = 0
    for i, ch in enumerate(signature):
        if ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
        elif ch == "-" and depth == 0 and signature.startswith("->", i):
            return signature[:i].strip(), signature[i + 2 :].strip()
    raise CandidError(f"method signature {signature!r} has no top-level '->'")


def _mark(kind: MethodKind, signature: str) -> Callable[[F], F]:
    _split_signature(signature)  # fail at class definition, not at the first call

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            # A message runs to completion without yielding, which is what makes execution sequential.
            raise TypeError(f"canister method {fn.__name__} must be a plain function, not async")
        setattr(fn, _SPEC_ATTRIBUTE, (kind, signature))
        return fn

    return decorate


def update(signature: str) -> Callable[[F], F]:
    """Export the decorated method as an update method with the Candid ``signature``."""
    return _mark("update", signature)


def query(signature: str) -> Callable[[F], F]:
    """Export the decorated method as a query method with the Candid ``signature``."""
    return _mark("query", signature)


class Canister:
    """Base class of Python canisters.

    ``init`` runs once when the canister is first installed; ``post_upgrade`` runs instead when
    the host restores a persisted instance (timers do not survive an upgrade, as on the IC, so
    canisters that use timers arm them in both hooks).

    On the IC a trap discards every change the message made. The host always undoes the system
    state (certified data, timers set by the message); the canister's own attributes are restored
    too when ``ROLLBACK_ON_TRAP`` is true, at the price of a deep copy of ``__dict__`` per update
    message and timer. Leave it false for canisters that validate before they mutate.
    """

    CANDID: ClassVar[str] = ""
    ROLLBACK_ON_TRAP: ClassVar[bool] = False
    _methods_cache: ClassVar[dict[str, MethodSpec] | None] = None

    def init(self) -> None:
        """Called once after the canister is created, inside a system context."""

    def post_upgrade(self) -> None:
        """Called after the host restored a persisted instance, inside a system context."""

    @classmethod
    def exported_methods(cls) -> dict[str, MethodSpec]:
        """The exported methods by name, with their Candid types resolved against ``CANDID``.

        Raises :class:`~icws_fast.errors.CandidError` when a signature or ``CANDID`` does not parse.
        """
        cached: dict[str, MethodSpec] | None = cls.__dict__.get("_methods_cache")
        if cached is not None:
            return cached
        defs = cls.CANDID if cls.CANDID.strip() else None
        methods: dict[str, MethodSpec] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                marked = getattr(member, _SPEC_ATTRIBUTE, None)
                if marked is None:
                    continue
                kind, signature = marked
                args_text, rets_text = _split_signature(signature)
                methods[name] = MethodSpec(
                    kind=kind,
                    signature=signature,
                    arg_types=tuple(candid.parse_args(args_text, defs)),
                    ret_types=tuple(candid.parse_args(rets_text, defs)),
                )
        cls._methods_cache = methods
        return methods


class System(ABC):
    """The system API a host provides to canister code (one instance per message execution)."""

    @abstractmethod
    def caller(self) -> Principal:
        """The principal that sent the current message (the canister itself for timers and hooks)."""

    @abstractmethod
    def time(self) -> int:
        """The current IC time in nanoseconds since the Unix epoch (constant during a message)."""

    @abstractmethod
    def canister_self(self) -> Principal:
        """The id of the executing canister."""

    @abstractmethod
    def certified_data_set(self, data: bytes) -> None:
        """Set the canister's certified data (at most 32 bytes); traps in queries."""

    def certified_data_set_deferred(self, compute: Callable[[], bytes]) -> None:
        """Set the certified data to ``compute()`` when the current execution ends (see
        :func:`~icws_fast.cdk.api.certified_data_set_deferred`).

        This default computes it at once, which is correct for any host; a host overrides it to call
        ``compute`` once per execution however often the canister calls it.
        """
        self.certified_data_set(checked_certified_data(compute()))

    @abstractmethod
    def data_certificate(self) -> bytes | None:
        """In a query: the CBOR certificate covering this canister's certified data; else None."""

    @abstractmethod
    def set_timer(self, delay_ns: int, fn: Callable[[], None]) -> int:
        """Run ``fn`` once after ``delay_ns`` of IC time; returns the timer id."""

    @abstractmethod
    def set_timer_interval(self, interval_ns: int, fn: Callable[[], None]) -> int:
        """Run ``fn`` every ``interval_ns`` of IC time; returns the timer id."""

    @abstractmethod
    def clear_timer(self, timer_id: int) -> None:
        """Cancel a timer; unknown ids are ignored."""


_SYSTEM: contextvars.ContextVar[System] = contextvars.ContextVar("icws_fast_cdk_system")


@contextlib.contextmanager
def system_context(system: System) -> Iterator[None]:
    """Make ``system`` the system API for the code run inside the ``with`` block (host side)."""
    token = _SYSTEM.set(system)
    try:
        yield
    finally:
        _SYSTEM.reset(token)


def _system() -> System:
    try:
        return _SYSTEM.get()
    except LookupError:
        raise RuntimeError("the canister system API is only available while a canister executes") from None


def caller() -> Principal:
    """The principal that sent the current message."""
    return _system().caller()


def time() -> int:
    """The current IC time in nanoseconds."""
    return _system().time()


def canister_self() -> Principal:
    """The id of this canister."""
    return _system().canister_self()


def checked_certified_data(data: bytes) -> bytes:
    """``data`` as certified data (bytes, at most 32 of them); traps otherwise (host side helper)."""
    if len(data) > MAX_CERTIFIED_DATA:
        trap(f"certified data is {len(data)} bytes, at most {MAX_CERTIFIED_DATA} are allowed")
    return bytes(data)


def certified_data_set(data: bytes) -> None:
    """Set this canister's certified data (at most 32 bytes; traps when longer or in a query)."""
    _system().certified_data_set(checked_certified_data(data))


def certified_data_set_deferred(compute: Callable[[], bytes]) -> None:
    """Set this canister's certified data to ``compute()`` when the current update, timer or hook ends.

    For canister code that changes its certified state many times in one execution (the IC WebSocket
    CDK's message map changes with every message it queues): the host calls ``compute`` once,
    after the method or timer returns and before the round is certified, instead of the canister
    hashing after every change. The IC has no such call; the effect is the same as calling
    :func:`certified_data_set` with the final value at the end. A later call replaces ``compute``; a
    later :func:`certified_data_set` cancels it. ``compute`` runs in the same execution: if it raises
    or its result is not at most 32 bytes, the execution traps (and is rolled back). Traps in queries.
    """
    _system().certified_data_set_deferred(compute)


def data_certificate() -> bytes | None:
    """The certificate of this canister's certified data (queries only; None in updates)."""
    return _system().data_certificate()


def set_timer(delay_ns: int, fn: Callable[[], None]) -> int:
    """Run ``fn`` once after ``delay_ns`` nanoseconds of IC time."""
    return _system().set_timer(delay_ns, fn)


def set_timer_interval(interval_ns: int, fn: Callable[[], None]) -> int:
    """Run ``fn`` every ``interval_ns`` nanoseconds of IC time."""
    return _system().set_timer_interval(interval_ns, fn)


def clear_timer(timer_id: int) -> None:
    """Cancel the timer ``timer_id``."""
    _system().clear_timer(timer_id)


def trap(message: str) -> NoReturn:
    """Abort the current message; the caller gets a CANISTER_ERROR reject carrying ``message``."""
    raise Trap(message)
