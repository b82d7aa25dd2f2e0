"""A canister and gateway pair for client tests, certifying messages the way the CDK and the replica do.

Messages are queued in the CDK's own :class:`~icws_fast.cdk.certified_map.CertifiedMessageMap`, their keys are
the CDK's, the witness is the one ``ws_get_messages`` returns, and the certificate is a real BLS-signed state
tree (``/canister/<id>/certified_data`` and ``/time``) made with :func:`~icws_fast.ic.certificate.sign_certificate`.
Nothing on the verifying side is mocked. Knobs let a test produce each kind of bad message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from icws_fast.cdk.certified_map import CertifiedMessageMap
from icws_fast.ic import bls, candid, hashtree
from icws_fast.ic.certificate import sign_certificate
from icws_fast.ic.envelope import Envelope, parse_envelope, verify_envelope
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import leb128
from icws_fast.protocol.types import (
    AckMessage,
    ClientKey,
    CloseMessage,
    CloseMessageReason,
    OpenMessage,
    ServiceMessage,
    WebsocketMessage,
    decode_client_request,
    decode_service_message,
    decode_ws_message_args,
    decode_ws_open_args,
    encode_canister_to_client,
    encode_handshake,
    encode_service_message,
    encode_websocket_message,
    message_key,
)

APP_TYPE = "record { text : text; timestamp : nat64 }"
CANISTER_ID = Principal.from_text("bnz7o-iuaaa-aaaaa-qaaaa-cai")
GATEWAY = Principal.from_text("sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae")
ROOT_SK = bls.generate_secret_key(b"icws-client-tests-root")
ROOT_KEY_DER = bls.der_encode_public_key(bls.public_key(ROOT_SK))
OTHER_SK = bls.generate_secret_key(b"icws-client-tests-other")
NS = 1_000_000_000
T0 = 1_700_000_000 * NS


@dataclass
class Received:
    """A client request as the canister sees it, after the envelope checks the IC applies."""

    envelope: Envelope
    method: str
    open_args: tuple[int, Principal] | None = None
    message: WebsocketMessage | None = None
    service: ServiceMessage | None = None
    value: Any = None


@dataclass
class SimCanister:
    """One canister with the CDK's outgoing queue for one gateway, plus the gateway's relay encoding."""

    canister_id: Principal = CANISTER_ID
    gateway: Principal = GATEWAY
    app_type: str = APP_TYPE
    certified: CertifiedMessageMap = field(default_factory=CertifiedMessageMap)
    next_nonce: int = 0
    sequence: dict[ClientKey, int] = field(default_factory=dict)
    expected_incoming: dict[ClientKey, int] = field(default_factory=dict)

    def handshake(self) -> bytes:
        return encode_handshake(self.gateway)

    # ---- what the client sent -------------------------------------------------------------------

    def receive(self, frame: bytes, now_ns: int) -> Received:
        """Decode and check a client frame as gateway and replica would (signature, expiry, arguments)."""
        env = parse_envelope(decode_client_request(frame))
        verify_envelope(env, now_ns=now_ns, effective_canister_id=self.canister_id)
        assert env.request_type == "call"
        assert env.canister_id == self.canister_id
        assert env.method_name is not None and env.arg is not None
        got = Received(env, env.method_name)
        if env.method_name == "ws_open":
            got.open_args = decode_ws_open_args(env.arg)
        else:
            assert env.method_name == "ws_message"
            msg = decode_ws_message_args(env.arg)
            assert msg.client_key.client_principal == env.sender
            # The CDK closes a client whose sequence numbers are not 1, 2, 3...
            expected = self.expected_incoming.get(msg.client_key, 1)
            assert msg.sequence_num == expected, (msg.sequence_num, expected)
            self.expected_incoming[msg.client_key] = expected + 1
            got.message = msg
            if msg.is_service_message:
                got.service = decode_service_message(msg.content)
            else:
                (got.value,) = candid.decode(msg.content, [candid.parse_type(self.app_type)])
        return got

    # ---- what the canister sends --------------------------------------------------------------

    def queue(
        self,
        client_key: ClientKey,
        content: bytes,
        *,
        is_service: bool,
        now_ns: int,
        sequence_num: int | None = None,
        addressed_to: ClientKey | None = None,
    ) -> tuple[str, bytes]:
        """Enqueue and certify one message as the CDK's ``send`` does; its key and CBOR content."""
        if sequence_num is None:
            sequence_num = self.sequence.get(client_key, 0) + 1
            self.sequence[client_key] = sequence_num
        msg = WebsocketMessage(addressed_to or client_key, sequence_num, now_ns, is_service, content)
        key = message_key(self.gateway, self.next_nonce)
        data = encode_websocket_message(msg)
        self.certified.insert(self.gateway, self.next_nonce, key, data)
        self.next_nonce += 1
        return key, data

    def service(self, client_key: ClientKey, msg: ServiceMessage, now_ns: int, **kw: Any) -> tuple[str, bytes]:
        return self.queue(client_key, encode_service_message(msg), is_service=True, now_ns=now_ns, **kw)

    def open(self, client_key: ClientKey, now_ns: int, **kw: Any) -> tuple[str, bytes]:
        return self.service(client_key, OpenMessage(client_key), now_ns, **kw)

    def ack(self, client_key: ClientKey, last: int, now_ns: int) -> tuple[str, bytes]:
        return self.service(client_key, AckMessage(last), now_ns)

    def close(self, client_key: ClientKey, reason: CloseMessageReason, now_ns: int) -> tuple[str, bytes]:
        return self.service(client_key, CloseMessage(reason), now_ns)

    def app(self, client_key: ClientKey, value: Any, now_ns: int, **kw: Any) -> tuple[str, bytes]:
        content = candid.encode([candid.parse_type(self.app_type)], [value])
        return self.queue(client_key, content, is_service=False, now_ns=now_ns, **kw)

    def relay(
        self,
        messages: list[tuple[str, bytes]],
        *,
        cert_time_ns: int,
        signing_key: bytes = ROOT_SK,
        certified_canister: Principal | None = None,
        certified_data: bytes | None = None,
    ) -> list[bytes]:
        """The gateway's frames for one polled batch: each message with the batch certificate and witness."""
        first = int(messages[0][0].rpartition("_")[2])
        last = int(messages[-1][0].rpartition("_")[2])
        tree = hashtree.to_cbor(self.certified.witness(self.gateway, first, last))
        cert = self.certificate(
            cert_time_ns,
            signing_key=signing_key,
            canister=certified_canister or self.canister_id,
            certified_data=self.certified.certified_data if certified_data is None else certified_data,
        )
        return [encode_canister_to_client(key, content, cert, tree) for key, content in messages]

    @staticmethod
    def certificate(time_ns: int, *, signing_key: bytes, canister: Principal, certified_data: bytes) -> bytes:
        state = {
            b"canister": {canister.bytes: {b"certified_data": certified_data}},
            b"time": leb128(time_ns),
        }
        return sign_certificate(hashtree.build(state), signing_key)
