"""The canister API (icws_fast.cdk.api) as the devnet runtime hosts it, without HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from icws_fast.cdk import api
from icws_fast.cdk.api import Canister, query, update
from icws_fast.devnet.runtime import CanisterHost, Reject
from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

CANISTER_ID = Principal(bytes.fromhex("00000000000000070101"))
NOW = 1_700_000_000_000_000_000


class Greeter(Canister):
    CANDID = "type Greeting = record { text : text; count : nat32 };"

    def __init__(self) -> None:
        self.count = 0

    @update("(text) -> (Greeting)")
    def greet(self, name: str) -> dict[str, object]:
        self.count += 1
        return {"text": f"hello {name}", "count": self.count}

    @query("() -> (nat32, principal)")
    def stats(self) -> tuple[int, Principal]:
        return self.count, api.caller()


def test_signatures_resolve_against_the_candid_definitions() -> None:
    methods = Greeter.exported_methods()
    assert set(methods) == {"greet", "stats"}
    assert methods["greet"].kind == "update" and methods["stats"].kind == "query"
    assert len(methods["stats"].ret_types) == 2
    assert Greeter.exported_methods() is methods  # resolved once per class


def test_host_runs_methods_with_candid_in_and_out() -> None:
    host = CanisterHost.install(CANISTER_ID, Greeter, NOW)
    caller = Principal.anonymous()
    reply = host.execute("greet", candid.encode("(text)", ["ada"]), caller, NOW, is_query=False)
    assert candid.decode(reply, "(record { text : text; count : nat32 })") == [{"text": "hello ada", "count": 1}]
    reply = host.execute("stats", candid.encode("()", []), caller, NOW, is_query=True)
    assert candid.decode(reply, "(nat32, principal)") == [1, caller]


def test_a_signature_without_an_arrow_fails_at_class_definition() -> None:
    with pytest.raises(CandidError):
        update("(nat)")


def test_bad_candid_fails_when_the_methods_are_resolved() -> None:
    class Broken(Canister):
        CANDID = "type T = record { ;"

        @query("() -> (T)")
        def get(self) -> None:
            return None

    with pytest.raises(CandidError):
        Broken.exported_methods()


def test_system_api_outside_a_canister_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        api.caller()
    with pytest.raises(api.Trap):
        api.trap("stop")


def test_timer_set_by_a_trapping_message_is_dropped() -> None:
    class Flaky(Canister):
        def __init__(self) -> None:
            self.fired = 0

        @update("() -> ()")
        def arm_then_trap(self) -> None:
            api.set_timer(0, self.fire)
            api.trap("changed my mind")

        @update("() -> ()")
        def arm(self) -> None:
            api.set_timer(0, self.fire)

        def fire(self) -> None:
            self.fired += 1

    host = CanisterHost.install(CANISTER_ID, Flaky, NOW)
    with pytest.raises(Reject):
        host.execute("arm_then_trap", candid.encode("()", []), Principal.anonymous(), NOW, is_query=False)
    assert host.run_due_timers(NOW + 1) == 0
    host.execute("arm", candid.encode("()", []), Principal.anonymous(), NOW, is_query=False)
    assert host.run_due_timers(NOW + 1) == 1
    assert isinstance(host.instance, Flaky) and host.instance.fired == 1


def test_async_methods_are_refused() -> None:
    with pytest.raises(TypeError, match="must be a plain function"):

        class Async(Canister):
            @update("() -> ()")
            async def run(self) -> None:
                return None


class Ledger(Canister):
    """Mutates, then traps when the balance would go negative."""

    ROLLBACK_ON_TRAP = True

    def __init__(self) -> None:
        self.balance = 10
        self.ticks = 0
        self.history: list[int] = []

    def init(self) -> None:
        api.set_timer_interval(1, self.tick)

    def tick(self) -> None:
        self.ticks += 1
        self.history.append(-1)
        if self.ticks > 1:
            api.trap("only one tick")

    @update("(int) -> (int)")
    def move(self, amount: int) -> int:
        self.balance += amount
        self.history.append(amount)
        if self.balance < 0:
            api.trap("insufficient funds")
        return self.balance


class LooseLedger(Ledger):
    ROLLBACK_ON_TRAP = False


@pytest.mark.parametrize(("cls", "rolled_back"), [(Ledger, True), (LooseLedger, False)])
def test_rollback_on_trap_restores_the_attributes(cls: type[Ledger], rolled_back: bool) -> None:
    host = CanisterHost.install(CANISTER_ID, cls, NOW)
    ledger = host.instance
    assert isinstance(ledger, Ledger)
    reply = host.execute("move", candid.encode("(int)", [-4]), Principal.anonymous(), NOW, is_query=False)
    assert candid.decode(reply, "(int)") == [6]
    with pytest.raises(Reject, match="insufficient funds"):
        host.execute("move", candid.encode("(int)", [-7]), Principal.anonymous(), NOW, is_query=False)
    assert (ledger.balance, ledger.history) == ((6, [-4]) if rolled_back else (-1, [-4, -7]))
    # Timers stay bound to the same instance; a trapping tick is undone too.
    host.run_due_timers(NOW + 1)
    host.run_due_timers(NOW + 2)
    assert host.instance is ledger
    assert ledger.history[-1] == -1
    assert ledger.history.count(-1) == (1 if rolled_back else 2)


def test_a_message_the_host_cannot_run_fails_alone() -> None:
    import threading

    from icws_fast.devnet.replica import Keys, Replica
    from icws_fast.ic import bls

    class Locked(Ledger):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()  # cannot be deep-copied, so no snapshot can be taken

    keys = Keys(root_secret_key=bls.generate_secret_key(b"k"), node_seed=b"\x01" * 32)
    replica = Replica({"locked": Locked, "greeter": Greeter}, keys)
    locked, greeter = replica.canister_ids["locked"], replica.canister_ids["greeter"]
    expiry = replica.time_ns + 60 * 10**9
    sender = Principal.anonymous()
    replica.submit(
        b"\x01" * 32,
        sender=sender,
        canister_id=locked,
        method="move",
        arg=candid.encode("(int)", [1]),
        expiry_ns=expiry,
    )
    replica.submit(
        b"\x02" * 32,
        sender=sender,
        canister_id=greeter,
        method="greet",
        arg=candid.encode("(text)", ["x"]),
        expiry_ns=expiry,
    )
    replica.run_round()
    failed, served = replica.ingress[b"\x01" * 32], replica.ingress[b"\x02" * 32]
    assert failed.status == "rejected" and failed.reject is not None and failed.reject.error_code == "IC0502"
    assert served.status == "replied"


class Metronome(Canister):
    """Counts the firings of one interval timer, with the IC time each one saw."""

    INTERVAL = 100

    def __init__(self) -> None:
        self.beats: list[int] = []

    def init(self) -> None:
        api.set_timer_interval(self.INTERVAL, self.beat)

    def beat(self) -> None:
        self.beats.append(api.time())


def test_an_interval_keeps_its_rate_when_rounds_do_not_divide_it() -> None:
    # Rounds every 75 ns, a 100 ns interval: the next firing is due 100 ns after the scheduled time of
    # the previous one (ic-cdk-timers 1.x), not after the round that ran it (that gave 7 firings here).
    host = CanisterHost.install(CANISTER_ID, Metronome, NOW)
    metronome = host.instance
    assert isinstance(metronome, Metronome)
    fired = sum(host.run_due_timers(NOW + t) for t in range(75, 1051, 75))
    assert fired == 10
    assert [beat - NOW for beat in metronome.beats] == [150, 225, 300, 450, 525, 600, 750, 825, 900, 1050]


def test_an_overdue_interval_catches_up_at_most_five_times_a_round() -> None:
    host = CanisterHost.install(CANISTER_ID, Metronome, NOW)
    # Three intervals late: the three firings run in this round and the phase is kept.
    assert host.run_due_timers(NOW + 350) == 3
    assert host.run_due_timers(NOW + 399) == 0
    assert host.run_due_timers(NOW + 400) == 1
    # A hundred intervals late: five firings, the rest are skipped; the next is due an interval later.
    late = NOW + 400 + 100 * Metronome.INTERVAL + 50
    assert host.run_due_timers(late) == 5
    assert host.run_due_timers(late + Metronome.INTERVAL - 1) == 0
    assert host.run_due_timers(late + Metronome.INTERVAL) == 1


class Batcher(Canister):
    """Changes its certified state several times per message, certifying it once (deferred)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.hashed = 0

    def _digest(self) -> bytes:
        self.hashed += 1
        return hashlib.sha256(b"".join(self.items)).digest()

    @update("(vec blob, bool) -> ()")
    def add(self, items: list[bytes], fail: bool) -> None:
        for item in items:
            self.items.append(item)
            api.certified_data_set_deferred(self._digest)
        if fail:
            api.trap("refused")

    @update("() -> ()")
    def oversized(self) -> None:
        api.certified_data_set_deferred(lambda: b"x" * 33)

    @update("(blob) -> ()")
    def set_then_defer_then_set(self, data: bytes) -> None:
        api.certified_data_set_deferred(self._digest)
        api.certified_data_set(data)

    @query("() -> ()")
    def in_query(self) -> None:
        api.certified_data_set_deferred(self._digest)


