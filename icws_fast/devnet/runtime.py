"""Hosting one Python canister: method dispatch, Candid, the system API, timers, traps -> rejects.

The texts and error codes of rejects follow the replica's (``ic_error_types`` and the execution
environment), so clients and logs read the same as against a real replica.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from icws_fast.cdk import api
from icws_fast.errors import CandidError, IcwsError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

log = logging.getLogger(__name__)

# Reject codes of the interface specification that the devnet produces.
DESTINATION_INVALID = 3
CANISTER_ERROR = 5

#: How many times one interval timer may fire in one round when it is overdue (ic-cdk-timers 1.x caps the
#: concurrent calls of one timer at 5; beyond that it skips the missed firings).
MAX_FIRINGS_PER_ROUND = 5

_DOCS = "https://internetcomputer.org/docs/current/references/execution-errors"
_HANDLE_FAILURES = (
    "Consider gracefully handling failures from this canister or altering the canister to handle exceptions."
)


class Reject(IcwsError):
    """The outcome of a message that did not reply: reject code, message and IC error code."""

    def __init__(self, code: int, message: str, error_code: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.code = code
        self.message = message
        self.error_code = error_code


def canister_not_found(canister_id: Principal) -> Reject:
    return Reject(DESTINATION_INVALID, f"Canister {canister_id} not found", "IC0301")


def _canister_error(canister_id: Principal, what: str, advice: str, anchor: str, error_code: str) -> Reject:
    # The replica's wording, so that a devnet reject reads like one from dfx.
    return Reject(
        CANISTER_ERROR,
        f"Error from Canister {canister_id}: {what}.\n{advice} See documentation: {_DOCS}#{anchor}",
        error_code,
    )


def method_not_found(canister_id: Principal, kind: str, method: str) -> Reject:
    return _canister_error(
        canister_id,
        f"Canister has no {kind} method '{method}'",
        "Check that the method being called is exported by the target canister.",
        "method-not-found",
        "IC0536",
    )


def called_trap(canister_id: Principal, message: str) -> Reject:
    return _canister_error(
        canister_id,
        f"Canister called `ic0.trap` with message: '{message}'",
        _HANDLE_FAILURES,
        "trapped-explicitly",
        "IC0503",
    )


def trapped(canister_id: Principal, exc: BaseException) -> Reject:
    # A Python exception is the devnet's analogue of a Wasm trap (unreachable, out of bounds...).
    return wasm_trapped(canister_id, f"{type(exc).__name__}: {exc}")


def wasm_trapped(canister_id: Principal, what: str) -> Reject:
    """A trap other than ``ic0.trap``: ``what`` is the Wasm trap (``unreachable``, ``heap out of bounds``...)."""
    return _canister_error(canister_id, f"Canister trapped: {what}", _HANDLE_FAILURES, "trapped", "IC0502")


@dataclass(order=True)
class _Timer:
    due_ns: int
    timer_id: int
    interval_ns: int | None
    fn: Callable[[], None] = field(compare=False)


class _Context(api.System):
    """The system API for one execution (a message, a timer or a lifecycle hook)."""

    __slots__ = ("_caller", "_certificate", "_deferred_data", "_host", "_is_query", "_now_ns", "timers_added")

    def __init__(
        self,
        host: CanisterHost,
        caller: Principal,
        now_ns: int,
        *,
        is_query: bool,
        certificate: Callable[[], bytes | None] | None = None,
    ) -> None:
        self._host = host
        self._caller = caller
        self._now_ns = now_ns
        self._is_query = is_query
        self._certificate = certificate
        self._deferred_data: Callable[[], bytes] | None = None
        self.timers_added: list[int] = []

    def caller(self) -> Principal:
        return self._caller

    def time(self) -> int:
        return self._now_ns

    def canister_self(self) -> Principal:
        return self._host.canister_id

    def certified_data_set(self, data: bytes) -> None:
        if self._is_query:
            api.trap("ic0_certified_data_set cannot be executed in non replicated query mode")
        self._deferred_data = None
        self._host.certified_data = data

    def certified_data_set_deferred(self, compute: Callable[[], bytes]) -> None:
        if self._is_query:
            api.trap("ic0_certified_data_set cannot be executed in non replicated query mode")
        self._deferred_data = compute

    def commit(self) -> None:
        """End of the execution (still inside it: a failure here traps it): apply deferred certified data."""
        compute, self._deferred_data = self._deferred_data, None
        if compute is not None:
            self._host.certified_data = api.checked_certified_data(compute())

    def data_certificate(self) -> bytes | None:
        return self._certificate() if self._is_query and self._certificate is not None else None

    def _add_timer(self, delay_ns: int, interval_ns: int | None, fn: Callable[[], None]) -> int:
        if self._is_query:
            api.trap("timers cannot be set in non replicated query mode")
        if delay_ns < 0:
            api.trap(f"timer delay must not be negative, got {delay_ns}")
        timer_id = self._host.add_timer(self._now_ns + delay_ns, interval_ns, fn)
        self.timers_added.append(timer_id)
        return timer_id

    def set_timer(self, delay_ns: int, fn: Callable[[], None]) -> int:
        return self._add_timer(delay_ns, None, fn)

    def set_timer_interval(self, interval_ns: int, fn: Callable[[], None]) -> int:
        if interval_ns <= 0:
            api.trap(f"timer interval must be positive, got {interval_ns}")
        return self._add_timer(interval_ns, interval_ns, fn)

    def clear_timer(self, timer_id: int) -> None:
        self._host.cancel_timer(timer_id)


class CanisterHost:
    """One canister instance with its certified data and timers; executes messages synchronously.

    Python canister code runs to completion without awaiting, so executing messages one after the
    other in the devnet's event loop gives the IC's guarantee that a canister runs one message at a
    time.
    """

    def __init__(self, canister_id: Principal, canister_class: type[api.Canister], instance: api.Canister) -> None:
        self.canister_id = canister_id
        self.instance = instance
        self.methods = canister_class.exported_methods()
        self.module_hash = hashlib.sha256(
            f"{canister_class.__module__}.{canister_class.__qualname__}".encode()
        ).digest()
        self.certified_data = b""
        self._timers: list[_Timer] = []
        self._live_timers: set[int] = set()
        self._timer_ids = itertools.count(1)

    @classmethod
    def install(cls, canister_id: Principal, canister_class: type[api.Canister], now_ns: int) -> CanisterHost:
        """Create the canister and run its ``init`` hook (a trap there is logged, as a failed install)."""
        host = cls(canister_id, canister_class, canister_class())
        host._run_hook(host.instance.init, now_ns)
        return host

    @classmethod
    def restore(
        cls,
        canister_id: Principal,
        canister_class: type[api.Canister],
        instance: api.Canister,
        certified_data: bytes,
        now_ns: int,
    ) -> CanisterHost:
        """Rehost a persisted instance and run ``post_upgrade`` (timers are not persisted, as on upgrade)."""
        host = cls(canister_id, canister_class, instance)
        host.certified_data = certified_data
        host._run_hook(instance.post_upgrade, now_ns)
        return host

    def _run_hook(self, hook: Callable[[], None], now_ns: int) -> None:
        context = _Context(self, self.canister_id, now_ns, is_query=False)
        with api.system_context(context):
            try:
                hook()
                context.commit()
            except Exception as exc:
                log.error("canister %s: %s failed: %r", self.canister_id, hook.__name__, exc)

    def candid_service(self) -> str:
        """The canister's interface as .did text: its ``CANDID`` definitions and a service of its methods."""
        lines = [textwrap.dedent(self.instance.CANDID).strip(), "service : {"]
        for name, spec in sorted(self.methods.items()):
            mode = " query" if spec.kind == "query" else ""
            lines.append(f'  "{name}" : {spec.signature}{mode};')
        lines.append("}")
        return "\n".join(line for line in lines if line) + "\n"

    # -- messages ------------------------------------------------------------------------------------

    def method_kind(self, method: str) -> str | None:
        spec = self.methods.get(method)
        return None if spec is None else spec.kind

    def execute(
        self,
        method: str,
        arg: bytes,
        caller: Principal,
        now_ns: int,
        *,
        is_query: bool,
        certificate: Callable[[], bytes | None] | None = None,
    ) -> bytes:
        """Run ``method`` and return the Candid-encoded reply; raise :class:`Reject` otherwise.

        As on the IC, an update method may be run through the query endpoint: its state changes
        must then be discarded, so it runs on a copy of the canister. A query method called as an
        update runs in replicated mode (its effects persist), as on the IC.
        """
        spec = self.methods.get(method)
        if spec is None:
            raise method_not_found(self.canister_id, "query" if is_query else "update", method)
        context = _Context(self, caller, now_ns, is_query=is_query, certificate=certificate)
        snapshot = None if is_query else self._snapshot()
        try:
            return self._run(spec, method, arg, context, is_query=is_query)
        except Reject:
            self._roll_back(snapshot, context)
            raise

    def _snapshot(self) -> tuple[bytes, dict[str, Any] | None]:
        """What a trap must restore: the certified data and, for ``ROLLBACK_ON_TRAP`` canisters, ``__dict__``."""
        attributes = None
        if self.instance.ROLLBACK_ON_TRAP:
            # The memo keeps references to the instance itself (bound methods in attributes) pointing at it.
            attributes = copy.deepcopy(self.instance.__dict__, {id(self.instance): self.instance})
        return self.certified_data, attributes

    def _roll_back(self, snapshot: tuple[bytes, dict[str, Any] | None] | None, context: _Context) -> None:
        """Undo a trapped message: certified data, the timers it set, and the attributes when snapshotted."""
        if snapshot is None:
            return
        self.certified_data, attributes = snapshot
        for timer_id in context.timers_added:
            self.cancel_timer(timer_id)
        if attributes is not None:
            # In place, so that timers and handlers bound to the instance keep working.
            self.instance.__dict__.clear()
            self.instance.__dict__.update(attributes)

    def _run(self, spec: api.MethodSpec, method: str, arg: bytes, context: _Context, *, is_query: bool) -> bytes:
        with api.system_context(context):
            try:
                args = candid.decode(arg, list(spec.arg_types))
            except CandidError as exc:
                raise called_trap(self.canister_id, f"failed to decode call arguments: {exc}") from None
            except Exception as exc:
                # The decoder should raise CandidError only; a bug there must cost one message, not the round.
                log.exception("canister %s: the Candid decoder failed on a %s argument", self.canister_id, method)
                raise called_trap(self.canister_id, f"failed to decode call arguments: {exc!r}") from None
            try:
                instance = copy.deepcopy(self.instance) if is_query and spec.kind == "update" else self.instance
                result = getattr(instance, method)(*args)
                context.commit()
            except api.Trap as exc:
                raise called_trap(self.canister_id, exc.message) from None
            except Exception as exc:
                raise trapped(self.canister_id, exc) from None
            try:
                return candid.encode(list(spec.ret_types), _result_values(result, len(spec.ret_types)))
            except Exception as exc:  # a reply that does not fit the declared types is the canister's error
                raise called_trap(self.canister_id, f"failed to encode the reply: {exc}") from None

    # -- timers ------------------------------------------------------------------------------------------

    def add_timer(self, due_ns: int, interval_ns: int | None, fn: Callable[[], None]) -> int:
        timer_id = next(self._timer_ids)
        heapq.heappush(self._timers, _Timer(due_ns, timer_id, interval_ns, fn))
        self._live_timers.add(timer_id)
        return timer_id

    def cancel_timer(self, timer_id: int) -> None:
        self._live_timers.discard(timer_id)  # the heap entry is dropped lazily when it comes due

    def run_due_timers(self, now_ns: int) -> int:
        """Run every timer due at ``now_ns`` in due order; returns how many firings ran.

        Interval timers follow ``ic-cdk-timers`` 1.x (earlier releases rescheduled from the time of
        the firing, which made an interval drift by up to a round each time): the next firing is
        due one interval after the *scheduled* time of this one, so the average rate is the nominal
        one whatever the round length. An interval timer overdue by several intervals catches up
        within the round, at most :data:`MAX_FIRINGS_PER_ROUND` times (ic-cdk-timers refuses a
        sixth concurrent call of one timer); if it is still overdue then, the missed firings are
        skipped and the next one is due one interval after ``now_ns``. A timer that traps is logged
        and otherwise ignored (as the IC drops a failed timer task; an interval timer stays armed).
        """
        ran = 0
        firings: dict[int, int] = {}
        while self._timers and self._timers[0].due_ns <= now_ns:
            timer = heapq.heappop(self._timers)
            if timer.timer_id not in self._live_timers:
                continue
            if timer.interval_ns is None:
                self._live_timers.discard(timer.timer_id)
            else:
                fired = firings[timer.timer_id] = firings.get(timer.timer_id, 0) + 1
                timer.due_ns += timer.interval_ns
                if fired >= MAX_FIRINGS_PER_ROUND and timer.due_ns <= now_ns:
                    timer.due_ns = now_ns + timer.interval_ns
                heapq.heappush(self._timers, timer)
            ran += 1
            context = _Context(self, self.canister_id, now_ns, is_query=False)
            snapshot = None
            with api.system_context(context):
                try:
                    snapshot = self._snapshot()
                    timer.fn()
                    context.commit()
                except Exception as exc:
                    log.warning("canister %s: timer %d trapped: %r", self.canister_id, timer.timer_id, exc)
                    self._roll_back(snapshot, context)
        return ran


def _result_values(result: Any, count: int) -> list[Any]:
    if count == 0:
        return []
    if count == 1:
        return [result]
    if not isinstance(result, tuple) or len(result) != count:
        raise TypeError(f"a method with {count} results must return a tuple of {count} values")
    return list(result)
