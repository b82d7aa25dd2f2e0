"""The gateway's side of a connection: ``GatewaySession.receive`` fed a client's frames.

Input: a mode byte, then the frame (a CBOR ClientRequest). Modes: 0 a new session
(the frame should be the ``ws_open``), 1 the same without signature checks (so hostile
``ws_open`` arguments are read), 2 an open session (after a valid ``ws_open``), 3 a new
session that serves one canister only. Whatever the frame, ``receive`` must answer with
actions, and a Close must carry a reason that fits in a close frame. What its last-resort
guard catches (a ``ReportError``) is a crash: the exception it wraps is raised again.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz import fixtures
from fuzz.harness import Violation
from fuzz.targets.envelope import signed_envelopes
from icws_fast.ic.envelope import build_envelope, call_content
from icws_fast.ic.identity import Identity
from icws_fast.protocol.session import (
    Close,
    GatewaySession,
    Register,
    Relay,
    ReportError,
    SendToClient,
    SessionState,
    Unregister,
)
from icws_fast.protocol.types import (
    MAX_CLOSE_REASON,
    ClientKey,
    WebsocketMessage,
    encode_client_request,
    encode_ws_message_args,
    encode_ws_open_args,
)

PREFIX = 1
_ACTIONS = (SendToClient, Register, Relay, Close, Unregister)


def request(identity: Identity, method: str, arg: bytes) -> bytes:
    """A client's ClientRequest frame: a signed call of ``method`` on the fuzz canister."""
    content = call_content(
        identity.sender, fixtures.CANISTER, method, arg, ingress_expiry_ns=fixtures.NOW_NS + 240 * 10**9
    )
    return encode_client_request(build_envelope(identity, content))


_OPEN = request(fixtures.CLIENT, "ws_open", encode_ws_open_args(fixtures.CLIENT_NONCE, fixtures.GATEWAY))


def _session(mode: int) -> GatewaySession:
    session = GatewaySession(
        fixtures.GATEWAY,
        now=0.0,
        open_timeout_s=30.0,
        allowed_canisters=frozenset({fixtures.CANISTER}) if mode == 3 else None,
        verify_signatures=mode != 1,
    )
    if mode == 2:
        session.receive(_OPEN, now_ns=fixtures.NOW_NS)
        session.delivered()
        if session.state is not SessionState.OPEN:
            raise Violation(f"a valid ws_open left the session {session.state.value}")
    return session


def one_input(data: bytes) -> None:
    if not data:
        return
    session = _session(data[0] % 4)
    for action in session.receive(data[1:], now_ns=fixtures.NOW_NS):
        if isinstance(action, ReportError) and isinstance(action.error.__cause__, Exception):
            # receive's last-resort guard caught a bug: raise it, so it is a crash where it happened.
            raise action.error.__cause__
        if not isinstance(action, _ACTIONS):
            raise Violation(f"receive returned {action!r:.200}, which is no action")
        if isinstance(action, Close) and len(action.reason.encode()) > MAX_CLOSE_REASON:
            raise Violation(f"close reason of {len(action.reason.encode())} bytes: {action.reason!r:.200}")


def seeds() -> Iterator[bytes]:
    for mode in (0, 1, 3):
        yield bytes([mode]) + _OPEN
    delegated = fixtures.delegated_client()
    yield b"\x00" + request(delegated, "ws_open", encode_ws_open_args(fixtures.CLIENT_NONCE, fixtures.GATEWAY))
    key = ClientKey(fixtures.CLIENT.sender, fixtures.CLIENT_NONCE)
    message = WebsocketMessage(key, 1, fixtures.NOW_NS, False, b"DIDL\x00\x00")
    yield b"\x02" + request(fixtures.CLIENT, "ws_message", encode_ws_message_args(message))
    for envelope in signed_envelopes():
        yield b"\x02" + encode_client_request(envelope)
