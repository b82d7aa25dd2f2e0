"""The IC WebSocket CDK for Python canisters: the canister side of the protocol (Rust ``ic-websocket-cdk`` 0.4).

Same Candid interface, semantics, error texts, defaults and limits as the Rust CDK:

- ``ws_open`` (called by a client through its gateway) registers the client key ``(caller, client_nonce)`` and the
  gateway, queues an ``OpenMessage`` and calls ``on_open``. A principal that reconnects replaces its old key.
- ``ws_message`` checks the caller, the key and the sequence number (a wrong one closes the client with
  ``WrongSequenceNumber``), handles ``KeepAliveMessage`` service messages and passes the rest to ``on_message``.
- ``ws_close`` (called by the client's gateway) removes the client and calls ``on_close``.
- ``ws_get_messages`` (a query by a gateway) returns up to ``max_number_of_returned_messages`` messages of that
  gateway's queue from a nonce on, with the canister's data certificate and a witness of their keys.
- every ``send_ack_interval_ms`` the canister queues an ``AckMessage`` for every client; clients that have not
  answered with a keep-alive ``keep_alive_timeout_ms`` later are closed with ``KeepAliveTimeout``.

Every queued message is certified: the map key -> sha256(content) (:mod:`.certified_map`) is certified as
``labeled_hash("websocket", root)``, computed once when the update or timer that queued messages ends
(:func:`~icws_fast.cdk.api.certified_data_set_deferred`). Messages older than the ack interval are deleted, at most
``MESSAGES_TO_DELETE_COUNT`` per new message, as in Rust.

One process hosts many canisters (and tests may run several devnets), so the CDK state is an object,
:class:`WsEndpoint`, owned by the canister rather than module globals. :class:`WsCanister` is a canister base class
exporting the four ``ws_*`` methods; a canister sets ``CANDID = WS_TYPES_DID + "type AppMessage = ...;"`` and calls
``self.websocket.init(WsInitParams(...))`` from ``init`` and ``post_upgrade``::

    class Echo(WsCanister):
        CANDID = WS_TYPES_DID + "type AppMessage = record { text : text };"

        def init(self) -> None:
            self.websocket.init(WsInitParams(WsHandlers(on_message=self.on_message)))

        post_upgrade = init

        def on_message(self, client: Principal, message: bytes) -> None:
            self.websocket.send(client, message)

As on the IC, a handler that raises aborts the whole message; the host rejects it. Unlike the IC, the host does
not roll the canister's state back, so handlers should validate before they change anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from icws_fast.cdk import api
from icws_fast.cdk.api import Canister, query, update
from icws_fast.cdk.certified_map import CertifiedMessageMap
from icws_fast.errors import CdkError, ProtocolDecodeError
from icws_fast.ic import hashtree
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import (
    CLIENT_KEEP_ALIVE_TIMEOUT_MS,
    COMMUNICATION_LATENCY_BOUND_MS,
    DEFAULT_SEND_ACK_INTERVAL_MS,
    WS_TYPES_DID,
    AckMessage,
    CanisterOutputMessage,
    ClientKey,
    CloseMessage,
    CloseMessageReason,
    KeepAliveMessage,
    OpenMessage,
    ServiceMessage,
    WebsocketMessage,
    decode_service_message,
    encode_service_message,
    encode_websocket_message,
    message_key,
)

__all__ = [
    "CLIENT_KEEP_ALIVE_TIMEOUT_MS",
    "COMMUNICATION_LATENCY_BOUND_MS",
    "DEFAULT_MAX_NUMBER_OF_RETURNED_MESSAGES",
    "DEFAULT_SEND_ACK_INTERVAL_MS",
    "MESSAGES_TO_DELETE_COUNT",
    "WS_TYPES_DID",
    "WsCanister",
    "WsEndpoint",
    "WsHandlers",
    "WsInitParams",
]

DEFAULT_MAX_NUMBER_OF_RETURNED_MESSAGES: Final = 50
INITIAL_OUTGOING_MESSAGE_NONCE: Final = 0
INITIAL_CLIENT_SEQUENCE_NUM: Final = 1
INITIAL_CANISTER_SEQUENCE_NUM: Final = 0
MESSAGES_TO_DELETE_COUNT: Final = 5
_NS_PER_MS: Final = 1_000_000
# A queue's list is compacted once this many delivered entries sit before its head (and they are the majority).
_COMPACT_AFTER: Final = 1024

OnOpen = Callable[[Principal], None]
OnMessage = Callable[[Principal, bytes], None]
OnClose = Callable[[Principal], None]


@dataclass(frozen=True)
class WsHandlers:
    """The application's callbacks. ``on_message`` gets the client's app message as Candid bytes.

    ``on_close`` runs whenever a client goes away (gateway close, reconnect, timeout, :meth:`WsEndpoint.close`);
    it must not call :meth:`WsEndpoint.close`.
    """

    on_open: OnOpen | None = None
    on_message: OnMessage | None = None
    on_close: OnClose | None = None


@dataclass(frozen=True)
class WsInitParams:
    """CDK parameters; the defaults are the Rust CDK's.

    ``keep_alive_timeout_ms`` is an icws_fast addition (the Rust CDK fixes it at
    :data:`CLIENT_KEEP_ALIVE_TIMEOUT_MS`) so that tests can run the ack / keep-alive cycle in seconds; as in Rust,
    ``send_ack_interval_ms`` must be greater than it.
    """

    handlers: WsHandlers = field(default_factory=WsHandlers)
    max_number_of_returned_messages: int = DEFAULT_MAX_NUMBER_OF_RETURNED_MESSAGES
    send_ack_interval_ms: int = DEFAULT_SEND_ACK_INTERVAL_MS
    keep_alive_timeout_ms: int = CLIENT_KEEP_ALIVE_TIMEOUT_MS


class _RegisteredClient:
    __slots__ = ("expected_incoming_sequence_num", "gateway", "last_keep_alive_ns", "outgoing_sequence_num")

    def __init__(self, gateway: Principal, now_ns: int) -> None:
        self.gateway = gateway
        self.last_keep_alive_ns = now_ns
        self.expected_incoming_sequence_num = INITIAL_CLIENT_SEQUENCE_NUM
        self.outgoing_sequence_num = INITIAL_CANISTER_SEQUENCE_NUM


class _RegisteredGateway:
    """A gateway's outgoing queue. Nonces are consecutive: the queue holds ``outgoing_nonce - len(self)`` onwards."""

    __slots__ = (
        "client_keys",
        "connected_clients",
        "contents",
        "head",
        "keys",
        "outgoing_nonce",
        "principal",
        "timestamps",
    )

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        # One message is entry i of each list, rather than a message tuple in one list: lists of shared client
        # keys, strings, bytes and ints add no object per message for the garbage collector to track, so its
        # full collections stay cheap however many messages are queued (a million at benchmark rates).
        # Entries before ``head`` are deleted; the lists are compacted from time to time (O(1) amortised pops).
        self.client_keys: list[ClientKey] = []
        self.keys: list[str] = []
        self.contents: list[bytes] = []
        self.timestamps: list[int] = []
        self.head = 0
        self.outgoing_nonce = INITIAL_OUTGOING_MESSAGE_NONCE
        self.connected_clients = 0

    def __len__(self) -> int:
        return len(self.keys) - self.head

    def append(self, client_key: ClientKey, key: str, content: bytes, timestamp_ns: int) -> None:
        self.client_keys.append(client_key)
        self.keys.append(key)
        self.contents.append(content)
        self.timestamps.append(timestamp_ns)
        self.outgoing_nonce += 1

    def pop_old(self, limit: int, max_age_ns: int, now_ns: int) -> list[int]:
        """Drop up to ``limit`` messages from the front that are older than ``max_age_ns``; their nonces."""
        if self.head == len(self.timestamps) or now_ns - self.timestamps[self.head] <= max_age_ns:
            return []  # the usual case: nothing is old enough
        first_nonce = self.outgoing_nonce - len(self)
        count = 0
        while count < limit and self.head < len(self.keys) and now_ns - self.timestamps[self.head] > max_age_ns:
            self.head += 1
            count += 1
        if self.head >= _COMPACT_AFTER and 2 * self.head >= len(self.keys):
            for column in (self.client_keys, self.keys, self.contents, self.timestamps):
                del column[: self.head]
            self.head = 0
        return list(range(first_nonce, first_nonce + count))

    def window(self, nonce: int, limit: int) -> tuple[int, list[CanisterOutputMessage], bool]:
        """The first nonce, messages and end-of-queue flag of a poll from ``nonce`` returning at most ``limit``."""
        queued = len(self)
        first_nonce = self.outgoing_nonce - queued
        offset = min(max(nonce - first_nonce, 0), queued)
        start = self.head + offset
        end = len(self.keys)
        is_end_of_queue = end - start <= limit
        if not is_end_of_queue:
            end = start + limit
        messages = [
            CanisterOutputMessage(client_key, key, content)
            for client_key, key, content in zip(
                self.client_keys[start:end], self.keys[start:end], self.contents[start:end], strict=True
            )
        ]
        return first_nonce + offset, messages, is_end_of_queue


