"""Canisters the devnet tests host: each exercises a part of the runtime (Candid, system API, timers)."""

from __future__ import annotations

from icws_fast.cdk import api
from icws_fast.cdk.api import Canister, query, update
from icws_fast.ic.principal import Principal

SECOND_NS = 1_000_000_000


class Counter(Canister):
    """Counts calls, certifies the count, and reports who called."""

    CANDID = """
        type Count = nat64;
        type Info = record { caller : principal; time : nat64; self : principal; count : Count };
    """

    def __init__(self) -> None:
        self.count = 0

    @update("() -> (Count)")
    def increment(self) -> int:
        self.count += 1
        api.certified_data_set(self.count.to_bytes(8, "big"))
        return self.count

    @update("() -> (Count)")
    def bump(self) -> int:
        self.count += 1
        return self.count

    @query("() -> (Count)")
    def get(self) -> int:
        return self.count

    @update("() -> (Info)")
    def info(self) -> dict[str, object]:
        return {"caller": api.caller(), "time": api.time(), "self": api.canister_self(), "count": self.count}

    @query("() -> (principal)")
    def whoami(self) -> Principal:
        return api.caller()

    @query("() -> (opt blob)")
    def certificate(self) -> bytes | None:
        return api.data_certificate()

    @update("() -> (opt blob)")
    def certificate_in_update(self) -> bytes | None:
        return api.data_certificate()

    @update("(text) -> ()")
    def fail(self, message: str) -> None:
        api.trap(message)

    @update("() -> ()")
    def crash(self) -> None:
        raise ZeroDivisionError("division by zero")

    @update("(blob) -> ()")
    def set_data(self, data: bytes) -> None:
        api.certified_data_set(data)

    @query("() -> ()")
    def set_data_in_query(self) -> None:
        api.certified_data_set(b"x")

    @update("(nat, text) -> (text, nat)")
    def swap(self, n: int, text: str) -> tuple[str, int]:
        return text, n

    @update("() -> (nat)")
    def bad_result(self) -> str:
        return "not a number"


class Ticker(Canister):
    """Arms a one-shot and an interval timer at init (and again after an upgrade)."""

    CANDID = "type Ticks = record { once : nat; every : nat; canceled : nat };"

    def __init__(self) -> None:
        self.once = 0
        self.every = 0
        self.canceled = 0

    def init(self) -> None:
        self._arm()

    def post_upgrade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        api.set_timer(SECOND_NS, self._fire_once)
        api.set_timer_interval(2 * SECOND_NS, self._fire_every)
        doomed = api.set_timer(SECOND_NS, self._fire_canceled)
        api.clear_timer(doomed)

    def _fire_once(self) -> None:
        self.once += 1

    def _fire_every(self) -> None:
        self.every += 1
        if self.every == 2:
            api.trap("a trapping timer does not stop the interval")

    def _fire_canceled(self) -> None:
        self.canceled += 1

    @query("() -> (Ticks)")
    def ticks(self) -> dict[str, int]:
        return {"once": self.once, "every": self.every, "canceled": self.canceled}
