"""The IC WebSocket CDK in process: the Rust CDK integration-test scenarios, with a manual clock.

Every polled message is verified as a client verifies it (real BLS certificate, witness, content hash).
"""

from __future__ import annotations

import hashlib
import pickle
import random

import pytest

from icws_fast.cdk import api
from icws_fast.cdk.certified_map import CertifiedMessageMap
from icws_fast.cdk.websocket import (
    CLIENT_KEEP_ALIVE_TIMEOUT_MS,
    DEFAULT_SEND_ACK_INTERVAL_MS,
    WsEndpoint,
    WsHandlers,
    WsInitParams,
)
from icws_fast.devnet.canisters.pingpong import PingPongCanister, decode_app_message, encode_app_message
from icws_fast.errors import CdkError
from icws_fast.ic import hashtree
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from tests.cdk.cdk_harness import CANISTER_ID, MS, ROOT_KEY_DER, LocalHost, service, verify_messages

GATEWAY = Principal.from_text("sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae")
GATEWAY_2 = Principal(b"\x22" * 29)
CLIENT_1 = Principal(b"\x01" * 29)
CLIENT_2 = Principal(b"\x02" * 29)
ANONYMOUS = Principal.anonymous()


class Recorder(PingPongCanister):
    """The test canister, recording the handler calls."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Principal]] = []

    def on_open(self, client: Principal) -> None:
        self.events.append(("open", client))
        super().on_open(client)

    def on_close(self, client: Principal) -> None:
        self.events.append(("close", client))
        super().on_close(client)


@pytest.fixture
def host() -> LocalHost:
    return LocalHost(Recorder())


def _messages(host: LocalHost, gateway: Principal = GATEWAY, nonce: int = 0) -> list[t.WebsocketMessage]:
    batch = host.poll(gateway, nonce)
    return [t.decode_websocket_message(m.content) for m in batch.messages]


def test_open_sends_open_message_then_app_ping(host: LocalHost) -> None:
    assert host.open(CLIENT_1, 7, GATEWAY) == {"Ok": None}
    key = t.ClientKey(CLIENT_1, 7)
    batch = host.poll(GATEWAY)
    assert [m.key for m in batch.messages] == [t.message_key(GATEWAY, 0), t.message_key(GATEWAY, 1)]
    assert batch.is_end_of_queue
    open_msg, ping = (t.decode_websocket_message(m.content) for m in batch.messages)
    assert service(open_msg) == t.OpenMessage(key)
    assert (open_msg.sequence_num, ping.sequence_num) == (1, 2)
    assert not ping.is_service_message
    assert decode_app_message(ping.content) == ("ping", host.now_ns)
    assert host.canister.events == [("open", CLIENT_1)]


def test_open_rejections(host: LocalHost) -> None:
    assert host.open(ANONYMOUS, 0, GATEWAY) == {"Err": "Anonymous principal is not allowed"}
    assert host.open(CLIENT_1, 0, GATEWAY) == {"Ok": None}
    assert host.open(CLIENT_1, 0, GATEWAY) == {"Err": f"Client with key {CLIENT_1}_0 already has an open connection"}


def test_reopen_with_a_new_nonce_replaces_the_old_key(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    assert host.open(CLIENT_1, 1, GATEWAY) == {"Ok": None}
    assert host.canister.events == [("open", CLIENT_1), ("close", CLIENT_1), ("open", CLIENT_1)]
    assert host.canister.websocket.client_key(CLIENT_1) == t.ClientKey(CLIENT_1, 1)
    # The old key can no longer send.
    assert host.message(t.ClientKey(CLIENT_1, 0), 1, encode_app_message("x", 0)) == {
        "Err": f"Client with principal {CLIENT_1} has a different key than the one used in the message"
    }


def test_message_echo_and_sequence_numbers(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    key = t.ClientKey(CLIENT_1, 0)
    for seq in (1, 2, 3):
        assert host.message(key, seq, encode_app_message(f"hello {seq}", 1)) == {"Ok": None}
    messages = _messages(host)
    assert [m.sequence_num for m in messages] == [1, 2, 3, 4, 5]
    assert [decode_app_message(m.content)[0] for m in messages[2:]] == ["hello 1 ping", "hello 2 ping", "hello 3 ping"]


def test_message_rejections(host: LocalHost) -> None:
    key = t.ClientKey(CLIENT_1, 0)
    assert host.message(key, 1, b"") == {"Err": f"Client with principal {CLIENT_1} doesn't have an open connection"}
    host.open(CLIENT_1, 0, GATEWAY)
    wrong = t.ClientKey(CLIENT_1, 99)
    assert host.message(wrong, 1, b"") == {
        "Err": f"Client with principal {CLIENT_1} has a different key than the one used in the message"
    }
    # Another principal cannot send in the name of CLIENT_1.
    host.open(CLIENT_2, 0, GATEWAY)
    msg = t.WebsocketMessage(key, 1, 0, False, encode_app_message("x", 0))
    assert host.call("ws_message", CLIENT_2, {"msg": msg.to_candid()}, None) == {
        "Err": f"Client with principal {CLIENT_1} has a different key than the one used in the message"
    }


def test_wrong_sequence_number_closes_the_client(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    key = t.ClientKey(CLIENT_1, 0)
    assert host.message(key, 2, encode_app_message("x", 0)) == {"Err": "Expected incoming sequence number 1 but got 2"}
    last = _messages(host)[-1]
    assert service(last) == t.CloseMessage(t.CloseMessageReason.WrongSequenceNumber)
    assert host.canister.websocket.connected_clients() == []
    assert host.canister.events[-1] == ("close", CLIENT_1)
    assert host.message(key, 1, b"")["Err"].endswith("doesn't have an open connection")


def test_service_messages_from_the_client(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    key = t.ClientKey(CLIENT_1, 0)
    keep_alive = t.encode_service_message(t.KeepAliveMessage(0))
    assert host.message(key, 1, keep_alive, service=True) == {"Ok": None}
    # Only KeepAliveMessage may come from a client; the sequence number still advances.
    ack = t.encode_service_message(t.AckMessage(0))
    assert host.message(key, 2, ack, service=True) == {"Err": "Invalid service message"}
    result = host.message(key, 3, b"not candid", service=True)
    assert result["Err"].startswith("Error decoding service message content: ")
    assert host.message(key, 4, keep_alive, service=True) == {"Ok": None}


def test_app_message_that_does_not_decode_traps(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    key = t.ClientKey(CLIENT_1, 0)
    with pytest.raises(api.Trap):
        host.message(key, 1, b"garbage")
    # The trapped message is not counted (the IC would have rolled it back).
    assert host.message(key, 1, encode_app_message("ok", 0)) == {"Ok": None}


def test_get_messages_paging_and_certification() -> None:
    class Small(Recorder):
        def ws_params(self) -> WsInitParams:
            return WsInitParams(
                WsHandlers(self.on_open, self.on_message, self.on_close), max_number_of_returned_messages=3
            )

    host = LocalHost(Small())
    host.open(CLIENT_1, 0, GATEWAY)
    for i in range(8):
        assert host.call("send", host.canister_self(), CLIENT_1, bytes([i])) == {"Ok": None}
    # 10 messages: open, ping, 8 sends.
    seen = []
    nonce = 0
    while True:
        batch = host.poll(GATEWAY, nonce)
        assert len(batch.messages) <= 3
        seen += [t.parse_message_nonce(m.key) for m in batch.messages]
        nonce = seen[-1] + 1
        if batch.is_end_of_queue:
            break
    assert seen == list(range(10))
    assert host.poll(GATEWAY, 10).messages == []
    assert [t.parse_message_nonce(m.key) for m in host.poll(GATEWAY, 8).messages] == [8, 9]
    # A caller that is not a registered gateway gets an empty batch.
    for caller in (ANONYMOUS, CLIENT_1, GATEWAY_2):
        assert host.call("ws_get_messages", caller, {"nonce": 0}) == {
            "Ok": {"messages": [], "cert": b"", "tree": b"", "is_end_of_queue": True}
        }


def test_close_by_gateway(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    key = t.ClientKey(CLIENT_1, 0)
    args = {"client_key": key.to_candid()}
    assert host.call("ws_close", GATEWAY_2, args) == {"Err": f"Gateway with principal {GATEWAY_2} is not registered"}
    other = {"client_key": t.ClientKey(CLIENT_2, 0).to_candid()}
    assert host.call("ws_close", GATEWAY, other) == {
        "Err": f"Client with key {CLIENT_2}_0 doesn't have an open connection"
    }
    host.open(CLIENT_2, 0, GATEWAY_2)
    assert host.call("ws_close", GATEWAY_2, args) == {
        "Err": f"Client with key {key} was not registered to gateway {GATEWAY_2}"
    }
    assert host.call("ws_close", GATEWAY, args) == {"Ok": None}
    assert host.canister.events[-1] == ("close", CLIENT_1)
    assert host.canister.websocket.connected_clients() == [CLIENT_2]


def test_send_and_close_by_the_canister(host: LocalHost) -> None:
    assert host.call("send", host.canister_self(), CLIENT_1, b"x") == {
        "Err": f"Client with principal {CLIENT_1} doesn't have an open connection"
    }
    host.open(CLIENT_1, 0, GATEWAY)
    assert host.call("send", host.canister_self(), CLIENT_1, b"raw") == {"Ok": None}
    assert host.call("close", host.canister_self(), CLIENT_1) == {"Ok": None}
    messages = _messages(host)
    assert messages[2].content == b"raw"
    assert service(messages[3]) == t.CloseMessage(t.CloseMessageReason.ClosedByApplication)
    assert host.call("close", host.canister_self(), CLIENT_1) == {
        "Err": f"Client with principal {CLIENT_1} doesn't have an open connection"
    }
    with pytest.raises(CdkError):
        host.canister.websocket.send(CLIENT_1, b"")


def test_ack_and_keep_alive_timeout(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    host.open(CLIENT_2, 0, GATEWAY)
    key_1, key_2 = t.ClientKey(CLIENT_1, 0), t.ClientKey(CLIENT_2, 0)
    host.message(key_1, 1, encode_app_message("a", 0))
    host.message(key_1, 2, encode_app_message("b", 0))
    before = len(host.poll(GATEWAY).messages)

    host.advance(DEFAULT_SEND_ACK_INTERVAL_MS)
    acks = {m.client_key: service(m) for m in _messages(host, nonce=before)}
    assert acks == {key_1: t.AckMessage(2), key_2: t.AckMessage(0)}

    # Only client 1 answers, within the timeout.
    host.advance(CLIENT_KEEP_ALIVE_TIMEOUT_MS // 2)
    assert host.message(key_1, 3, t.encode_service_message(t.KeepAliveMessage(3)), service=True) == {"Ok": None}
    host.advance(CLIENT_KEEP_ALIVE_TIMEOUT_MS // 2)
    assert host.canister.websocket.connected_clients() == [CLIENT_1]
    last = _messages(host)[-1]
    assert last.client_key == key_2
    assert service(last) == t.CloseMessage(t.CloseMessageReason.KeepAliveTimeout)
    assert host.canister.events[-1] == ("close", CLIENT_2)


def test_init_rejects_an_ack_interval_not_above_the_keep_alive_timeout() -> None:
    host = LocalHost(Recorder())
    with pytest.raises(api.Trap, match="send_ack_interval_ms must be greater than CLIENT_KEEP_ALIVE_TIMEOUT_MS"):
        host._run(
            host.canister.websocket.init,
            host.canister_self(),
            WsInitParams(send_ack_interval_ms=CLIENT_KEEP_ALIVE_TIMEOUT_MS),
            query=False,
        )


def test_old_messages_are_deleted_five_per_send(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    for _ in range(10):
        host.call("send", host.canister_self(), CLIENT_1, b"m")
    assert len(host.poll(GATEWAY).messages) == 12
    host.now_ns += (DEFAULT_SEND_ACK_INTERVAL_MS + 1) * MS  # old enough, without running the ack timer
    host.call("send", host.canister_self(), CLIENT_1, b"new")
    batch = host.poll(GATEWAY)
    assert [t.parse_message_nonce(m.key) for m in batch.messages] == list(range(5, 13))
    # Deleted keys are gone from the certified map too: the witness proves them absent.
    tree = hashtree.parse(batch.tree)
    for nonce in range(5):
        assert (
            hashtree.lookup_path(tree, [t.LABEL_WEBSOCKET, t.message_key(GATEWAY, nonce).encode()]).status == "Absent"
        )


def test_gateway_without_clients_is_removed_after_an_ack_interval(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    host.call("ws_close", GATEWAY, {"client_key": t.ClientKey(CLIENT_1, 0).to_candid()})
    assert host.poll(GATEWAY).messages  # still pollable
    empty_data = CertifiedMessageMap().certified_data
    assert host.certified_data != empty_data
    host.advance(DEFAULT_SEND_ACK_INTERVAL_MS + CLIENT_KEEP_ALIVE_TIMEOUT_MS)
    assert host.poll(GATEWAY).messages == []
    assert host.certified_data == empty_data


def test_multiple_gateways(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    host.open(CLIENT_2, 5, GATEWAY_2)
    for i in range(3):
        host.call("send", host.canister_self(), CLIENT_1, b"to 1 %d" % i)
        host.call("send", host.canister_self(), CLIENT_2, b"to 2 %d" % i)
    for gateway, client in ((GATEWAY, CLIENT_1), (GATEWAY_2, CLIENT_2)):
        batch = host.poll(gateway)
        assert [t.parse_message_nonce(m.key) for m in batch.messages] == list(range(5))
        assert all(m.key.startswith(f"{gateway}_") for m in batch.messages)
        assert {m.client_key.client_principal for m in batch.messages} == {client}
    # A gateway cannot close the client of another gateway.
    args = {"client_key": t.ClientKey(CLIENT_2, 5).to_candid()}
    assert host.call("ws_close", GATEWAY, args)["Err"].endswith(f"was not registered to gateway {GATEWAY}")


def test_wipe_closes_every_client(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    host.open(CLIENT_2, 0, GATEWAY_2)
    host._run(host.canister.websocket.wipe, host.canister_self(), query=False)
    assert host.canister.websocket.connected_clients() == []
    assert sorted(e for e in host.canister.events if e[0] == "close") == sorted(
        [("close", CLIENT_1), ("close", CLIENT_2)]
    )
    assert host.poll(GATEWAY).messages == []


def test_certified_map_against_a_model() -> None:
    """Random inserts and deletes over several gateways: the root, witnesses and lookups stay consistent."""
    rng = random.Random(5)
    gateways = [Principal(bytes([i]) * 10) for i in range(1, 5)] + [Principal.from_text("aaaaa-aa")]
    cmap = CertifiedMessageMap()
    model: dict[Principal, dict[int, bytes]] = {g: {} for g in gateways}
    next_nonce = dict.fromkeys(gateways, 0)
    for step in range(600):
        gateway = rng.choice(gateways)
        queue = model[gateway]
        if queue and rng.random() < 0.4:
            doomed = sorted(queue)[: rng.randint(1, 5)]
            cmap.delete(gateway, doomed)
            for n in doomed:
                del queue[n]
        elif rng.random() < 0.02:
            cmap.remove_gateway(gateway)
            queue.clear()
        else:
            nonce = next_nonce[gateway]
            next_nonce[gateway] += rng.choice((1, 1, 1, 7, 1000))
            content = rng.randbytes(8)
            cmap.insert(gateway, nonce, t.message_key(gateway, nonce), content)
            queue[nonce] = content
        assert len(cmap) == sum(len(q) for q in model.values())
        full = {
            t.message_key(g, n).encode(): hashlib.sha256(c).digest() for g, q in model.items() for n, c in q.items()
        }
        if not full:
            assert cmap.root_hash == hashtree.EMPTY_HASH
            continue
        if step % 7 and step < 590:
            continue
        # The hashes are computed lazily: the root must not depend on the history, only on the entries.
        fresh = CertifiedMessageMap()
        for g, q in model.items():
            for n, c in q.items():
                fresh.insert(g, n, t.message_key(g, n), c)
        assert cmap.certified_data == fresh.certified_data
        for g, q in model.items():
            if not q:
                continue
            nonces = sorted(q)
            lo = rng.choice(nonces)
            hi = rng.choice([n for n in nonces if n >= lo])
            witness = cmap.witness(g, lo, hi)
            assert hashtree.reconstruct(witness) == cmap.certified_data
            for n in nonces:
                found = hashtree.lookup_path(witness, [t.LABEL_WEBSOCKET, t.message_key(g, n).encode()])
                if lo <= n <= hi:
                    assert found.value == full[t.message_key(g, n).encode()]
                else:
                    assert found.status != "Found"


def test_verify_rejects_a_tampered_batch(host: LocalHost) -> None:
    host.open(CLIENT_1, 0, GATEWAY)
    batch = host.poll(GATEWAY)
    tampered = batch._replace(messages=[batch.messages[0]._replace(content=batch.messages[1].content)])
    with pytest.raises(AssertionError):
        verify_messages(tampered, ROOT_KEY_DER, CANISTER_ID, host.now_ns)


def test_icwebsocket_is_usable_without_a_canister_class() -> None:
    """The state object works with any host: handlers are plain callables."""
    opened: list[Principal] = []

    class Bare(api.Canister):
        def __init__(self) -> None:
            self.ws = WsEndpoint()

        def init(self) -> None:
            self.ws.init(WsInitParams(WsHandlers(on_open=opened.append)))

    host = LocalHost(Bare())
    host._caller = CLIENT_1
    with api.system_context(host):
        assert host.canister.ws.ws_open({"client_nonce": 1, "gateway_principal": GATEWAY}) == {"Ok": None}
    assert opened == [CLIENT_1]


def test_state_survives_pickling_and_upgrade(host: LocalHost) -> None:
    """The devnet persists canisters with pickle and runs post_upgrade: queues, keys and certification carry on."""
    host.open(CLIENT_1, 0, GATEWAY)
    key = t.ClientKey(CLIENT_1, 0)
    host.message(key, 1, encode_app_message("before", 0))
    restored = LocalHost(pickle.loads(pickle.dumps(host.canister)), upgraded_from=host)
    assert restored.message(key, 2, encode_app_message("after", 0)) == {"Ok": None}
    texts = [decode_app_message(m.content)[0] for m in _messages(restored) if not m.is_service_message]
    assert texts == ["ping", "before ping", "after ping"]
    restored.advance(DEFAULT_SEND_ACK_INTERVAL_MS)  # the ack timer was re-armed by post_upgrade
    assert service(_messages(restored)[-1]) == t.AckMessage(2)


def test_a_cdk_error_escaping_a_handler_traps() -> None:
    class Careless(Recorder):
        def on_message(self, client: Principal, message: bytes) -> None:
            self.websocket.send(CLIENT_2, message)  # CLIENT_2 is not connected

    host = LocalHost(Careless())
    host.open(CLIENT_1, 0, GATEWAY)
    with pytest.raises(api.Trap, match="doesn't have an open connection"):
        host.message(t.ClientKey(CLIENT_1, 0), 1, b"x")


def test_emptied_gateway_stays_pollable_until_the_keep_alive_check_after_an_ack_interval(host: LocalHost) -> None:
    """Rust CDK c_ws_get_messages test 7: a gateway emptied just after an ack round keeps its queue a full cycle."""
    host.open(CLIENT_1, 0, GATEWAY)
    for _ in range(10):
        host.call("send", host.canister_self(), CLIENT_1, b"m")
    host.advance(DEFAULT_SEND_ACK_INTERVAL_MS)  # the ack round runs: one more message
    host.call("ws_close", GATEWAY, {"client_key": t.ClientKey(CLIENT_1, 0).to_candid()})
    expected = 1 + 1 + 10 + 1  # open, ping, sends, ack
    assert len(host.poll(GATEWAY).messages) == expected
    host.advance(CLIENT_KEEP_ALIVE_TIMEOUT_MS)  # keep-alive check: emptied less than an ack interval ago
    assert len(host.poll(GATEWAY).messages) == expected
    host.advance(DEFAULT_SEND_ACK_INTERVAL_MS - CLIENT_KEEP_ALIVE_TIMEOUT_MS)  # next ack round: no check yet
    assert len(host.poll(GATEWAY).messages) == expected
    host.advance(CLIENT_KEEP_ALIVE_TIMEOUT_MS)  # the check after it removes the gateway
    assert host.poll(GATEWAY).messages == []


def test_client_connecting_while_the_canister_waits_for_keep_alives_is_not_removed(host: LocalHost) -> None:
    """Rust CDK g_messages_acknowledgement test 4."""
    host.advance(DEFAULT_SEND_ACK_INTERVAL_MS)  # an ack round with nobody connected; its keep-alive check is pending
    host.open(CLIENT_1, 0, GATEWAY)
    key = t.ClientKey(CLIENT_1, 0)
    assert host.poll(GATEWAY, 2).messages == []  # nothing after the open message and the ping
    assert host.message(key, 1, encode_app_message("hi", 0)) == {"Ok": None}
    host.advance(CLIENT_KEEP_ALIVE_TIMEOUT_MS)
    host.advance(DEFAULT_SEND_ACK_INTERVAL_MS - CLIENT_KEEP_ALIVE_TIMEOUT_MS)
    assert host.canister.websocket.connected_clients() == [CLIENT_1]
    ack = _messages(host, nonce=3)  # after open, ping and the reply to "hi"
    assert [service(m) for m in ack] == [t.AckMessage(1)]
    assert ack[0].sequence_num == 4


def test_client_can_switch_to_another_gateway(host: LocalHost) -> None:
    """Rust CDK h_multiple_gateways test 1: reconnecting through another gateway moves the client's messages."""
    host.open(CLIENT_1, 0, GATEWAY)
    host.call("send", host.canister_self(), CLIENT_1, b"via 1")
    assert host.open(CLIENT_1, 1, GATEWAY_2) == {"Ok": None}
    host.call("send", host.canister_self(), CLIENT_1, b"via 2")
    first = _messages(host, GATEWAY)
    second = _messages(host, GATEWAY_2)
    assert [m.content for m in first if not m.is_service_message][-1] == b"via 1"
    assert {m.client_key for m in second} == {t.ClientKey(CLIENT_1, 1)}
    assert second[-1].content == b"via 2"
    # Sequence numbers restart for the new key.
    assert [m.sequence_num for m in second] == [1, 2, 3]
    # The old gateway no longer serves this client.
    assert host.call("ws_close", GATEWAY, {"client_key": t.ClientKey(CLIENT_1, 1).to_candid()})["Err"].endswith(
        f"was not registered to gateway {GATEWAY}"
    )
