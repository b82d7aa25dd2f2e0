"""Hosting one WebAssembly canister: its instance, executions, transactional state, timers and calls.

:class:`WasmHost` has the interface of the Python canisters' :class:`~icws_fast.devnet.runtime.CanisterHost`
(``execute``, ``method_kind``, ``run_due_timers``, ``certified_data``, ``candid_service``...), so
the replica, its rounds and certification, and the HTTP layer serve both kinds alike.

Transactions: before each execution the host snapshots what the canister can change besides
memory — its mutable globals, the certified data and the global timer; stable memory is copied
lazily, on the first write of the execution; the Wasm memory is compared with its committed image
after the execution (:class:`~icws_fast.devnet.wasm.memory.MemoryImage`: only dirty pages are
copied). A trap restores all of it and drops what the execution produced (reply, outgoing calls);
a query always restores it, so it leaves no trace. Memory that grew during a rolled-back execution
keeps its new size (zeroed): Wasm memory cannot shrink.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import wasmtime

from icws_fast.devnet.runtime import Reject, called_trap, method_not_found, wasm_trapped
from icws_fast.devnet.wasm import binary
from icws_fast.devnet.wasm.calls import Call, Callback, CallContext, Network, Rejected, Reply, Result
from icws_fast.devnet.wasm.engine import compile_module, default_cache_dir, engine
from icws_fast.devnet.wasm.memory import MemoryImage
from icws_fast.devnet.wasm.system_api import (
    CLEANUP,
    HEARTBEAT,
    INIT,
    INSPECT,
    POST_UPGRADE,
    PRE_UPGRADE,
    QUERY,
    REJECT,
    REPLIED_QUERY,
    REPLY,
    TIMER,
    UPDATE,
    CanisterTrap,
    Execution,
    SystemApi,
)
from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

log = logging.getLogger(__name__)

#: The IC's instruction limits per message (updates, timers, callbacks; queries).
UPDATE_INSTRUCTION_LIMIT: Final = 40_000_000_000
QUERY_INSTRUCTION_LIMIT: Final = 5_000_000_000
#: The IC's limit on a reply (2 MiB for replicated executions; the devnet applies it to every reply).
MAX_RESPONSE_BYTES: Final = 2 * 1024 * 1024
_DOCS: Final = "https://internetcomputer.org/docs/current/references/execution-errors"
_TRAP_TEXT: Final = {
    wasmtime.TrapCode.UNREACHABLE: "unreachable",
    wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS: "heap out of bounds",
    wasmtime.TrapCode.HEAP_MISALIGNED: "heap misaligned",
    wasmtime.TrapCode.STACK_OVERFLOW: "stack overflow",
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "integer division by 0",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "integer overflow",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "invalid conversion to integer",
    wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS: "table out of bounds",
    wasmtime.TrapCode.INDIRECT_CALL_TO_NULL: "uninitialized element",
    wasmtime.TrapCode.BAD_SIGNATURE: "indirect call type mismatch",
}


@dataclass(frozen=True)
class WasmCanister:
    """A canister module for the devnet to install: the ``.wasm`` file and its init arguments as Candid text."""

    path: Path
    init_arg: str | None = None
    instruction_limit: int = UPDATE_INSTRUCTION_LIMIT
    query_instruction_limit: int = QUERY_INSTRUCTION_LIMIT
    #: Where compiled modules are cached (None: :func:`~icws_fast.devnet.wasm.engine.default_cache_dir`).
    cache_dir: Path | None = None


@dataclass
class WasmState:
    """Everything that persists of a Wasm canister between two runs of the devnet."""

    module_hash: bytes
    memory: bytes
    globals: list[Any]
    stable: bytes
    certified_data: bytes
    global_timer: int
    version: int = 0
    #: The module itself, so that an upgrade can run its ``canister_pre_upgrade``.
    wasm: bytes = b""


@dataclass(slots=True)
class _Snapshot:
    """What an execution may change besides memory (which :class:`MemoryImage` tracks)."""

    globals: list[Any]
    certified_data: bytes
    global_timer: int
    global_timer_set_at: int


class WasmHost:
    """One Wasm canister instance; executes messages synchronously, one at a time."""

    max_response_bytes = MAX_RESPONSE_BYTES

    def __init__(
        self, canister_id: Principal, name: str, spec: WasmCanister, network: Network, *, wasm: bytes | None = None
    ) -> None:
        """Instantiate ``spec``'s module (or the module ``wasm``, when given: a saved one being upgraded)."""
        self.canister_id = canister_id
        self.name = name
        self.spec = spec
        self.network = network
        try:
            self.wasm = spec.path.read_bytes() if wasm is None else wasm
        except OSError as exc:
            raise binary.WasmModuleError(f"canister {name}: cannot read the module {spec.path}: {exc}") from None
        self.module_hash = hashlib.sha256(self.wasm).digest()
        try:
            candid_service = binary.canister_metadata(self.wasm, "candid:service")
            instrumented = binary.export_internals(self.wasm)
        except binary.WasmModuleError as exc:
            raise binary.WasmModuleError(f"canister {name}: {spec.path} is not a valid module: {exc}") from None
        self._candid = candid_service.decode(errors="replace") if candid_service is not None else "service : {}\n"
        try:
            self.module = compile_module(instrumented, spec.cache_dir or default_cache_dir())
        except wasmtime.WasmtimeError as exc:
            raise binary.WasmModuleError(f"canister {name}: {spec.path} is not a valid module: {exc}") from None
        self.methods: dict[str, str] = {}  # method name -> "update" | "query"
        self._entry_points: dict[str, str] = {}  # method name -> export name
        for export in self.module.exports:
            kind, _, method = (export.name or "").partition(" ")
            if kind in ("canister_update", "canister_query", "canister_composite_query") and method:
                self.methods[method] = "update" if kind == "canister_update" else "query"
                self._entry_points[method] = export.name
        exported = {export.name for export in self.module.exports}
        self._has = exported.__contains__
        self.certified_data = b""
        self.global_timer = 0
        self.global_timer_set_at = 0
        self.stable = bytearray()
        self._stable_backup: bytes | None = None
        self.controllers: frozenset[Principal] = frozenset()
        self.cycles = 10**15
        self.version = 0
        self.execution: Execution | None = None
        self.store = wasmtime.Store(engine())
        linker = wasmtime.Linker(engine())
        SystemApi(self).link(linker, self.module)
        try:
            self.instance = linker.instantiate(self.store, self.module)
        except (wasmtime.WasmtimeError, wasmtime.Trap, CanisterTrap) as exc:
            raise binary.WasmModuleError(f"canister {name}: cannot instantiate {spec.path}: {exc}") from None
        exports = self.instance.exports(self.store)
        self._globals: list[wasmtime.Global] = []
        memory, table = exports.get(binary.MEMORY_EXPORT), exports.get(binary.TABLE_EXPORT)
        self._memory = memory if isinstance(memory, wasmtime.Memory) else None
        self._table = table if isinstance(table, wasmtime.Table) else None
        self._image = MemoryImage(self._memory, self.store) if self._memory is not None else None
        for export_name, item in exports.items():
            if (
                isinstance(item, wasmtime.Global)
                and export_name.startswith(binary.GLOBAL_EXPORT_PREFIX)
                and item.type(self.store).mutable
            ):
                self._globals.append(item)
        self._exports = exports

    # -- installation ------------------------------------------------------------------------------------

    @classmethod
    def install(cls, canister_id: Principal, name: str, spec: WasmCanister, network: Network, now_ns: int) -> WasmHost:
        """Instantiate the module and run ``canister_init`` with the init arguments; raises on a trap."""
        host = cls(canister_id, name, spec, network)
        arg = host.init_arg()
        host._start()
        if host._has("canister_init"):
            execution = Execution(INIT, Principal.anonymous(), now_ns, arg=arg)
            trap = host._run(host._export("canister_init"), execution)
            if trap is not None:
                raise binary.WasmModuleError(f"canister {name}: canister_init failed: {trap.message}")
            network.drain(now_ns)
        return host

    @classmethod
    def restore(  # noqa: PLR0917 - install's parameters and the saved state
        cls, canister_id: Principal, name: str, spec: WasmCanister, network: Network, state: WasmState, now_ns: int
    ) -> WasmHost:
        """Resume a saved canister: the same module gets its memory back; another module is an upgrade.

        An upgrade runs ``canister_pre_upgrade`` on the saved module (kept in the state), then
        ``canister_post_upgrade`` on the new one with the init arguments; stable memory carries over,
        and so does the main memory of a module with enhanced orthogonal persistence (Motoko's
        ``enhanced-orthogonal-persistence`` metadata), as on the IC.
        """
        host = cls(canister_id, name, spec, network)
        if state.module_hash == host.module_hash:
            host._load(state)
            return host
        if state.wasm:
            old = cls(canister_id, name, spec, network, wasm=state.wasm)
            old._load(state)
            if old._has("canister_pre_upgrade"):
                trap = old._run(
                    old._export("canister_pre_upgrade"), Execution(PRE_UPGRADE, Principal.anonymous(), now_ns)
                )
                if trap is not None:
                    raise binary.WasmModuleError(
                        f"canister {name}: canister_pre_upgrade of the saved module failed, so {spec.path} cannot "
                        f"replace it (start with another --state-dir to install it afresh): {trap.message}"
                    )
            state = old.instance_state
        host.stable = bytearray(state.stable)
        host.certified_data = state.certified_data
        host.version = state.version + 1
        if binary.canister_metadata(host.wasm, "enhanced-orthogonal-persistence") is not None and host._image:
            host._image.load(state.memory)
        host._start()
        if host._has("canister_post_upgrade"):
            execution = Execution(POST_UPGRADE, Principal.anonymous(), now_ns, arg=host.init_arg())
            trap = host._run(host._export("canister_post_upgrade"), execution)
            if trap is not None:
                raise binary.WasmModuleError(f"canister {name}: canister_post_upgrade failed: {trap.message}")
        return host

    def _start(self) -> None:
        """Run the module's start function (when it has one), as instantiation on the IC does."""
        start = self._exports.get(binary.START_EXPORT)
        if not isinstance(start, wasmtime.Func):
            return
        self.store.set_fuel(self.spec.instruction_limit)
        try:
            start(self.store)
        except (wasmtime.Trap, CanisterTrap) as exc:
            raise binary.WasmModuleError(f"canister {self.name}: the start function trapped: {exc}") from None
        if self._image is not None:
            self._image.commit()

    def _load(self, state: WasmState) -> None:
        """Take the saved state of this same module: memory, globals, stable memory, certified data, timer."""
        if self._image is not None:
            self._image.load(state.memory)
        for global_, value in zip(self._globals, state.globals, strict=True):
            global_.set_value(self.store, value)
        self.stable = bytearray(state.stable)
        self.certified_data = state.certified_data
        self.global_timer = state.global_timer
        self.version = state.version

    @property
    def instance_state(self) -> WasmState:
        """What :mod:`icws_fast.devnet.storage` persists."""
        return WasmState(
            self.module_hash,
            self._image.contents() if self._image is not None else b"",
            [g.value(self.store) for g in self._globals],
            bytes(self.stable),
            self.certified_data,
            self.global_timer,
            self.version,
            self.wasm,
        )

    def init_arg(self) -> bytes:
        """The init arguments: ``spec.init_arg`` (Candid text) encoded for the module's init types."""
        types = self.init_types()
        text = self.spec.init_arg
        if text is None:
            if types:
                raise binary.WasmModuleError(
                    f"canister {self.name} takes init arguments {candid_args(types)}: "
                    f"give them as Candid text, e.g. --init-arg '{self.name}=(...)'"
                )
            text = "()"
        try:
            return candid.encode(types, candid.parse_value_args(text, types))
        except CandidError as exc:
            raise binary.WasmModuleError(
                f"canister {self.name}: bad init arguments {text!r} for {candid_args(types)}: {exc}"
            ) from None

    def init_types(self) -> list[candid.Type]:
        """The init argument types: the ``candid:args`` metadata (Motoko), else the service's init types."""
        args = binary.canister_metadata(self.wasm, "candid:args")
        try:
            if args is not None:
                return candid.parse_args(args.decode(errors="replace"), self._candid)
            return list(candid.parse_did(self._candid).init or ())
        except CandidError as exc:
            raise binary.WasmModuleError(f"canister {self.name}: its Candid metadata does not parse: {exc}") from None

    def candid_service(self) -> str:
        return self._candid

    def method_kind(self, method: str) -> str | None:
        return self.methods.get(method)

    # -- memory -------------------------------------------------------------------------------------------

    def _memory_or_trap(self) -> wasmtime.Memory:
        if self._memory is None:
            raise CanisterTrap("the module exports no memory")
        return self._memory

    def read_memory(self, src: int, size: int) -> bytes:
        memory = self._memory_or_trap()
        if src < 0 or size < 0 or src + size > memory.data_len(self.store):
            raise CanisterTrap(f"heap out of bounds: {size} bytes at {src}")
        return bytes(memory.read(self.store, src, src + size))

    def write_memory(self, dst: int, data: bytes) -> None:
        memory = self._memory_or_trap()
        if dst < 0 or dst + len(data) > memory.data_len(self.store):
            raise CanisterTrap(f"heap out of bounds: {len(data)} bytes at {dst}")
        memory.write(self.store, data, dst)

    def touch_stable(self) -> None:
        """Called before stable memory changes: the first change of an execution saves it for a rollback."""
        if self._stable_backup is None:
            self._stable_backup = bytes(self.stable)

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            [g.value(self.store) for g in self._globals],
            self.certified_data,
            self.global_timer,
            self.global_timer_set_at,
        )

    def _restore(self, snapshot: _Snapshot) -> None:
        if self._image is not None:
            self._image.roll_back()
        for global_, value in zip(self._globals, snapshot.globals, strict=True):
            global_.set_value(self.store, value)
        self.certified_data = snapshot.certified_data
        self.global_timer = snapshot.global_timer
        self.global_timer_set_at = snapshot.global_timer_set_at
        if self._stable_backup is not None:
            self.stable = bytearray(self._stable_backup)
            self._stable_backup = None

    # -- executions --------------------------------------------------------------------------------------

    def _export(self, name: str) -> Callable[[], object]:
        func = self._exports[name]
        assert isinstance(func, wasmtime.Func)
        return lambda: func(self.store)

    def _callback(self, callback: Callback) -> Callable[[], object]:
        def run() -> object:
            table = self._table
            func = table.get(self.store, callback.fun) if table is not None else None
            if not isinstance(func, wasmtime.Func):
                raise CanisterTrap(f"callback {callback.fun} is not a function of the canister's table")
            return func(self.store, callback.env)

        return run

    def _run(self, target: Callable[[], object], execution: Execution, *, keep: bool = True) -> Rejected | None:
        """Execute ``target``; commit its effects, or roll them back on a trap (always when not ``keep``).

        Returns the reject that describes the trap, or None when the execution ended well.
        """
        snapshot = self._snapshot()
        limit = self.spec.query_instruction_limit if execution.kind == QUERY else self.spec.instruction_limit
        execution.fuel_limit = limit
        self.store.set_fuel(limit)
        self.execution = execution
        trap: Reject | None = None
        try:
            target()
        except CanisterTrap as exc:
            trap = self._trap_reject(exc)
        except wasmtime.Trap as exc:
            trap = self._wasm_trap_reject(exc)
        except Exception as exc:  # a fault of the host must cost this message only
            log.exception("canister %s: the host failed executing a %s", self.name, execution.kind)
            trap = wasm_trapped(self.canister_id, f"devnet host error: {exc!r}")
        finally:
            self.execution = None
        if trap is not None or not keep:
            self._restore(snapshot)
            return Rejected.of(trap) if trap is not None else None
        self._stable_backup = None
        if self._image is not None:
            self._image.commit()
        context = execution.context
        if context is not None:
            for call in execution.calls:
                context.outstanding += 1
                self.network.send(call)
            if execution.result is not None:
                self._answer(context, execution.result)
        return None

    def _trap_reject(self, exc: CanisterTrap) -> Reject:
        if exc.explicit:
            return called_trap(self.canister_id, exc.message)
        return Reject(
            5,
            f"Error from Canister {self.canister_id}: Canister violated contract: {exc.message}.\n"
            f"This is likely an error with the compiler/CDK toolchain being used to build the canister. "
            f"See documentation: {_DOCS}#canister-contract-violation",
            "IC0504",
        )

    def _wasm_trap_reject(self, exc: wasmtime.Trap) -> Reject:
        code = exc.trap_code
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            limit = self.execution.fuel_limit if self.execution is not None else self.spec.instruction_limit
            return Reject(
                5,
                f"Error from Canister {self.canister_id}: Canister exceeded the limit of {limit} instructions "
                f"for single message execution.\nConsider breaking up the work into multiple messages. "
                f"See documentation: {_DOCS}#instruction-limit-exceeded",
                "IC0522",
            )
        text = _TRAP_TEXT.get(code) if code is not None else None
        return wasm_trapped(self.canister_id, text or exc.message.splitlines()[-1].removeprefix("wasm trap: "))

    def _answer(self, context: CallContext, result: Result) -> None:
        context.replied = True
        if context.origin is None:
            context.result = result
        else:
            self.network.respond(context.origin, result)

    def _close_if_done(self, context: CallContext, trap: Rejected | None) -> None:
        """A context with no reply and no call out any more is answered: the trap, or "did not reply"."""
        if context.replied or context.outstanding:
            return
        self._answer(context, trap or _did_not_reply(self.canister_id))

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
        """Run an ingress message (or a query) and return its reply; raise :class:`Reject` otherwise.

        An update runs with every call it makes (and their callbacks) until its call context is
        answered; a query method, however it is called, leaves no trace.
        """
        kind = self.methods.get(method)
        if kind is None:
            raise method_not_found(self.canister_id, "query" if is_query else "update", method)
        export = self._export(self._entry_points[method])
        if is_query or kind == "query":
            mode = QUERY if is_query else REPLIED_QUERY
            execution = Execution(mode, caller, now_ns, arg=arg, certificate=certificate, method=method)
            trap = self._run(export, execution, keep=False)
            return _reply_or_raise(trap or execution.result, self.canister_id)
        context = CallContext(caller, None)
        trap = self._run(export, Execution(UPDATE, caller, now_ns, context=context, arg=arg, method=method))
        self._close_if_done(context, trap)
        self.network.drain(now_ns)
        return _reply_or_raise(context.result, self.canister_id)

    def inspect_message(self, method: str, arg: bytes, caller: Principal, now_ns: int) -> Reject | None:
        """Run ``canister_inspect_message`` (when exported) for an ingress call; the reject when it refuses.

        It runs like a query (no trace); the message is accepted only when it calls ``ic0.accept_message``.
        """
        if not self._has("canister_inspect_message"):
            return None
        execution = Execution(INSPECT, caller, now_ns, arg=arg, method=method)
        trap = self._run(self._export("canister_inspect_message"), execution, keep=False)
        if trap is not None:
            return trap.to_reject()
        if execution.result is None:
            return Reject(4, f"Error from Canister {self.canister_id}: Canister rejected the message", "IC0516")
        return None

    def handle_request(self, call: Call, now_ns: int) -> None:
        """Run a call from a canister (this one included); its answer goes back through the network."""
        kind = self.methods.get(call.method)
        if kind is None:
            reject = method_not_found(self.canister_id, "update", call.method)
            self.network.respond(call, Rejected.of(reject))
            return
        context = CallContext(call.caller, call)
        export = self._export(self._entry_points[call.method])
        if kind == "query":
            execution = Execution(REPLIED_QUERY, call.caller, now_ns, arg=bytes(call.arg), method=call.method)
            trap = self._run(export, execution, keep=False)
            result = trap or execution.result
            self.network.respond(call, result if result is not None else _did_not_reply(self.canister_id))
            return
        execution = Execution(UPDATE, call.caller, now_ns, context=context, arg=bytes(call.arg), method=call.method)
        trap = self._run(export, execution)
        self._close_if_done(context, trap)

    def handle_response(self, call: Call, result: Result, now_ns: int) -> None:
        """Run the reply or reject callback of ``call``, then its cleanup callback if that trapped."""
        context = call.context
        context.outstanding -= 1
        if isinstance(result, Reply):
            execution = Execution(REPLY, context.caller, now_ns, context=context, arg=result.data)
            trap = self._run(self._callback(call.on_reply), execution)
        else:
            execution = Execution(REJECT, context.caller, now_ns, context=context, reject=result)
            trap = self._run(self._callback(call.on_reject), execution)
        if trap is not None:
            log.warning("canister %s: %s trapped: %s", self.name, execution.kind, trap.message)
            if call.on_cleanup is not None:
                cleanup = Execution(CLEANUP, context.caller, now_ns, context=context)
                cleanup_trap = self._run(self._callback(call.on_cleanup), cleanup)
                if cleanup_trap is not None:
                    log.warning("canister %s: cleanup trapped: %s", self.name, cleanup_trap.message)
        self._close_if_done(context, trap)

    # -- timers --------------------------------------------------------------------------------------------

    def run_due_timers(self, now_ns: int) -> int:
        """Run the global timer when due (set in an earlier round) and the heartbeat; returns how many ran.

        The global timer is deactivated before it runs, as on the IC: the canister sets it again if it
        wants another firing. The calls they make are delivered before this returns.
        """
        ran = 0
        if (
            self.global_timer
            and self.global_timer <= now_ns
            and self.global_timer_set_at < now_ns
            and self._has("canister_global_timer")
        ):
            self.global_timer = 0
            trap = self._run(self._export("canister_global_timer"), Execution(TIMER, self.canister_id, now_ns))
            if trap is not None:
                log.warning("canister %s: canister_global_timer trapped: %s", self.name, trap.message)
            ran += 1
        if self._has("canister_heartbeat"):
            trap = self._run(self._export("canister_heartbeat"), Execution(HEARTBEAT, self.canister_id, now_ns))
            if trap is not None:
                log.warning("canister %s: canister_heartbeat trapped: %s", self.name, trap.message)
            ran += 1
        return ran + self.network.drain(now_ns)


def _did_not_reply(canister_id: Principal) -> Rejected:
    return Rejected(5, f"Error from Canister {canister_id}: Canister did not produce a response.", "IC0506")


def _reply_or_raise(result: Result | None, canister_id: Principal) -> bytes:
    if result is None:
        result = _did_not_reply(canister_id)
    if isinstance(result, Rejected):
        raise result.to_reject()
    return result.data


def candid_args(types: list[candid.Type]) -> str:
    return "(" + ", ".join(str(t) for t in types) + ")"
