"""Inter-canister messages on the devnet: calls, call contexts, and the queue that delivers them.

Every canister runs one message at a time and the devnet is a single subnet, so a message queue
drained in order is the whole "network": a request executes on its callee (a Wasm canister, or a
Python canister through :meth:`CanisterHost.execute`), its response runs the caller's callback.
The queue is drained right after the ingress message or timer that started the chain, in the same
round; that is also how Motoko's ``await`` (a call to the canister itself) completes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from icws_fast.devnet.runtime import DESTINATION_INVALID, Reject, canister_not_found
from icws_fast.ic.principal import Principal

log = logging.getLogger(__name__)

#: Messages one drain may deliver: a bound on call chains that never end (a canister calling itself forever).
MAX_MESSAGES_PER_DRAIN: Final = 100_000

#: Reject code the IC gives a call whose callee did not reply: CANISTER_ERROR.
CANISTER_ERROR: Final = 5


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    code: int
    message: str
    error_code: str = ""

    @classmethod
    def of(cls, reject: Reject) -> Rejected:
        return cls(reject.code, reject.message, reject.error_code)

    def to_reject(self) -> Reject:
        return Reject(self.code, self.message, self.error_code)


Result = Reply | Rejected


@dataclass(slots=True)
class Callback:
    """A table index and its environment (``call_new``'s ``reply_fun``/``reply_env``...)."""

    fun: int
    env: int


@dataclass(slots=True)
class CallContext:
    """The context of a call a canister received: whom it answers, how many of its own calls are out."""

    caller: Principal
    #: The outgoing call this context answers, or None for an ingress message (its result is kept here).
    origin: Call | None
    replied: bool = False
    outstanding: int = 0
    result: Result | None = None


@dataclass(slots=True)
class Call:
    """An outgoing call being built (``call_new`` ... ``call_perform``) or in flight."""

    caller: Principal
    callee: Principal
    method: str
    on_reply: Callback
    on_reject: Callback
    context: CallContext
    arg: bytearray = field(default_factory=bytearray)
    on_cleanup: Callback | None = None


class Callee(Protocol):
    """What the queue needs from a canister host to run requests and responses."""

    def handle_request(self, call: Call, now_ns: int) -> None: ...

    def handle_response(self, call: Call, result: Result, now_ns: int) -> None: ...


class Network:
    """The devnet's queue of inter-canister requests and responses, delivered in order."""

    def __init__(self, hosts: MutableMapping[Principal, Any]) -> None:
        self.hosts = hosts
        self._queue: deque[Callable[[int], None]] = deque()
        self._draining = False

    def send(self, call: Call) -> None:
        self._queue.append(lambda now_ns: self._request(call, now_ns))

    def respond(self, call: Call, result: Result) -> None:
        self._queue.append(lambda now_ns: self._response(call, result, now_ns))

    def drain(self, now_ns: int) -> int:
        """Deliver queued messages (and those they cause) until none is left; returns how many ran.

        Re-entrant calls (from a delivery) return at once: the outer drain delivers their messages.
        """
        if self._draining:
            return 0
        self._draining = True
        ran = 0
        try:
            while self._queue and ran < MAX_MESSAGES_PER_DRAIN:
                self._queue.popleft()(now_ns)
                ran += 1
        finally:
            self._draining = False
        if self._queue:
            log.warning("%d inter-canister messages left for the next round (call chain too long)", len(self._queue))
        return ran

    def _request(self, call: Call, now_ns: int) -> None:
        host = self.hosts.get(call.callee)
        if host is None:
            reject = canister_not_found(call.callee)
            self.respond(call, Rejected(DESTINATION_INVALID, reject.message, reject.error_code))
        elif hasattr(host, "handle_request"):
            host.handle_request(call, now_ns)
        else:  # a Python canister: it runs to completion and answers at once
            try:
                result: Result = Reply(host.execute(call.method, bytes(call.arg), call.caller, now_ns, is_query=False))
            except Reject as reject:
                result = Rejected.of(reject)
            self.respond(call, result)

    def _response(self, call: Call, result: Result, now_ns: int) -> None:
        host = self.hosts.get(call.caller)
        if host is None:  # cannot happen while canisters are never removed; kept as a guard
            log.error("response to %s dropped: the caller is gone", call.caller)
            return
        host.handle_response(call, result, now_ns)
