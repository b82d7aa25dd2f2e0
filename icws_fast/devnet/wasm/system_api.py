"""The ``ic0`` System API imports of a Wasm canister, with the interface specification's semantics.

One :class:`Execution` describes the message being executed (its kind, argument, caller, call
context, reply being built, calls being made); the host functions read and change it. Effects that
a trap must undo (the reply, outgoing calls, certified data, the global timer) are only kept in the
execution or in the host's rolled-back state until the execution ends well (see ``host.py``).

Every function is registered with the type the module declares for it, so the same Python code
serves wasm32 (``i32`` addresses) and wasm64 (``i64`` addresses). An import the devnet does not
implement still links; calling it traps with a message that names it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import wasmtime

from icws_fast.devnet.wasm.calls import Call, Callback, CallContext, Rejected, Reply, Result
from icws_fast.ic.principal import Principal

if TYPE_CHECKING:
    from icws_fast.devnet.wasm.host import WasmHost

log = logging.getLogger(__name__)

STABLE_PAGE: Final = 65536
#: Stable memory limit of the IC (500 GiB) in pages; the devnet keeps stable memory in RAM, so far less fits.
MAX_STABLE_PAGES: Final = 500 * (1 << 30) // STABLE_PAGE
#: ``stable_*`` (32-bit) calls see at most 4 GiB.
MAX_STABLE32_PAGES: Final = 1 << 16
MAX_CERTIFIED_DATA: Final = 32

# Execution kinds, named as the IC names the modes in its errors ("cannot be executed in <mode> mode").
INIT, UPDATE, QUERY, REPLIED_QUERY = "init", "update", "non replicated query", "replicated query"
REPLY, REJECT, CLEANUP = "reply callback", "reject callback", "cleanup"
TIMER, HEARTBEAT, PRE_UPGRADE, POST_UPGRADE, INSPECT = (
    "global timer",
    "heartbeat",
    "pre upgrade",
    "post upgrade",
    "inspect message",
)
_ARG_KINDS: Final = frozenset({INIT, UPDATE, QUERY, REPLIED_QUERY, REPLY, POST_UPGRADE, INSPECT})
_CALLER_KINDS: Final = frozenset({INIT, UPDATE, QUERY, REPLIED_QUERY, REPLY, REJECT, CLEANUP, POST_UPGRADE, INSPECT})
_REPLY_KINDS: Final = frozenset({UPDATE, QUERY, REPLIED_QUERY, REPLY, REJECT})
_CALL_KINDS: Final = frozenset({UPDATE, REPLY, REJECT, TIMER, HEARTBEAT})
_METHOD_KINDS: Final = frozenset({UPDATE, QUERY, REPLIED_QUERY, INSPECT})
_STATE_KINDS: Final = frozenset({INIT, UPDATE, REPLY, REJECT, CLEANUP, TIMER, HEARTBEAT, PRE_UPGRADE, POST_UPGRADE})


class CanisterTrap(Exception):
    """The canister trapped: ``explicit`` for ``ic0.trap`` (the message is the canister's), else a Wasm trap."""

    def __init__(self, message: str, *, explicit: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.explicit = explicit


@dataclass(slots=True)
class Execution:
    """One message being executed."""

    kind: str
    caller: Principal
    now_ns: int
    context: CallContext | None = None
    arg: bytes | None = None
    reject: Rejected | None = None
    certificate: Callable[[], bytes | None] | None = None
    reply: bytearray = field(default_factory=bytearray)
    result: Result | None = None
    calls: list[Call] = field(default_factory=list)
    pending: Call | None = None
    fuel_limit: int = 0
    #: The method called, for ``msg_method_name_*`` (an update, a query, or the one inspected).
    method: str = ""


def _mode_trap(name: str, kind: str) -> CanisterTrap:
    return CanisterTrap(f'"ic0_{name}" cannot be executed in {kind} mode')


class SystemApi:
    """The ``ic0`` functions of one canister instance, bound to its host."""

    def __init__(self, host: WasmHost) -> None:
        self.host = host

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def _exec(self) -> Execution:
        execution = self.host.execution
        if execution is None:  # the start function may only trap or print, as on the IC
            raise CanisterTrap("ic0 functions cannot be called from the start function")
        return execution

    def _require(self, name: str, kinds: frozenset[str]) -> Execution:
        execution = self._exec
        if execution.kind not in kinds:
            raise _mode_trap(name, execution.kind)
        return execution

    def _read(self, src: int, size: int) -> bytes:
        return self.host.read_memory(src, size)

    def _write(self, dst: int, data: bytes) -> None:
        self.host.write_memory(dst, data)

    def _copy_out(self, name: str, dst: int, offset: int, size: int, data: bytes) -> None:
        if offset + size > len(data):
            raise CanisterTrap(f"ic0.{name}: src={offset} + length={size} exceeds the slice size={len(data)}")
        self._write(dst, data[offset : offset + size])

    def link(self, linker: wasmtime.Linker, module: wasmtime.Module) -> None:
        """Define every ``ic0`` import of ``module`` in ``linker``."""
        for imported in module.imports:
            if imported.module != "ic0" or not isinstance(imported.type, wasmtime.FuncType):
                continue  # instantiation then fails, naming the unresolved import
            name = imported.name
            assert name is not None
            func = getattr(self, name, None)
            if func is None or name.startswith("_"):
                func = _unsupported(name)
            linker.define_func("ic0", name, imported.type, func)

    # -- message data ----------------------------------------------------------------------------------

    def _arg(self, name: str) -> bytes:
        execution = self._require(name, _ARG_KINDS)
        assert execution.arg is not None
        return execution.arg

    def msg_arg_data_size(self) -> int:
        return len(self._arg("msg_arg_data_size"))

    def msg_arg_data_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_arg_data_copy", dst, offset, size, self._arg("msg_arg_data_copy"))

    def _caller(self, name: str) -> bytes:
        return self._require(name, _CALLER_KINDS).caller.bytes

    def msg_caller_size(self) -> int:
        return len(self._caller("msg_caller_size"))

    def msg_caller_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_caller_copy", dst, offset, size, self._caller("msg_caller_copy"))

    def msg_reject_code(self) -> int:
        execution = self._require("msg_reject_code", frozenset({REPLY, REJECT}))
        return execution.reject.code if execution.reject is not None else 0

    def _reject_message(self, name: str) -> bytes:
        execution = self._require(name, frozenset({REJECT}))
        assert execution.reject is not None
        return execution.reject.message.encode()

    def msg_reject_msg_size(self) -> int:
        return len(self._reject_message("msg_reject_msg_size"))

    def msg_reject_msg_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_reject_msg_copy", dst, offset, size, self._reject_message("msg_reject_msg_copy"))

    def _replying(self, name: str) -> Execution:
        execution = self._require(name, _REPLY_KINDS)
        if execution.result is not None or (execution.context is not None and execution.context.replied):
            raise CanisterTrap(f"ic0.{name}: the call is already replied")
        return execution

    def msg_reply_data_append(self, src: int, size: int) -> None:
        execution = self._replying("msg_reply_data_append")
        execution.reply += self._read(src, size)
        if len(execution.reply) > self.host.max_response_bytes:
            limit = self.host.max_response_bytes
            raise CanisterTrap(f"ic0.msg_reply_data_append: application payload size exceeds {limit}")

    def msg_reply(self) -> None:
        execution = self._replying("msg_reply")
        execution.result = Reply(bytes(execution.reply))

    def msg_reject(self, src: int, size: int) -> None:
        execution = self._replying("msg_reject")
        message = self._read(src, size).decode(errors="replace")
        execution.result = Rejected(4, message, "IC0406")  # CANISTER_REJECT

    def msg_cycles_available128(self, dst: int) -> None:
        self._write(dst, bytes(16))

    def msg_cycles_refunded128(self, dst: int) -> None:
        self._write(dst, bytes(16))

    def msg_cycles_accept128(self, max_high: int, max_low: int, dst: int) -> None:
        self._write(dst, bytes(16))

    def _method_name(self, name: str) -> bytes:
        return self._require(name, _METHOD_KINDS).method.encode()

    def msg_method_name_size(self) -> int:
        return len(self._method_name("msg_method_name_size"))

    def msg_method_name_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_method_name_copy", dst, offset, size, self._method_name("msg_method_name_copy"))

    def accept_message(self) -> None:
        self._require("accept_message", frozenset({INSPECT})).result = Reply(b"")

    # -- the canister --------------------------------------------------------------------------------------

    def canister_self_size(self) -> int:
        return len(self.host.canister_id.bytes)

    def canister_self_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("canister_self_copy", dst, offset, size, self.host.canister_id.bytes)

    def canister_status(self) -> int:
        return 1  # running: the devnet never stops a canister

    def canister_version(self) -> int:
        return self.host.version

    def canister_cycle_balance128(self, dst: int) -> None:
        self._write(dst, self.host.cycles.to_bytes(16, "little"))

    def canister_liquid_cycle_balance128(self, dst: int) -> None:
        self.canister_cycle_balance128(dst)

    def is_controller(self, src: int, size: int) -> int:
        if size > 29:
            raise CanisterTrap(f"ic0.is_controller: {size} bytes is not a principal")
        return int(Principal(self._read(src, size)) in self.host.controllers)

    def debug_print(self, src: int, size: int) -> None:
        text = self._read(src, size).decode(errors="replace")
        log.info("[Canister %s %s] %s", self.host.canister_id, self.host.name, text)

    def trap(self, src: int, size: int) -> None:
        raise CanisterTrap(self._read(src, size).decode(errors="replace"), explicit=True)

    def time(self) -> int:
        return self._exec.now_ns

    def global_timer_set(self, timestamp: int) -> int:
        self._require("global_timer_set", _STATE_KINDS)
        previous = self.host.global_timer
        self.host.global_timer = timestamp & 0xFFFF_FFFF_FFFF_FFFF
        self.host.global_timer_set_at = self._exec.now_ns
        return previous

    def performance_counter(self, counter_type: int) -> int:
        if counter_type not in (0, 1):
            raise CanisterTrap(f"ic0.performance_counter: unknown counter type {counter_type}")
        execution = self._exec
        return execution.fuel_limit - self.host.store.get_fuel()

    def certified_data_set(self, src: int, size: int) -> None:
        self._require("certified_data_set", _STATE_KINDS)
        if size > MAX_CERTIFIED_DATA:
            raise CanisterTrap(
                f"ic0_certified_data_set failed because the passed data must be no larger than "
                f"{MAX_CERTIFIED_DATA} bytes. Found {size} bytes."
            )
        self.host.certified_data = self._read(src, size)

    def _certificate(self) -> bytes | None:
        execution = self._exec
        if execution.kind != QUERY or execution.certificate is None:
            return None
        return execution.certificate()

    def data_certificate_present(self) -> int:
        return int(self._certificate() is not None)

    def _certificate_or_trap(self, name: str) -> bytes:
        certificate = self._certificate()
        if certificate is None:
            raise CanisterTrap(f"ic0.{name}: no data certificate available (only in non-replicated queries)")
        return certificate

    def data_certificate_size(self) -> int:
        return len(self._certificate_or_trap("data_certificate_size"))

    def data_certificate_copy(self, dst: int, offset: int, size: int) -> None:
        data = self._certificate_or_trap("data_certificate_copy")
        self._copy_out("data_certificate_copy", dst, offset, size, data)

    # -- stable memory ----------------------------------------------------------------------------------------

    def stable64_size(self) -> int:
        return len(self.host.stable) // STABLE_PAGE

    def stable64_grow(self, new_pages: int) -> int:
        return self._stable_grow(new_pages, MAX_STABLE_PAGES)

    def _stable_grow(self, new_pages: int, limit: int) -> int:
        old = len(self.host.stable) // STABLE_PAGE
        if old + new_pages > limit:
            return -1
        self.host.touch_stable()
        self.host.stable.extend(bytes(new_pages * STABLE_PAGE))
        return old

    def stable64_read(self, dst: int, offset: int, size: int) -> None:
        stable = self.host.stable
        if offset + size > len(stable):
            raise CanisterTrap(f"stable memory out of bounds: read of {size} bytes at {offset}, size {len(stable)}")
        self._write(dst, bytes(stable[offset : offset + size]))

    def stable64_write(self, offset: int, src: int, size: int) -> None:
        stable = self.host.stable
        if offset + size > len(stable):
            raise CanisterTrap(f"stable memory out of bounds: write of {size} bytes at {offset}, size {len(stable)}")
        data = self._read(src, size)
        self.host.touch_stable()
        self.host.stable[offset : offset + size] = data

    def stable_size(self) -> int:
        pages = self.stable64_size()
        if pages > MAX_STABLE32_PAGES:
            raise CanisterTrap("32-bit stable memory api cannot be used with more than 4 GiB of stable memory")
        return pages

    def stable_grow(self, new_pages: int) -> int:
        self.stable_size()
        return self._stable_grow(new_pages, MAX_STABLE32_PAGES) & 0xFFFF_FFFF

    def stable_read(self, dst: int, offset: int, size: int) -> None:
        self.stable64_read(dst, offset, size)

    def stable_write(self, offset: int, src: int, size: int) -> None:
        self.stable64_write(offset, src, size)

    # -- inter-canister calls --------------------------------------------------------------------------------

    def call_new(  # noqa: PLR0917 - the System API's signature
        self,
        callee_src: int,
        callee_size: int,
        name_src: int,
        name_size: int,
        reply_fun: int,
        reply_env: int,
        reject_fun: int,
        reject_env: int,
    ) -> None:
        execution = self._require("call_new", _CALL_KINDS)
        if callee_size > 29:
            raise CanisterTrap(f"ic0.call_new: {callee_size} bytes is not a principal")
        callee = Principal(self._read(callee_src, callee_size))
        method = self._read(name_src, name_size).decode(errors="replace")
        context = execution.context
        if context is None:  # a timer or heartbeat: a context nobody waits for
            context = execution.context = CallContext(self.host.canister_id, None, replied=True)
        execution.pending = Call(
            self.host.canister_id,
            callee,
            method,
            Callback(reply_fun, reply_env),
            Callback(reject_fun, reject_env),
            context,
        )

    def _pending(self, name: str) -> Call:
        call = self._exec.pending
        if call is None:
            raise CanisterTrap(f"ic0.{name}: no call is being built (call ic0.call_new first)")
        return call

    def call_data_append(self, src: int, size: int) -> None:
        self._pending("call_data_append").arg += self._read(src, size)

    def call_on_cleanup(self, fun: int, env: int) -> None:
        call = self._pending("call_on_cleanup")
        if call.on_cleanup is not None:
            raise CanisterTrap("ic0.call_on_cleanup: the cleanup callback is already set")
        call.on_cleanup = Callback(fun, env)

    def call_cycles_add128(self, high: int, low: int) -> None:
        self._pending("call_cycles_add128")

    def call_cycles_add(self, amount: int) -> None:
        self._pending("call_cycles_add")

    def call_with_best_effort_response(self, timeout_seconds: int) -> None:
        # Responses on the devnet are immediate and never dropped, so the deadline never matters.
        self._pending("call_with_best_effort_response")

    def call_perform(self) -> int:
        execution = self._exec
        call = self._pending("call_perform")
        execution.pending = None
        execution.calls.append(call)
        return 0


def _unsupported(name: str) -> Callable[..., Any]:
    def unsupported(*_args: Any) -> Any:
        raise CanisterTrap(f"ic0.{name} is not supported by the icws-fast devnet")

    return unsupported
