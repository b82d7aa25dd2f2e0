"""In-process host for CDK unit tests, and the client-side checks every test applies to polled messages.

:class:`LocalHost` is a small :class:`~icws_fast.cdk.api.System`: it runs a canister's exported methods with their
Candid signatures (arguments and results go through Candid encode/decode, as on the devnet), keeps a controllable
clock and runs timers when the clock moves. Its data certificates are real: a BLS-signed certificate over the
canister's certified data, so :func:`verify_messages` checks exactly what a client checks.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable
from typing import Any

from icws_fast.cdk import api
from icws_fast.ic import bls, candid, hashtree
from icws_fast.ic.certificate import Certificate, sign_certificate
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import leb128
from icws_fast.protocol import types as t

T0_NS = 1_700_000_000_000_000_000
MS = 1_000_000
CANISTER_ID = Principal.from_text("bnz7o-iuaaa-aaaaa-qaaaa-cai")
_ROOT_SK = bls.generate_secret_key(b"\x07" * 32)
ROOT_KEY_DER = bls.der_encode_public_key(bls.public_key(_ROOT_SK))


class LocalHost(api.System):
    """Runs one canister in process, with a manual clock; see the module docstring."""

    def __init__(self, canister: api.Canister, *, upgraded_from: LocalHost | None = None) -> None:
        self.canister = canister
        self.now_ns = T0_NS if upgraded_from is None else upgraded_from.now_ns
        self.certified_data = b"" if upgraded_from is None else upgraded_from.certified_data
        self._caller = CANISTER_ID
        self._is_query = False
        self._timers: list[tuple[int, int, int | None, Callable[[], None]]] = []
        self._live: set[int] = set()
        self._ids = itertools.count(1)
        # A restored canister keeps its state and certified data; its timers are gone, post_upgrade re-arms them.
        self._run(canister.init if upgraded_from is None else canister.post_upgrade, CANISTER_ID, query=False)

    # -- System ------------------------------------------------------------------------------------------------

    def caller(self) -> Principal:
        return self._caller

    def time(self) -> int:
        return self.now_ns

    def canister_self(self) -> Principal:
        return CANISTER_ID

    def certified_data_set(self, data: bytes) -> None:
        assert not self._is_query, "certified_data_set in a query"
        self.certified_data = data

    def data_certificate(self) -> bytes | None:
        if not self._is_query:
            return None
        tree = hashtree.build(
            {
                b"canister": {CANISTER_ID.bytes: {b"certified_data": self.certified_data}},
                b"time": leb128(self.now_ns),
            }
        )
        return sign_certificate(tree, _ROOT_SK)

    def set_timer(self, delay_ns: int, fn: Callable[[], None]) -> int:
        return self._add(self.now_ns + delay_ns, None, fn)

    def set_timer_interval(self, interval_ns: int, fn: Callable[[], None]) -> int:
        return self._add(self.now_ns + interval_ns, interval_ns, fn)

    def clear_timer(self, timer_id: int) -> None:
        self._live.discard(timer_id)

    def _add(self, due: int, interval: int | None, fn: Callable[[], None]) -> int:
        timer_id = next(self._ids)
        heapq.heappush(self._timers, (due, timer_id, interval, fn))
        self._live.add(timer_id)
        return timer_id

    # -- driving the canister ----------------------------------------------------------------------------------

    def _run(self, fn: Callable[..., Any], caller: Principal, *args: Any, query: bool) -> Any:
        self._caller, self._is_query = caller, query
        with api.system_context(self):
            return fn(*args)

    def call(self, method: str, caller: Principal, *args: Any) -> Any:
        """Run an exported method with Candid-encoded arguments, as a query if it is one; the decoded result."""
        spec = type(self.canister).exported_methods()[method]
        decoded = candid.decode(candid.encode(list(spec.arg_types), list(args)), list(spec.arg_types))
        result = self._run(getattr(self.canister, method), caller, *decoded, query=spec.kind == "query")
        values = [] if not spec.ret_types else [result]
        out = candid.decode(candid.encode(list(spec.ret_types), values), list(spec.ret_types))
        return out[0] if out else None

    def advance(self, ms: int) -> None:
        """Move the clock by ``ms`` and run the timers that come due, in order, each at its due time."""
        end = self.now_ns + ms * MS
        while self._timers and self._timers[0][0] <= end:
            due, timer_id, interval, fn = heapq.heappop(self._timers)
            if timer_id not in self._live:
                continue
            self.now_ns = max(self.now_ns, due)
            if interval is None:
                self._live.discard(timer_id)
            else:
                heapq.heappush(self._timers, (due + interval, timer_id, interval, fn))
            self._run(fn, CANISTER_ID, query=False)
        self.now_ns = end

    # -- the protocol, as a gateway and a client see it --------------------------------------------------------

    def open(self, client: Principal, nonce: int, gateway: Principal) -> Any:
        return self.call("ws_open", client, {"client_nonce": nonce, "gateway_principal": gateway})

    def message(self, client_key: t.ClientKey, sequence_num: int, content: bytes, *, service: bool = False) -> Any:
        msg = t.WebsocketMessage(client_key, sequence_num, self.now_ns, service, content)
        return self.call("ws_message", client_key.client_principal, {"msg": msg.to_candid()}, None)

    def poll(self, gateway: Principal, nonce: int = 0) -> t.CanisterOutputCertifiedMessages:
        """``ws_get_messages`` as the gateway, decoded, every message verified like a client does."""
        result = self.call("ws_get_messages", gateway, {"nonce": nonce})
        batch = t.decode_get_messages_result(t.encode_get_messages_result(_batch(result["Ok"])))
        verify_messages(batch, ROOT_KEY_DER, CANISTER_ID, self.now_ns)
        return batch


def _batch(value: dict[str, Any]) -> t.CanisterOutputCertifiedMessages:
    return t.CanisterOutputCertifiedMessages(
        [
            t.CanisterOutputMessage(t.ClientKey.from_candid(m["client_key"]), m["key"], m["content"])
            for m in value["messages"]
        ],
        value["cert"],
        value["tree"],
        value["is_end_of_queue"],
    )


def verify_messages(
    batch: t.CanisterOutputCertifiedMessages, root_key_der: bytes, canister_id: Principal, now_ns: int | None
) -> list[t.WebsocketMessage]:
    """Check every message of a poll as the JS client does; return the decoded messages.

    The certificate must verify under the root key for the canister; the tree must reconstruct to the canister's
    certified data; ``lookup(["websocket", key])`` must be the sha256 of the content; the content must decode and
    be addressed to the message's client key.
    """
    if not batch.messages:
        assert (batch.cert, batch.tree, batch.is_end_of_queue) == (b"", b"", True)
        return []
    cert = Certificate.from_cbor(batch.cert)
    cert.verify(root_key_der, canister_id, now_ns=now_ns)
    certified_data = cert.lookup_value([b"canister", canister_id.bytes, b"certified_data"])
    tree = hashtree.parse(batch.tree)
    assert hashtree.reconstruct(tree) == certified_data
    decoded = []
    for message in batch.messages:
        found = hashtree.lookup_path(tree, [t.LABEL_WEBSOCKET, message.key.encode()])
        assert found.status == "Found", (message.key, found)
        assert found.value == hashlib.sha256(message.content).digest()
        ws = t.decode_websocket_message(message.content)
        assert ws.client_key == message.client_key
        decoded.append(ws)
    return decoded


def service(ws: t.WebsocketMessage) -> t.ServiceMessage:
    """The service message carried by ``ws`` (which must be one)."""
    assert ws.is_service_message
    return t.decode_service_message(ws.content)