def test_deferred_certified_data_is_computed_once_when_the_message_ends() -> None:
    host = CanisterHost.install(CANISTER_ID, Batcher, NOW)
    batcher = host.instance
    assert isinstance(batcher, Batcher)
    host.execute(
        "add", candid.encode("(vec blob, bool)", [[b"a", b"b", b"c"], False]), CANISTER_ID, NOW, is_query=False
    )
    assert batcher.hashed == 1
    assert host.certified_data == hashlib.sha256(b"abc").digest()
    # A trap discards the deferred value with the rest of the message's system state.
    with pytest.raises(Reject, match="refused"):
        host.execute("add", candid.encode("(vec blob, bool)", [[b"d"], True]), CANISTER_ID, NOW, is_query=False)
    assert batcher.hashed == 1
    assert host.certified_data == hashlib.sha256(b"abc").digest()
    # A later explicit set cancels the deferred one; a result over 32 bytes traps the message.
    host.execute("set_then_defer_then_set", candid.encode("(blob)", [b"explicit"]), CANISTER_ID, NOW, is_query=False)
    assert (host.certified_data, batcher.hashed) == (b"explicit", 1)
    with pytest.raises(Reject, match="at most 32"):
        host.execute("oversized", candid.encode("()", []), CANISTER_ID, NOW, is_query=False)
    assert host.certified_data == b"explicit"
    with pytest.raises(Reject, match="non replicated query mode"):
        host.execute("in_query", candid.encode("()", []), CANISTER_ID, NOW, is_query=True)