def _run_handler(handler: Callable[..., None], *args: Any) -> None:
    """Run an application handler; a :class:`CdkError` it lets escape traps.

    The error belongs to the application, not to the client's call, so it must not come back as the ``Err`` of a
    ``ws_*`` method (a Rust handler cannot return one either: it would unwrap and trap).
    """
    try:
        handler(*args)
    except CdkError as exc:
        api.trap(f"IC WebSocket handler {getattr(handler, '__name__', handler)!s} failed: {exc}")


def _empty_messages() -> dict[str, Any]:
    return {"Ok": {"messages": [], "cert": b"", "tree": b"", "is_end_of_queue": True}}


class WsEndpoint:
    """The canister's end of IC WebSocket: its clients, gateways and certified queues, and the operations on them.

    (Named apart from the client SDK's :class:`icws_fast.client.IcWebSocket`, the other end.)
    """

    def __init__(self) -> None:
        self._params = WsInitParams()
        self._clients: dict[ClientKey, _RegisteredClient] = {}
        self._current_key: dict[Principal, ClientKey] = {}
        self._waiting_for_keep_alive: set[ClientKey] = set()
        self._gateways: dict[Principal, _RegisteredGateway] = {}
        self._gateways_to_remove: dict[Principal, int] = {}
        self._cert = CertifiedMessageMap()
        self._ack_timer: int | None = None
        self._keep_alive_timer: int | None = None
        # When the last ack round began: a client answered that round iff its keep-alive is newer.
        self._last_ack_round_ns = 0

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def init(self, params: WsInitParams) -> None:
        """Set the parameters and (re)start the ack timer. Traps when the ack interval is not above the timeout."""
        if params.send_ack_interval_ms <= params.keep_alive_timeout_ms:
            api.trap("send_ack_interval_ms must be greater than CLIENT_KEEP_ALIVE_TIMEOUT_MS")
        self._params = params
        self._cancel_timers()
        self._ack_timer = api.set_timer_interval(params.send_ack_interval_ms * _NS_PER_MS, self._ack_round)

    def wipe(self) -> None:
        """Remove every client (calling ``on_close``) and forget all gateways and messages (for tests)."""
        for client_key in list(self._clients):
            self._remove_client(client_key, None)
        self._clients.clear()
        self._current_key.clear()
        self._waiting_for_keep_alive.clear()
        self._gateways.clear()
        self._gateways_to_remove.clear()
        self._cert = CertifiedMessageMap()
        self._certify()

    # -- the four entry points (Candid values in, Candid values out) ---------------------------------------------

    def ws_open(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``ws_open : (CanisterWsOpenArguments) -> (CanisterWsOpenResult)``."""
        return self._result(self._open, args)

    def ws_message(self, args: Mapping[str, Any], _message_type: object = None) -> dict[str, Any]:
        """``ws_message : (CanisterWsMessageArguments, opt AppMessage) -> (CanisterWsMessageResult)``.

        The second argument only exposes the app's message type in the Candid interface; it is ignored.
        """
        return self._result(self._message, args)

    def ws_close(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``ws_close : (CanisterWsCloseArguments) -> (CanisterWsCloseResult)``."""
        return self._result(self._close_by_gateway, args)

    def ws_get_messages(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``ws_get_messages : (CanisterWsGetMessagesArguments) -> (CanisterWsGetMessagesResult) query``.

        A caller that is not a registered gateway gets an empty batch, as from the Rust CDK.
        """
        gateway_principal = api.caller()
        gateway = self._gateways.get(gateway_principal)
        if gateway is None:
            return _empty_messages()
        first_nonce, messages, is_end_of_queue = gateway.window(
            args["nonce"], self._params.max_number_of_returned_messages
        )
        if not messages:
            return _empty_messages()
        cert = api.data_certificate()
        if cert is None:
            api.trap("ws_get_messages must be called as a query: no data certificate available")
        witness = self._cert.witness(gateway_principal, first_nonce, first_nonce + len(messages) - 1)
        return {
            "Ok": {
                "messages": [m.to_candid() for m in messages],
                "cert": cert,
                "tree": hashtree.to_cbor(witness),
                "is_end_of_queue": is_end_of_queue,
            }
        }

    # -- the application's API -----------------------------------------------------------------------------------

    def send(self, client_principal: Principal, message: bytes) -> None:
        """Queue ``message`` (the app message, Candid-encoded) for the client; raises :class:`CdkError`."""
        self._send(self._client_key_of(client_principal), bytes(message), False)

    def close(self, client_principal: Principal) -> None:
        """Close the client's connection (``CloseMessage { ClosedByApplication }``); raises :class:`CdkError`."""
        self._remove_client(self._client_key_of(client_principal), CloseMessageReason.ClosedByApplication)

    def connected_clients(self) -> list[Principal]:
        """The principals of the connected clients."""
        return list(self._current_key)

    def client_key(self, client_principal: Principal) -> ClientKey | None:
        """The current key of a connected client, or None."""
        return self._current_key.get(client_principal)

    # -- internals -----------------------------------------------------------------------------------------------

    @staticmethod
    def _result(handler: Callable[[Mapping[str, Any]], None], args: Mapping[str, Any]) -> dict[str, Any]:
        try:
            handler(args)
        except CdkError as exc:
            return {"Err": str(exc)}
        return {"Ok": None}

    def _open(self, args: Mapping[str, Any]) -> None:
        caller = api.caller()
        if caller.is_anonymous:
            raise CdkError("Anonymous principal is not allowed")
        client_key = ClientKey(caller, args["client_nonce"])
        if client_key in self._clients:
            raise CdkError(f"Client with key {client_key} already has an open connection")
        old_key = self._current_key.get(caller)
        if old_key is not None:
            self._remove_client(old_key, None)

        gateway_principal: Principal = args["gateway_principal"]
        gateway = self._gateways.get(gateway_principal)
        if gateway is None:
            gateway = self._gateways[gateway_principal] = _RegisteredGateway(gateway_principal)
        # The clients of a gateway share its one Principal object: the dict lookups by it on every send then
        # match by identity instead of comparing principals.
        self._clients[client_key] = _RegisteredClient(gateway.principal, api.time())
        self._current_key[caller] = client_key
        self._gateways_to_remove.pop(gateway_principal, None)
        gateway.connected_clients += 1

        self._send_service_message(client_key, OpenMessage(client_key))
        if self._params.handlers.on_open is not None:
            _run_handler(self._params.handlers.on_open, caller)

    def _message(self, args: Mapping[str, Any]) -> None:
        caller = api.caller()
        registered_key = self._client_key_of(caller)
        msg = WebsocketMessage.from_candid(args["msg"])
        if msg.client_key != registered_key:
            raise CdkError(
                f"Client with principal {msg.client_key.client_principal} has a different key than the one used in "
                "the message"
            )
        client = self._clients[registered_key]
        expected = client.expected_incoming_sequence_num
        if msg.sequence_num != expected:
            self._remove_client(registered_key, CloseMessageReason.WrongSequenceNumber)
            raise CdkError(f"Expected incoming sequence number {expected} but got {msg.sequence_num}")
        if msg.is_service_message:
            client.expected_incoming_sequence_num += 1
            self._service_message(client, msg.content)
            return
        if self._params.handlers.on_message is not None:
            _run_handler(self._params.handlers.on_message, caller, msg.content)
        # Counted only once the handler returned: when it traps, the IC rolls the whole message back (so the
        # client's next message is out of sequence); a host without rollback then behaves the same.
        client.expected_incoming_sequence_num += 1

    def _service_message(self, client: _RegisteredClient, content: bytes) -> None:
        try:
            service_message = decode_service_message(content)
        except ProtocolDecodeError as exc:
            raise CdkError(f"Error decoding service message content: {exc}") from exc
        if not isinstance(service_message, KeepAliveMessage):
            raise CdkError("Invalid service message")
        client.last_keep_alive_ns = api.time()

    def _close_by_gateway(self, args: Mapping[str, Any]) -> None:
        gateway_principal = api.caller()
        if gateway_principal not in self._gateways:
            raise CdkError(f"Gateway with principal {gateway_principal} is not registered")
        client_key = ClientKey.from_candid(args["client_key"])
        client = self._clients.get(client_key)
        if client is None:
            raise CdkError(f"Client with key {client_key} doesn't have an open connection")
        if client.gateway != gateway_principal:
            raise CdkError(f"Client with key {client_key} was not registered to gateway {gateway_principal}")
        self._remove_client(client_key, None)

    def _client_key_of(self, client_principal: Principal) -> ClientKey:
        client_key = self._current_key.get(client_principal)
        if client_key is None:
            raise CdkError(f"Client with principal {client_principal} doesn't have an open connection")
        return client_key

    def _remove_client(self, client_key: ClientKey, reason: CloseMessageReason | None) -> None:
        """Forget the client (telling it why when ``reason`` is set) and call ``on_close`` if it was registered."""
        if reason is not None:
            # As in Rust: the client is removed whether or not it can be told.
            with contextlib.suppress(CdkError):
                self._send_service_message(client_key, CloseMessage(reason))
        self._waiting_for_keep_alive.discard(client_key)
        if self._current_key.get(client_key.client_principal) == client_key:
            del self._current_key[client_key.client_principal]
        client = self._clients.pop(client_key, None)
        if client is None:
            return
        gateway = self._gateways.get(client.gateway)
        if gateway is not None:
            gateway.connected_clients = max(gateway.connected_clients - 1, 0)
            if gateway.connected_clients == 0:
                # Its queue stays pollable for one more ack interval so the gateway can deliver the close messages.
                self._gateways_to_remove[client.gateway] = api.time()
        if self._params.handlers.on_close is not None:
            _run_handler(self._params.handlers.on_close, client_key.client_principal)

    def _send_service_message(self, client_key: ClientKey, message: ServiceMessage) -> None:
        self._send(client_key, encode_service_message(message), True)

    def _send(self, client_key: ClientKey, content: bytes, is_service_message: bool) -> None:
        client = self._clients.get(client_key)
        if client is None:
            raise CdkError(f"Client with key {client_key} doesn't have an open connection")
        gateway = self._gateways.get(client.gateway)
        if gateway is None:
            raise CdkError(f"Gateway with principal {client.gateway} is not registered")
        nonce = gateway.outgoing_nonce
        key = message_key(client.gateway, nonce)
        client.outgoing_sequence_num += 1
        now = api.time()
        payload = encode_websocket_message(
            WebsocketMessage(client_key, client.outgoing_sequence_num, now, is_service_message, content)
        )
        deleted = gateway.pop_old(MESSAGES_TO_DELETE_COUNT, self._params.send_ack_interval_ms * _NS_PER_MS, now)
        if deleted:
            self._cert.delete(client.gateway, deleted)
        self._cert.insert(client.gateway, nonce, key, payload)
        gateway.append(client_key, key, payload, now)
        self._certify()

    def _certify(self) -> None:
        """Certify the message map as it is when this execution ends: one root hash per execution, not per send."""
        api.certified_data_set_deferred(self._certified_data)

    def _certified_data(self) -> bytes:
        return self._cert.certified_data

    # -- timers --------------------------------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for timer in (self._ack_timer, self._keep_alive_timer):
            if timer is not None:
                api.clear_timer(timer)
        self._ack_timer = self._keep_alive_timer = None

    def _ack_round(self) -> None:
        """Ack every client's last message, then check the keep-alives after the timeout."""
        self._last_ack_round_ns = api.time()
        for client_key, client in list(self._clients.items()):
            ack = AckMessage(client.expected_incoming_sequence_num - 1)
            try:
                self._send_service_message(client_key, ack)
            except CdkError:
                continue
            self._waiting_for_keep_alive.add(client_key)
        self._keep_alive_timer = api.set_timer(self._params.keep_alive_timeout_ms * _NS_PER_MS, self._check_keep_alive)

    def _check_keep_alive(self) -> None:
        self._keep_alive_timer = None
        self._remove_empty_expired_gateways()
        # The Rust CDK compares the last keep-alive with the time this timer fires, so a timer that
        # fires late drops clients that answered in time; comparing with the ack round does not.
        expired = [
            key
            for key in self._waiting_for_keep_alive
            if (client := self._clients.get(key)) is not None and client.last_keep_alive_ns < self._last_ack_round_ns
        ]
        for client_key in expired:
            self._remove_client(client_key, CloseMessageReason.KeepAliveTimeout)

    def _remove_empty_expired_gateways(self) -> None:
        now = api.time()
        max_age_ns = self._params.send_ack_interval_ms * _NS_PER_MS
        expired = [gw for gw, since in self._gateways_to_remove.items() if now - since > max_age_ns]
        if not expired:
            return
        for gateway_principal in expired:
            del self._gateways_to_remove[gateway_principal]
            if self._gateways.pop(gateway_principal, None) is not None:
                self._cert.remove_gateway(gateway_principal)
        self._certify()


class WsCanister(Canister):
    """A canister exporting the IC WebSocket methods, backed by ``self.websocket``.

    Subclasses define ``AppMessage`` (their message type) in ``CANDID`` after :data:`WS_TYPES_DID` and call
    ``self.websocket.init(...)`` in ``init`` and ``post_upgrade`` (timers do not survive upgrades).
    """

    CANDID = WS_TYPES_DID + "type AppMessage = blob;\n"

    def __init__(self) -> None:
        self.websocket = WsEndpoint()

    @update("(CanisterWsOpenArguments) -> (CanisterWsOpenResult)")
    def ws_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.websocket.ws_open(args)

    @update("(CanisterWsCloseArguments) -> (CanisterWsCloseResult)")
    def ws_close(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.websocket.ws_close(args)

    @update("(CanisterWsMessageArguments, opt AppMessage) -> (CanisterWsMessageResult)")
    def ws_message(self, args: dict[str, Any], message_type: object = None) -> dict[str, Any]:
        return self.websocket.ws_message(args, message_type)

    @query("(CanisterWsGetMessagesArguments) -> (CanisterWsGetMessagesResult)")
    def ws_get_messages(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.websocket.ws_get_messages(args)
