"""The chat page's words for each way a session ends (``examples/chat-web/src/close_reasons.js``), run in Node.

The reasons are the gateway's (``icws_fast.protocol.session``, ``icws_fast.gateway.server``; the table in
``docs/api.md``) and the errors ic-websocket-js 0.5.0 reports before it closes with 4000 (the gateway echoes that
code without a reason). Every case a user can meet must get its own words, never the fallback.
"""

from __future__ import annotations

import json
import subprocess
from typing import Final

import pytest

from icws_fast.devnet.run_all import CHAT_PAGE_DIR

pytestmark = pytest.mark.interop

MODULE: Final = CHAT_PAGE_DIR / "src" / "close_reasons.js"
# (code, reason, SDK error, opened) -> the words the page shows.
CASES: Final = [
    ((1000, "", "", True), "the connection was closed"),
    ((1001, "gateway shutting down", "", True), "the gateway restarted or is shutting down"),
    ((1006, "", "", True), "the connection to the gateway dropped"),
    ((1006, "", "", False), "cannot reach the gateway"),
    ((1008, "slow consumer: 9000000 bytes unread, limit 8388608", "", True), "your connection was too slow"),
    ((1008, "too many requests waiting for the IC", "", True), "you sent messages faster than the IC"),
    ((1008, "this client key is already connected", "", False), "this identity is already connected"),
    ((1008, "no ws_open message in time", "", False), "the page did not open its session in time"),
    ((1008, "this gateway does not serve that canister", "", False), "this gateway does not serve the chat"),
    ((1008, "invalid client request: bad CBOR", "", True), "the gateway refused what the page sent"),
    ((1009, "Message too big", "", True), "a message was too big"),
    ((1011, "ws_open failed: rejected (code 5): trapped", "", False), "the chat canister refused the connection"),
    ((1011, "ws_message failed: rejected (code 5): the text has 1001 characters", "", True), "rejected a message"),
    ((1011, "ws_message failed: canister_error: Expected incoming sequence number", "", True), "rejected a message"),
    ((1011, "ws_message failed: transient: timed out", "", True), "the gateway could not reach the IC"),
    ((1011, "ws_open failed: invalid: HTTP 400", "", False), "the IC refused what the page sent"),
    ((1011, "internal error", "", True), "the gateway hit an internal error"),
    ((1011, "rejected ws_get_messages (CANISTER_ERROR): gone", "", True), "lost contact with the chat canister"),
    ((1013, "too many clients", "", False), "the gateway is full"),
    ((1013, "gateway is shutting down", "", False), "the gateway restarted or is shutting down"),
    ((4000, "", "Message sending failed: Error: Call was rejected", True), "the canister rejected a message"),
    ((4000, "", "Ack message timeout. Not received ack for sequence numbers: 3", True), "stopped acknowledging"),
    ((4000, "", "Open timeout expired before receiving the open message", False), "did not confirm the connection"),
    ((4000, "", "Received close message from canister. Reason: [object Object]", True), "the canister closed"),
    ((4000, "", "Error receiving message: Error: Certificate validation failed", True), "failed verification"),
    ((4000, "", "", True), "disagreed on the protocol"),
    ((4001, "", "", True), "the chat canister closed your connection"),
]
SCRIPT: Final = """
const { describeClose } = await import(process.argv[1]);
const cases = JSON.parse(process.argv[2]);
const words = cases.map(([code, reason, error, opened]) => describeClose({ code, reason, error, opened }));
console.log(JSON.stringify(words));
"""


def test_every_close_a_user_can_meet_has_its_words(node: str) -> None:
    arguments = json.dumps([list(case) for case, _ in CASES])
    result = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, MODULE.as_uri(), arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    words = json.loads(result.stdout)
    assert len(words) == len(CASES)
    for (case, expected), got in zip(CASES, words, strict=True):
        assert expected in got, f"{case}: {got!r}"
    assert "the connection closed unexpectedly" not in words