def test_deferred_certified_data_in_a_timer_and_in_init() -> None:
    class Deferring(Batcher):
        def init(self) -> None:
            self.items.append(b"init")
            api.certified_data_set_deferred(self._digest)
            api.set_timer(1, self.tick)

        def tick(self) -> None:
            self.items.append(b"tick")
            api.certified_data_set_deferred(self._digest)

    host = CanisterHost.install(CANISTER_ID, Deferring, NOW)
    assert host.certified_data == hashlib.sha256(b"init").digest()
    assert host.run_due_timers(NOW + 1) == 1
    assert host.certified_data == hashlib.sha256(b"inittick").digest()


def test_the_default_system_applies_deferred_certified_data_at_once() -> None:
    class Eager(api.System):
        """A minimal host without deferral: only what certified data needs."""

        def __init__(self) -> None:
            self.data = b""

        def caller(self) -> Principal:
            return CANISTER_ID

        def time(self) -> int:
            return NOW

        def canister_self(self) -> Principal:
            return CANISTER_ID

        def certified_data_set(self, data: bytes) -> None:
            self.data = data

        def data_certificate(self) -> bytes | None:
            return None

        def set_timer(self, delay_ns: int, fn: Callable[[], None]) -> int:
            raise NotImplementedError

        def set_timer_interval(self, interval_ns: int, fn: Callable[[], None]) -> int:
            raise NotImplementedError

        def clear_timer(self, timer_id: int) -> None:
            raise NotImplementedError

    host = Eager()
    with api.system_context(host):
        api.certified_data_set_deferred(lambda: b"now")
        assert host.data == b"now"
        with pytest.raises(api.Trap):
            api.certified_data_set_deferred(lambda: b"y" * 33)
