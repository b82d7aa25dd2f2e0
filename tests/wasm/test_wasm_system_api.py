"""The ic0 System API and the transactional semantics of the Wasm host, on a hand-written wasm32 canister.

The canister (``system_api.wat``) keeps a counter both in memory and in a (non-exported) mutable
global; its replies are raw little-endian integers. Hosts run on one in-process network.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import wasmtime

from icws_fast.devnet.runtime import Reject
from icws_fast.devnet.wasm import WasmCanister, WasmHost, WasmModuleError
from icws_fast.ic.principal import Principal
from tests.wasm.wasm_canisters import Subnet

USER = Principal.self_authenticating(b"\x02" * 44)
NOW = 1_700_000_000_000_000_000


def counters(reply: bytes) -> tuple[int, int]:
    """(counter in memory, counter in the global) from a 16-byte reply."""
    return int.from_bytes(reply[:8], "little"), int.from_bytes(reply[8:16], "little")


def update(host: WasmHost, method: str, arg: bytes = b"", now: int = NOW) -> bytes:
    return host.execute(method, arg, USER, now, is_query=False)


def query(host: WasmHost, method: str, arg: bytes = b"", certificate: bytes | None = None) -> bytes:
    return host.execute(method, arg, USER, NOW, is_query=True, certificate=lambda: certificate)


@pytest.fixture
def subnet() -> Subnet:
    return Subnet()


@pytest.fixture
def canister(subnet: Subnet, system_api_wasm: Path) -> WasmHost:
    return subnet.install(WasmCanister(system_api_wasm))


def test_update_commits_memory_and_globals(canister: WasmHost) -> None:
    assert counters(update(canister, "inc")) == (1, 1)
    assert counters(update(canister, "inc")) == (2, 2)
    assert counters(query(canister, "get")) == (2, 2)
    assert canister.certified_data == (2).to_bytes(8, "little")


def test_init_receives_the_candid_init_arguments(canister: WasmHost) -> None:
    # No candid:service in the module: no init types, so the init argument is the empty Candid tuple.
    assert int.from_bytes(query(canister, "init_arg_size"), "little") == len(b"DIDL\x00\x00")


def test_explicit_trap_rolls_back_everything(canister: WasmHost) -> None:
    update(canister, "inc")
    certified, timer = canister.certified_data, canister.global_timer
    with pytest.raises(Reject) as caught:
        update(canister, "inc_then_trap")
    assert caught.value.error_code == "IC0503"
    assert "Canister called `ic0.trap` with message: 'boom'" in caught.value.message
    # Memory, global, certified data and timer restored; the self-call it made was never sent (it would inc).
    assert counters(query(canister, "get")) == (1, 1)
    assert (canister.certified_data, canister.global_timer) == (certified, timer)


def test_wasm_trap_rolls_back_stable_memory_and_grown_memory(canister: WasmHost) -> None:
    with pytest.raises(Reject) as caught:
        update(canister, "stable_then_unreachable")
    assert caught.value.error_code == "IC0502"
    assert "Canister trapped: unreachable" in caught.value.message
    assert int.from_bytes(query(canister, "stable_size"), "little") == 0
    assert counters(query(canister, "get")) == (0, 0)
    # Wasm memory cannot shrink: the grown page stays, zeroed (a difference from the IC, documented).
    assert int.from_bytes(query(canister, "memory_size"), "little") == 2


def test_stable_memory_persists_after_success(canister: WasmHost) -> None:
    assert int.from_bytes(update(canister, "stable_write"), "little") == 1
    assert query(canister, "stable_head") == b"hello"


def test_queries_leave_no_trace(canister: WasmHost) -> None:
    update(canister, "inc")
    assert counters(query(canister, "inc_query")) == (2, 2)
    assert counters(query(canister, "get")) == (1, 1)
    # An update method run as a query is not committed either; a query method run as an update neither.
    assert counters(query(canister, "bump")) == (2, 2)
    assert counters(update(canister, "inc_query")) == (2, 2)
    assert counters(query(canister, "get")) == (1, 1)
    # Certified data cannot be set in a query (inc sets it).
    with pytest.raises(Reject, match='ic0_certified_data_set" cannot be executed in non replicated query mode'):
        query(canister, "inc")


def test_instruction_limit_turns_an_endless_loop_into_a_trap(subnet: Subnet, system_api_wasm: Path) -> None:
    host = subnet.install(WasmCanister(system_api_wasm, instruction_limit=2_000_000))
    with pytest.raises(Reject) as caught:
        update(host, "loop")
    assert caught.value.error_code == "IC0522"
    assert "exceeded the limit of 2000000 instructions for single message execution" in caught.value.message
    assert counters(update(host, "inc")) == (1, 1)


def test_global_timer_returns_previous_value_and_fires_in_a_later_round(canister: WasmHost) -> None:
    assert int.from_bytes(update(canister, "set_timer", (NOW - 5).to_bytes(8, "little")), "little") == 0
    assert canister.global_timer == NOW - 5
    # Set in the round at NOW: it does not fire in that round, even though it is already due.
    assert canister.run_due_timers(NOW) == 0
    assert canister.run_due_timers(NOW + 1) == 1
    assert int.from_bytes(query(canister, "timer_fired"), "little") == 1
    assert canister.global_timer == 0  # deactivated before it ran; the canister did not set it again
    assert canister.run_due_timers(NOW + 2) == 0
    previous = update(canister, "set_timer", (NOW + 100).to_bytes(8, "little"), now=NOW + 3)
    assert int.from_bytes(previous, "little") == 0
    assert canister.run_due_timers(NOW + 50) == 0
    assert canister.run_due_timers(NOW + 100) == 1


def test_time_is_constant_within_an_execution(canister: WasmHost) -> None:
    reply = update(canister, "time_twice", now=NOW + 42)
    assert reply == (NOW + 42).to_bytes(8, "little") * 2


def test_caller(canister: WasmHost) -> None:
    assert update(canister, "caller") == USER.bytes


def test_self_call_replies_through_the_callback(canister: WasmHost) -> None:
    reply = update(canister, "self_call")
    # The callee's reply (its counters) forwarded by the reply callback, followed by its env (7).
    assert counters(reply) == (1, 1)
    assert reply[16:] == (7).to_bytes(4, "little")
    assert counters(query(canister, "get")) == (1, 1)


def test_call_to_another_canister(subnet: Subnet, system_api_wasm: Path) -> None:
    first = subnet.install(WasmCanister(system_api_wasm))
    second = subnet.install(WasmCanister(system_api_wasm))
    reply = update(first, "call_other", second.canister_id.bytes)
    assert counters(reply) == (1, 1)
    assert counters(query(second, "get")) == (1, 1)
    assert counters(query(first, "get")) == (0, 0)


def reject_of(reply: bytes) -> tuple[int, str]:
    return int.from_bytes(reply[:4], "little"), reply[4:].decode()


def test_call_to_a_missing_method_or_canister_is_rejected(canister: WasmHost) -> None:
    code, message = reject_of(update(canister, "call_missing"))
    assert code == 5
    assert "Canister has no update method 'nope'" in message
    code, message = reject_of(update(canister, "call_other", Principal(b"\x00" * 8 + b"\x07\x01\x01").bytes))
    assert code == 3
    assert "not found" in message


def test_trapping_callback_runs_cleanup_and_rejects_the_caller(canister: WasmHost) -> None:
    with pytest.raises(Reject) as caught:
        update(canister, "reply_trap")
    assert caught.value.error_code == "IC0503"
    assert "callback trap" in caught.value.message
    # The callee's own execution (inc) stands; the callback's bump was rolled back; cleanup ran once.
    assert counters(query(canister, "get")) == (1, 1)
    assert int.from_bytes(query(canister, "cleanups"), "little") == 1


def test_no_reply_is_rejected(canister: WasmHost) -> None:
    with pytest.raises(Reject) as caught:
        update(canister, "no_reply")
    assert caught.value.error_code == "IC0506"


def test_double_reply_traps(canister: WasmHost) -> None:
    with pytest.raises(Reject) as caught:
        update(canister, "double_reply")
    assert caught.value.error_code == "IC0504"
    assert "already replied" in caught.value.message


def test_data_certificate_only_in_queries(canister: WasmHost) -> None:
    assert query(canister, "certificate", certificate=b"the certificate") == b"the certificate"
    assert int.from_bytes(update(canister, "certificate_present"), "little") == 0


def test_certified_data_is_at_most_32_bytes(canister: WasmHost) -> None:
    with pytest.raises(Reject) as caught:
        update(canister, "big_certified_data")
    assert "no larger than 32 bytes" in caught.value.message
    assert canister.certified_data == b""


def test_unknown_method(canister: WasmHost) -> None:
    with pytest.raises(Reject) as caught:
        update(canister, "missing")
    assert caught.value.error_code == "IC0536"


def test_debug_print_goes_to_the_log_with_the_canister_name(
    canister: WasmHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="icws_fast.devnet.wasm"):
        update(canister, "inc")
    assert f"[Canister {canister.canister_id} {canister.name}] hello from wat" in caplog.text


def test_saved_state_resumes_the_same_module(subnet: Subnet, canister: WasmHost, system_api_wasm: Path) -> None:
    update(canister, "inc")
    update(canister, "stable_write")
    update(canister, "set_timer", (NOW + 10).to_bytes(8, "little"))
    state = pickle.loads(pickle.dumps(canister.instance_state))
    again = WasmHost.restore(canister.canister_id, "again", canister.spec, subnet.network, state, NOW)
    assert counters(query(again, "get")) == (1, 1)
    assert query(again, "stable_head") == b"hello"
    assert again.certified_data == canister.certified_data
    assert again.global_timer == NOW + 10


def test_upgrade_runs_pre_upgrade_on_the_saved_module_and_post_upgrade_on_the_new_one(
    subnet: Subnet, canister: WasmHost, tmp_path: Path
) -> None:
    update(canister, "inc")
    update(canister, "inc")
    state = pickle.loads(pickle.dumps(canister.instance_state))
    # Another module (the same code plus a custom section): an upgrade, which keeps only stable memory.
    newer = tmp_path / "newer.wasm"
    newer.write_bytes(canister.wasm + b"\x00\x04\x03new")
    upgraded = WasmHost.restore(canister.canister_id, "c0", WasmCanister(newer), subnet.network, state, NOW)
    assert upgraded.module_hash != canister.module_hash
    assert upgraded.version == canister.version + 1
    # pre_upgrade (old module) saved the counter to stable memory; post_upgrade (new module) read it back.
    assert counters(query(upgraded, "get")) == (2, 2)
    assert upgraded.certified_data == canister.certified_data


def test_modules_that_are_not_canisters_are_refused(subnet: Subnet, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\1\0\0\0\x01")
    with pytest.raises(WasmModuleError, match=r"bad\.wasm"):
        subnet.install(WasmCanister(bad))
    with pytest.raises(WasmModuleError, match="cannot read"):
        subnet.install(WasmCanister(tmp_path / "missing.wasm"))


def test_inspect_message_filters_ingress_and_leaves_no_trace(canister: WasmHost) -> None:
    assert canister.inspect_message("inc", b"", USER, NOW) is None
    refused = canister.inspect_message("inspect_refuses", b"", USER, NOW)
    assert refused is not None and refused.error_code == "IC0516" and refused.code == 4
    assert counters(query(canister, "get")) == (0, 0)


START_COUNTER_WAT = """
(module
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (memory 1)
  (func $start (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))))
  (start $start)
  (func (export "canister_query starts") (call $append (i32.const 0) (i32.const 4)) (call $reply)))
"""


def test_start_function_runs_on_install_and_upgrade_not_on_resume(subnet: Subnet, tmp_path: Path) -> None:
    module = tmp_path / "start.wasm"
    module.write_bytes(wasmtime.wat2wasm(START_COUNTER_WAT))
    host = subnet.install(WasmCanister(module))
    assert int.from_bytes(query(host, "starts"), "little") == 1
    resumed = WasmHost.restore(host.canister_id, "c0", host.spec, subnet.network, host.instance_state, NOW)
    assert int.from_bytes(query(resumed, "starts"), "little") == 1
    newer = tmp_path / "newer.wasm"
    newer.write_bytes(module.read_bytes() + b"\x00\x04\x03new")
    upgraded = WasmHost.restore(host.canister_id, "c0", WasmCanister(newer), subnet.network, host.instance_state, NOW)
    assert int.from_bytes(query(upgraded, "starts"), "little") == 1  # fresh memory, then the start function
