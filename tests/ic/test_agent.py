"""The async agent against real HTTP servers on loopback.

``ScriptedReplica`` is a small replica written here from the interface specification: it signs real
BLS certificates and Ed25519 query signatures, and it can be told to misbehave (no v4/v3 endpoints, 202,
stale or wrongly signed certificates, corrupt node signatures, hostile bodies) so that every branch of the
agent is exercised. The end-to-end tests at the bottom run the agent against the real devnet, with all its
endpoint versions and restricted to the older ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from icws_fast.devnet.server import Devnet
from icws_fast.errors import (
    AgentError,
    AgentTimeout,
    CallPending,
    CertificateError,
    EnvelopeError,
    HttpStatusError,
    IcwsError,
    RejectError,
    TransportError,
)
from icws_fast.ic import agent as agent_module
from icws_fast.ic import bls, candid, cbor, hashtree
from icws_fast.ic.agent import MAINNET_ROOT_KEY, Agent, is_mainnet_url, root_key_from_status
from icws_fast.ic.certificate import (
    REASON_CANISTER_NOT_IN_RANGE,
    REASON_INVALID_SIGNATURE,
    REASON_NODE_SIGNATURE,
    REASON_TIME_IN_FUTURE,
    REASON_TIME_TOO_OLD,
    encode_delegation,
    sign_certificate,
)
from icws_fast.ic.envelope import build_envelope, call_content, parse_envelope, read_state_content
from icws_fast.ic.identity import AnonymousIdentity, DelegationChain, DelegationIdentity, Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import RESPONSE_DOMAIN, hash_of_map, leb128
from tests.interop.echo_canister import Echo
from tests.vectors import load_vectors

CANISTER = Principal.from_text("rwlgt-iiaaa-aaaaa-aaaaa-cai")
OTHER_RANGE_LOW = bytes.fromhex("00000000001000000101")
OTHER_RANGE_HIGH = bytes.fromhex("00000000001fffff0101")
MINUTE_NS = 60 * 1_000_000_000


@dataclass
class Request:
    """A call the scripted replica has accepted."""

    sender: bytes
    method: str
    arg: bytes
    polls: int = 0


@dataclass
class ScriptedReplica:
    """A replica over aiohttp that follows the spec unless a test tells it to misbehave."""

    sync: str = "sync"  # what the synchronous (v4, v3) call endpoints do: "sync" | "202"
    # The newest endpoint version served per kind; newer ones answer 404 as a replica without the route does.
    newest: dict[str, int] = field(default_factory=lambda: {"call": 4, "query": 3, "read_state": 3})
    clock_offset_ns: int = 0  # shifts the certificates' /time
    sign_with_other_key: bool = False
    corrupt_node_signature: bool = False
    polls_before_done: int = 0  # read_state answers "received" this many times first
    certify_other_request: bool = False  # a synchronous answer certifies a forged reply of another request id
    delegated_ranges: list[list[bytes]] | None = None  # sign as a subnet delegated these canister ranges
    # "kind" or "vN/kind" (the more specific wins) -> (status, body)
    hostile: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hang: asyncio.Event | None = None  # when set, every request waits on it
    hits: list[str] = field(default_factory=list)
    requests: dict[bytes, Request] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.secret_key = bls.generate_secret_key(b"scripted replica root key")
        self.root_key = bls.der_encode_public_key(bls.public_key(self.secret_key))
        other = bls.generate_secret_key(b"someone else's key")
        self.signing_key = other if self.sign_with_other_key else self.secret_key
        self.node = Ed25519Identity.from_seed(bytes(range(32)))
        self.node_id = Principal.self_authenticating(self.node.der_public_key).bytes
        self.subnet_id = Principal.self_authenticating(self.root_key).bytes
        self.subnet_key = bls.generate_secret_key(b"scripted replica subnet key")

    # -- state ------------------------------------------------------------------------------------------

    @staticmethod
    def outcome(method: str, arg: bytes) -> dict[bytes, bytes]:
        if method == "fail":
            return {b"status": b"rejected", b"reject_code": leb128(4), b"reject_message": b"no", b"error_code": b"E1"}
        if method == "forgotten":
            return {b"status": b"done"}
        return {b"status": b"replied", b"reply": b"echo:" + arg}

    def certificate(self, extra: dict[bytes, Any], *, sharded: bool = False) -> bytes:
        """A certificate of ``extra``; a delegation's ranges use the sharded layout when ``sharded``."""
        mapping: dict[bytes, Any] = {
            b"time": leb128(time.time_ns() + self.clock_offset_ns),
            b"subnet": {
                self.subnet_id: {
                    b"public_key": self.root_key,
                    # Without a delegation this is the root subnet, which serves its own ranges.
                    b"canister_ranges": cbor.encode([[CANISTER.bytes, CANISTER.bytes]]),
                    b"node": {self.node_id: {b"public_key": self.node.der_public_key}},
                }
            },
            **extra,
        }
        if self.delegated_ranges is None:
            return sign_certificate(hashtree.build(mapping), self.signing_key)
        # The root key vouches for the subnet key and the canister ranges; the subnet key signs the state.
        ranges = cbor.encode(self.delegated_ranges)
        subnet: dict[bytes, Any] = {b"public_key": bls.der_encode_public_key(bls.public_key(self.subnet_key))}
        root_state: dict[bytes, Any] = {b"time": mapping[b"time"], b"subnet": {self.subnet_id: subnet}}
        if sharded:
            root_state[b"canister_ranges"] = {self.subnet_id: {self.delegated_ranges[0][0]: ranges}}
        else:
            subnet[b"canister_ranges"] = ranges
        delegation = encode_delegation(self.subnet_id, sign_certificate(hashtree.build(root_state), self.signing_key))
        return sign_certificate(hashtree.build(mapping), self.subnet_key, delegation)

    def status_subtree(self, rid: bytes) -> dict[bytes, Any]:
        req = self.requests.get(rid)
        if req is None:
            return {}
        req.polls += 1
        if req.polls <= self.polls_before_done:
            return {b"request_status": {rid: {b"status": b"received"}}}
        return {b"request_status": {rid: self.outcome(req.method, req.arg)}}

    # -- HTTP -------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        kind = request.match_info.get("kind", "status")
        version = request.match_info.get("version", "v2")
        self.hits.append(f"{version}/{kind}")
        if self.hang is not None:
            await self.hang.wait()
        hostile = self.hostile.get(f"{version}/{kind}", self.hostile.get(kind))
        if hostile is not None:
            return web.Response(status=hostile[0], body=hostile[1])
        if kind == "status":
            return self.cbor({"root_key": self.root_key, "impl_version": "scripted"})
        if int(version[1:]) > self.newest[kind]:
            return web.Response(status=404)
        env = parse_envelope(await request.read())
        if kind == "call":
            return self.call(version, env)
        if kind == "query":
            return self.query(env)
        assert env.paths is not None
        rid = env.paths[0][1] if env.paths[0][0] == b"request_status" else b""
        known = self.requests.get(rid)
        if known is not None and known.sender != env.sender.bytes:
            # The spec lets only a request's sender read its status.
            return web.Response(status=403, text="request status of another sender")
        extra = self.status_subtree(rid) if rid else {}
        return self.cbor({"certificate": self.certificate(extra, sharded=version == "v3")})

    def call(self, version: str, env: Any) -> web.Response:
        synchronous = version in ("v3", "v4")
        if env.method_name == "inspect_reject":
            rejection = {"reject_code": 3, "reject_message": "refused", "error_code": "IC0302"}
            if synchronous:
                return self.cbor({"status": "non_replicated_rejection", **rejection})
            return self.cbor(rejection)
        self.requests[env.request_id] = Request(env.sender.bytes, env.method_name, env.arg)
        if synchronous and self.sync == "sync":
            sharded = version == "v4"
            if self.certify_other_request:
                other = hashlib.sha256(env.request_id).digest()
                forged = {b"request_status": {other: {b"status": b"replied", b"reply": b"forged"}}}
                return self.cbor({"status": "replied", "certificate": self.certificate(forged, sharded=sharded)})
            certificate = self.certificate(self.status_subtree(env.request_id), sharded=sharded)
            return self.cbor({"status": "replied", "certificate": certificate})
        return web.Response(status=202)

    def query(self, env: Any) -> web.Response:
        timestamp = time.time_ns()
        if env.method_name == "fail":
            fields: dict[str, Any] = {
                "status": "rejected",
                "reject_code": 4,
                "reject_message": "query says no",
                "error_code": "IC0406",
            }
        else:
            fields = {"status": "replied", "reply": {"arg": b"echo:" + env.arg}}
        message = RESPONSE_DOMAIN + hash_of_map({**fields, "timestamp": timestamp, "request_id": env.request_id})
        signature = self.node.sign(message)
        if self.corrupt_node_signature:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        node_sig = {"timestamp": timestamp, "signature": signature, "identity": self.node_id}
        return self.cbor({**fields, "signatures": [node_sig]})

    @staticmethod
    def cbor(value: Any) -> web.Response:
        return web.Response(body=cbor.encode(value), content_type="application/cbor")


@pytest.fixture
async def replica_server() -> AsyncIterator[tuple[ScriptedReplica, str]]:
    replica = ScriptedReplica()
    app = web.Application()
    app.router.add_get("/api/v2/status", replica.handle)
    app.router.add_post("/api/{version}/canister/{canister}/{kind}", replica.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield replica, f"http://{host}:{port}"
    finally:
        if replica.hang is not None:
            replica.hang.set()
        await runner.cleanup()


def reconfigure(replica: ScriptedReplica, **changes: Any) -> None:
    for name, value in changes.items():
        setattr(replica, name, value)
    replica.__post_init__()


async def agent_for(url: str, replica: ScriptedReplica, **kwargs: Any) -> Agent:
    agent = Agent(url, kwargs.pop("identity", Ed25519Identity.generate()), **kwargs)
    await agent.fetch_root_key()
    assert agent.root_key == replica.root_key
    return agent


# -- root key and URLs ----------------------------------------------------------------------------------


def test_mainnet_root_key_is_the_published_one() -> None:
    keys = {r["root_key_der_hex"] for r in load_vectors("certificates") if r["root_key_name"] == "ic_mainnet"}
    assert keys == {MAINNET_ROOT_KEY.hex()}


@pytest.mark.parametrize(
    ("url", "mainnet"),
    [
        ("https://icp-api.io", True),
        ("https://ic0.app/", True),
        ("https://boundary.icp0.io", True),
        ("http://127.0.0.1:4943", False),
        ("https://notic0.app", False),
        ("https://ic0.app.example.com", False),
    ],
)
def test_is_mainnet_url(url: str, mainnet: bool) -> None:
    assert is_mainnet_url(url) is mainnet


async def test_mainnet_root_key_is_never_fetched() -> None:
    # Port 9 on loopback has no listener: any request would fail with TransportError.
    async with Agent("http://127.0.0.1:9", root_key=None) as local, Agent("https://icp-api.io") as mainnet:
        assert await mainnet.fetch_root_key() == MAINNET_ROOT_KEY
        assert mainnet.verify_query_signatures and not local.verify_query_signatures
        with pytest.raises(AgentError, match="root key"):
            _ = local.root_key


async def test_fetch_root_key_and_status(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with Agent(url) as agent:
        assert (await agent.status())["impl_version"] == "scripted"
        assert await agent.fetch_root_key() == replica.root_key


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\xff", "malformed CBOR in the status answer of http://r"),
        (cbor.encode(["root_key"]), "the status of http://r carries no root_key byte string"),
        (cbor.encode({"ic_api_version": "0.18.0"}), "carries no root_key byte string"),
        (cbor.encode({"root_key": "30"}), "carries no root_key byte string"),
        (
            cbor.encode({"root_key": MAINNET_ROOT_KEY[:-1]}),
            "the root key of http://r is not a DER BLS12-381 public key",
        ),
    ],
)
def test_root_key_from_status_refuses_what_is_not_a_der_bls_key(body: bytes, problem: str) -> None:
    with pytest.raises(AgentError, match=problem):
        root_key_from_status(body, "http://r")
    assert root_key_from_status(cbor.encode({"root_key": MAINNET_ROOT_KEY}), "http://r") == MAINNET_ROOT_KEY


async def test_certified_answer_needs_a_root_key(replica_server: tuple[ScriptedReplica, str]) -> None:
    _, url = replica_server
    async with Agent(url) as agent:
        with pytest.raises(AgentError, match="root key"):
            await agent.call(CANISTER, "echo", b"x")


# -- update calls ---------------------------------------------------------------------------------------


async def test_call_v4_synchronous(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        assert await agent.call(CANISTER, "echo", b"hi") == b"echo:hi"
        assert await agent.call(str(CANISTER), "echo", b"hi") == b"echo:hi"
    assert replica.hits[1:] == ["v4/call", "v4/call"]
    assert len(replica.requests) == 2  # the nonce makes identical calls distinct requests


async def test_call_202_polls_read_state(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    reconfigure(replica, sync="202", polls_before_done=2)
    async with await agent_for(url, replica) as agent:
        assert await agent.call(CANISTER, "echo", b"later") == b"echo:later"
    assert replica.hits[1:] == ["v4/call", "v3/read_state", "v3/read_state", "v3/read_state"]


async def test_a_certificate_for_another_request_id_is_not_the_reply(
    replica_server: tuple[ScriptedReplica, str],
) -> None:
    replica, url = replica_server
    reconfigure(replica, certify_other_request=True)
    async with await agent_for(url, replica) as agent:
        # The v4 answer's valid certificate holds another request's reply: the agent reads its own by polling.
        assert await agent.call(CANISTER, "echo", b"mine") == b"echo:mine"
    assert replica.hits[1:] == ["v4/call", "v3/read_state"]


# What an agent sends to a replica of each generation: two calls (the first finds the newest call endpoint the
# replica has), a query and a read_state (each finding its endpoint too).
GENERATIONS = {
    "v4": (
        {"call": 4, "query": 3, "read_state": 3},
        ["v4/call", "v4/call", "v3/query", "v3/read_state"],
    ),
    "v3-call": (
        {"call": 3, "query": 2, "read_state": 2},
        ["v4/call", "v3/call", "v3/call", "v3/query", "v2/query", "v3/read_state", "v2/read_state"],
    ),
    "v2-only": (
        {"call": 2, "query": 2, "read_state": 2},
        [
            *("v4/call", "v3/call", "v2/call", "v3/read_state", "v2/read_state"),
            *("v2/call", "v2/read_state", "v3/query", "v2/query", "v2/read_state"),
        ],
    ),
}


@pytest.mark.parametrize("generation", GENERATIONS)
async def test_older_replicas_are_served_by_older_endpoints(
    replica_server: tuple[ScriptedReplica, str], generation: str
) -> None:
    replica, url = replica_server
    newest, hits = GENERATIONS[generation]
    reconfigure(replica, newest=newest)
    async with await agent_for(url, replica) as agent:
        assert await agent.call(CANISTER, "echo", b"a") == b"echo:a"
        assert await agent.call(CANISTER, "echo", b"b") == b"echo:b"
        assert await agent.query(CANISTER, "echo", b"q") == b"echo:q"
        await agent.read_state(CANISTER, [[b"time"]])
        assert {kind: agent.endpoint_version(kind) for kind in newest} == newest
    assert replica.hits[1:] == hits


@pytest.mark.parametrize("status", [405, 501])
async def test_other_missing_endpoint_statuses_fall_back(
    replica_server: tuple[ScriptedReplica, str], status: int
) -> None:
    replica, url = replica_server
    replica.hostile["v4/call"] = (status, b"")
    async with await agent_for(url, replica) as agent:
        assert await agent.call(CANISTER, "echo", b"x") == b"echo:x"
        assert agent.endpoint_version("call") == 3
    assert replica.hits[1:] == ["v4/call", "v3/call"]


async def test_a_404_on_every_version_is_not_a_missing_endpoint(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        # A boundary node answers 404 for an unknown canister on every endpoint version.
        replica.hostile["call"] = (404, b"canister not found")
        with pytest.raises(HttpStatusError) as info:
            await agent.call(CANISTER, "echo", b"")
        assert (info.value.status, info.value.text) == (404, "canister not found")
        del replica.hostile["call"]
        assert await agent.call(CANISTER, "echo", b"v4") == b"echo:v4"
        assert agent.endpoint_version("call") == 4
    assert replica.hits[1:] == ["v4/call", "v3/call", "v2/call", "v4/call"]


@pytest.mark.parametrize("status", [400, 403, 429, 500, 503])
async def test_other_errors_never_change_the_endpoint(replica_server: tuple[ScriptedReplica, str], status: int) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        for kind in ("call", "query", "read_state"):
            replica.hostile[kind] = (status, b"no")
        attempts = [
            agent.call(CANISTER, "echo", b""),
            agent.query(CANISTER, "echo", b""),
            agent.read_state(CANISTER, [[b"time"]]),
        ]
        for attempt in attempts:
            with pytest.raises(HttpStatusError) as info:
                await attempt
            assert info.value.status == status
        assert [agent.endpoint_version(kind) for kind in ("call", "query", "read_state")] == [4, 3, 3]
    assert replica.hits[1:] == ["v4/call", "v3/query", "v3/read_state"]


async def test_a_reject_never_changes_the_endpoint(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        for method in ("inspect_reject", "fail"):
            with pytest.raises(RejectError):
                await agent.call(CANISTER, method, b"")
        with pytest.raises(RejectError):
            await agent.query(CANISTER, "fail", b"")
        assert [agent.endpoint_version(kind) for kind in ("call", "query")] == [4, 3]
    assert replica.hits[1:] == ["v4/call", "v4/call", "v3/query"]


@pytest.mark.parametrize("changes", [{}, {"sync": "202"}, {"newest": {"call": 2, "query": 2, "read_state": 2}}])
async def test_certified_reject(replica_server: tuple[ScriptedReplica, str], changes: dict[str, Any]) -> None:
    replica, url = replica_server
    reconfigure(replica, **changes)
    async with await agent_for(url, replica) as agent:
        with pytest.raises(RejectError) as info:
            await agent.call(CANISTER, "fail", b"")
    assert (info.value.reject_code, info.value.reject_message, info.value.error_code) == (4, "no", "E1")


@pytest.mark.parametrize("newest_call", [4, 3, 2])
async def test_non_replicated_rejection(replica_server: tuple[ScriptedReplica, str], newest_call: int) -> None:
    replica, url = replica_server
    reconfigure(replica, newest={"call": newest_call, "query": 3, "read_state": 3})
    async with await agent_for(url, replica) as agent:
        with pytest.raises(RejectError) as info:
            await agent.call(CANISTER, "inspect_reject", b"")
    assert (info.value.reject_code, info.value.reject_message, info.value.error_code) == (3, "refused", "IC0302")


async def test_done_call_has_no_reply(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        with pytest.raises(AgentError, match="done"):
            await agent.call(CANISTER, "forgotten", b"")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sign_with_other_key": True}, REASON_INVALID_SIGNATURE),
        ({"clock_offset_ns": -10 * MINUTE_NS}, REASON_TIME_TOO_OLD),
        ({"clock_offset_ns": 10 * MINUTE_NS}, REASON_TIME_IN_FUTURE),
        # A valid delegation, but to a subnet whose ranges do not hold the canister.
        ({"delegated_ranges": [[OTHER_RANGE_LOW, OTHER_RANGE_HIGH]]}, REASON_CANISTER_NOT_IN_RANGE),
    ],
)
async def test_certificates_are_verified(
    replica_server: tuple[ScriptedReplica, str], changes: dict[str, Any], reason: str
) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        reconfigure(replica, **changes, root_key=replica.root_key)
        # The agent keeps the key it fetched; the replica now signs with another key or at another time.
        for attempt in (agent.call(CANISTER, "echo", b""), agent.read_state(CANISTER, [[b"time"]])):
            with pytest.raises(CertificateError) as info:
                await attempt
            assert info.value.reason == reason


@pytest.mark.parametrize("generation", GENERATIONS)
async def test_delegated_certificates_for_the_canister_are_accepted(
    replica_server: tuple[ScriptedReplica, str], generation: str
) -> None:
    replica, url = replica_server
    # v4 call and v3 read_state delegations carry the sharded ranges, the older endpoints the flat ones.
    reconfigure(
        replica,
        newest=GENERATIONS[generation][0],
        delegated_ranges=[[OTHER_RANGE_LOW, OTHER_RANGE_HIGH], [CANISTER.bytes, CANISTER.bytes]],
    )
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        assert await agent.call(CANISTER, "echo", b"d") == b"echo:d"
        cert = await agent.read_state(CANISTER, [[b"time"]])
        assert cert.delegation is not None and cert.delegation.subnet_id.bytes == replica.subnet_id
        assert await agent.query(CANISTER, "echo", b"q") == b"echo:q"


async def test_polling_ends_at_the_ingress_expiry(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    reconfigure(replica, sync="202", polls_before_done=10**6)
    identity = Ed25519Identity.generate()
    content = call_content(
        identity.sender, CANISTER, "echo", b"", ingress_expiry_ns=time.time_ns() + 200_000_000, nonce=b"n"
    )
    async with await agent_for(url, replica, identity=identity) as agent:
        with pytest.raises(AgentTimeout, match="ingress expiry"):
            await submit_signed(agent, CANISTER, build_envelope(identity, content))


async def test_polling_ends_even_when_the_ingress_expiry_is_far_ahead(
    replica_server: tuple[ScriptedReplica, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    replica, url = replica_server
    reconfigure(replica, sync="202", polls_before_done=10**6)
    # A relayed envelope may claim any expiry; the poller stops after the IC's window (shortened for the test).
    monkeypatch.setattr(agent_module, "MAX_POLL_NS", 200_000_000)
    identity = Ed25519Identity.generate()
    content = call_content(identity.sender, CANISTER, "echo", b"", ingress_expiry_ns=2**64 - 1, nonce=b"n")
    async with await agent_for(url, replica, identity=identity) as agent:
        with pytest.raises(AgentTimeout, match="ingress expiry"):
            await submit_signed(agent, CANISTER, build_envelope(identity, content))


# -- relaying envelopes signed elsewhere ----------------------------------------------------------------


async def submit_signed(agent: Agent, canister_id: Principal, envelope_bytes: bytes) -> bytes:
    """Relay as the gateway does: the envelope parsed once, posted as its own bytes."""
    return await agent.submit_signed(canister_id, parse_envelope(envelope_bytes), envelope_bytes)


def signed_call(identity: Any, method: str = "echo", arg: bytes = b"relayed") -> bytes:
    return build_envelope(identity, call_content(identity.sender, CANISTER, method, arg, nonce=b"relay"))


async def test_submit_signed_returns_the_certified_reply(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    client = Ed25519Identity.generate()
    async with await agent_for(url, replica) as gateway:
        assert await submit_signed(gateway, CANISTER, signed_call(client)) == b"echo:relayed"
        with pytest.raises(RejectError):
            await submit_signed(gateway, CANISTER, signed_call(client, "fail"))
    (req,) = (r for r in replica.requests.values() if r.method == "echo")
    assert req.sender == client.sender.bytes  # relayed unchanged: the client is the caller


async def test_submit_signed_other_sender_cannot_be_polled(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    reconfigure(replica, sync="202")
    envelope = signed_call(Ed25519Identity.generate())
    async with await agent_for(url, replica) as gateway:
        with pytest.raises(CallPending) as info:
            await submit_signed(gateway, CANISTER, envelope)
    assert info.value.request_id == parse_envelope(envelope).request_id
    assert replica.hits[1:] == ["v4/call"]


@pytest.mark.parametrize("sender", ["anonymous", "own"])
async def test_submit_signed_polls_as_the_sender(replica_server: tuple[ScriptedReplica, str], sender: str) -> None:
    replica, url = replica_server
    reconfigure(replica, newest={"call": 2, "query": 2, "read_state": 2}, polls_before_done=1)
    own = Ed25519Identity.generate()
    signer = AnonymousIdentity() if sender == "anonymous" else own
    async with await agent_for(url, replica, identity=own) as gateway:
        assert await submit_signed(gateway, CANISTER, signed_call(signer)) == b"echo:relayed"


@pytest.mark.parametrize(
    "envelope",
    [
        b"",
        b"\xff\x00",
        cbor.encode({"content": {}}),
        build_envelope(AnonymousIdentity(), read_state_content(Principal.anonymous(), [[b"time"]])),
        build_envelope(
            AnonymousIdentity(), call_content(Principal.anonymous(), CANISTER, "echo", b"", request_type="query")
        ),
    ],
)
async def test_submit_signed_refuses_what_is_not_a_call(
    replica_server: tuple[ScriptedReplica, str], envelope: bytes
) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as gateway:
        with pytest.raises(EnvelopeError):
            await submit_signed(gateway, CANISTER, envelope)
    assert replica.hits == ["v2/status"]


async def test_submit_signed_keeps_an_envelope_to_its_canister(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    other = Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
    async with await agent_for(url, replica) as gateway:
        with pytest.raises(EnvelopeError, match="calls"):
            await submit_signed(gateway, other, signed_call(Ed25519Identity.generate()))
    assert replica.hits == ["v2/status"]


# -- queries and read_state -----------------------------------------------------------------------------


@pytest.mark.parametrize("verify", [True, False])
async def test_query(replica_server: tuple[ScriptedReplica, str], verify: bool) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica, verify_query_signatures=verify) as agent:
        assert await agent.query(CANISTER, "echo", b"q") == b"echo:q"
        with pytest.raises(RejectError) as info:
            await agent.query(CANISTER, "fail", b"")
        assert await agent.query(CANISTER, "echo", b"again") == b"echo:again"
    assert (info.value.reject_code, info.value.reject_message, info.value.error_code) == (4, "query says no", "IC0406")
    # Node keys are read once (certified /subnet), then cached.
    assert replica.hits.count("v3/read_state") == (1 if verify else 0)


async def test_query_node_signatures_are_checked(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    reconfigure(replica, corrupt_node_signature=True)
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        for method in ("echo", "fail"):
            with pytest.raises(CertificateError, match=REASON_NODE_SIGNATURE):
                await agent.query(CANISTER, method, b"")
    async with await agent_for(url, replica, verify_query_signatures=False) as agent:
        assert await agent.query(CANISTER, "echo", b"") == b"echo:"


async def test_query_from_an_unknown_node_is_refused(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        assert await agent.query(CANISTER, "echo", b"") == b"echo:"
        # The answer is signed by a node the certified subnet does not list (the cache is refreshed first).
        listed = {
            replica.subnet_id: {
                b"public_key": replica.root_key,
                b"canister_ranges": cbor.encode([[CANISTER.bytes, CANISTER.bytes]]),
                b"node": {replica.node_id: {b"public_key": replica.node.der_public_key}},
            }
        }
        replica.node = Ed25519Identity.from_seed(bytes(32))
        replica.node_id = Principal.self_authenticating(replica.node.der_public_key).bytes
        original = replica.certificate
        replica.certificate = lambda extra, **kw: original({**extra, b"subnet": listed}, **kw)  # type: ignore[method-assign]
        with pytest.raises(CertificateError, match=REASON_NODE_SIGNATURE):
            await agent.query(CANISTER, "echo", b"")


async def test_node_keys_are_read_again_when_a_signature_fails(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        assert await agent.query(CANISTER, "echo", b"") == b"echo:"
        # The subnet's node is replaced: the cached keys do not know it, the certified /subnet read next does.
        replica.node = Ed25519Identity.from_seed(bytes(32))
        replica.node_id = Principal.self_authenticating(replica.node.der_public_key).bytes
        assert await agent.query(CANISTER, "echo", b"") == b"echo:"
        assert await agent.query(CANISTER, "echo", b"") == b"echo:"
    assert replica.hits.count("v3/read_state") == 2


async def test_node_keys_expire(replica_server: tuple[ScriptedReplica, str], monkeypatch: pytest.MonkeyPatch) -> None:
    replica, url = replica_server
    monkeypatch.setattr(agent_module, "NODE_KEYS_TTL_S", 0.0)
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        for _ in range(3):
            assert await agent.query(CANISTER, "echo", b"") == b"echo:"
    assert replica.hits.count("v3/read_state") == 3


async def test_root_subnet_node_keys_need_the_canister_in_its_ranges(
    replica_server: tuple[ScriptedReplica, str],
) -> None:
    replica, url = replica_server
    other = Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        # A root-signed /subnet certificate whose ranges do not hold the canister does not vouch for its nodes.
        with pytest.raises(CertificateError) as info:
            await agent.query(other, "echo", b"")
    assert info.value.reason == REASON_CANISTER_NOT_IN_RANGE


async def test_read_state(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        cert = await agent.read_state(CANISTER, [[b"time"]])
    assert abs(cert.time_ns - time.time_ns()) < MINUTE_NS


# -- transport failures and hostile answers -------------------------------------------------------------


async def test_http_error_status_carries_the_text(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica) as agent:
        for status in (400, 403, 429, 500, 503):
            replica.hostile["query"] = (status, b"replica says: bad request")
            with pytest.raises(HttpStatusError) as info:
                await agent.query(CANISTER, "echo", b"")
            assert (info.value.status, info.value.text) == (status, "replica says: bad request")


HOSTILE_BODIES = [
    b"",
    b"\xd9\xd9\xf7",
    b"\xff",
    b"not cbor at all",
    cbor.encode([1, 2, 3]),
    cbor.encode({"status": "replied"}),
    cbor.encode({"status": "replied", "reply": {"arg": "text, not bytes"}}),
    cbor.encode({"status": "replied", "reply": [b""]}),
    cbor.encode({"status": "rejected", "reject_code": "4", "reject_message": "x"}),
    cbor.encode({"status": "rejected", "reject_code": 4, "reject_message": b"x"}),
    cbor.encode({"status": "non_replicated_rejection", "reject_code": 1}),
    cbor.encode({"status": 7}),
    cbor.encode({"status": "replied", "certificate": "text"}),
    cbor.encode({"status": "replied", "certificate": b"\x00"}),
    cbor.encode({"status": "replied", "certificate": cbor.encode({"tree": [0], "signature": b""})}),
    cbor.encode({"certificate": cbor.encode({"tree": [9], "signature": b""})}),
    cbor.encode({"root_key": 5}),
    cbor.encode({"root_key": b"0\x00"}),
    cbor.encode({"reject_code": 4}),
    b"\x9f" * 300,
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
async def test_hostile_answers_raise_only_icws_errors(replica_server: tuple[ScriptedReplica, str], body: bytes) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        for kind in ("status", "call", "query", "read_state"):
            replica.hostile[kind] = (200, body)
        attempts = [
            agent.fetch_root_key(),
            agent.call(CANISTER, "echo", b""),
            agent.query(CANISTER, "echo", b""),
            agent.read_state(CANISTER, [[b"time"]]),
        ]
        for attempt in attempts:
            with contextlib.suppress(IcwsError):
                await attempt


async def test_node_signature_entries_are_validated(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica, verify_query_signatures=True) as agent:
        fresh = {"timestamp": time.time_ns(), "signature": b"s", "identity": replica.node_id}
        for signatures in ([], None, [b"x"], [{"timestamp": "1", "signature": b"", "identity": b""}], [fresh] * 101):
            replica.hostile["query"] = (
                200,
                cbor.encode({"status": "replied", "reply": {"arg": b""}, "signatures": signatures}),
            )
            with pytest.raises(CertificateError, match=REASON_NODE_SIGNATURE):
                await agent.query(CANISTER, "echo", b"")
        stale = {"timestamp": time.time_ns() - 10 * MINUTE_NS, "signature": b"s", "identity": replica.node_id}
        replica.hostile["query"] = (
            200,
            cbor.encode({"status": "replied", "reply": {"arg": b""}, "signatures": [stale]}),
        )
        with pytest.raises(CertificateError, match="not recent"):
            await agent.query(CANISTER, "echo", b"")
        # A negative reject code cannot be hashed as a nat: the answer is malformed before any signature check.
        negative = {"status": "rejected", "reject_code": -1, "reject_message": "x", "signatures": [fresh]}
        replica.hostile["query"] = (200, cbor.encode(negative))
        with pytest.raises(AgentError, match="malformed query rejection"):
            await agent.query(CANISTER, "echo", b"")


async def test_oversized_answer(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    replica.hostile["query"] = (200, b"\x00" * 1001)
    async with await agent_for(url, replica, max_response_bytes=1000) as agent:
        with pytest.raises(AgentError, match="the answer of 1001 bytes is over the limit of 1000 bytes"):
            await agent.query(CANISTER, "echo", b"")
        replica.hostile["query"] = (200, b"\x00" * 1000)
        with pytest.raises(AgentError, match="malformed CBOR"):  # at the limit: read, then judged as CBOR
            await agent.query(CANISTER, "echo", b"")


async def test_timeout(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    async with await agent_for(url, replica, timeout_s=5.0) as agent:
        replica.hang = asyncio.Event()
        with pytest.raises(AgentTimeout):
            await agent.query(CANISTER, "echo", b"", timeout_s=0.1)
        replica.hang.set()
        replica.hang = None
        assert await agent.query(CANISTER, "echo", b"") == b"echo:"


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Agent(f"http://127.0.0.1:{port}", root_key=MAINNET_ROOT_KEY) as agent:
        with pytest.raises(TransportError):
            await agent.status()
        with pytest.raises(TransportError):
            await agent.call(CANISTER, "echo", b"")


async def test_agent_reopens_after_close(replica_server: tuple[ScriptedReplica, str]) -> None:
    replica, url = replica_server
    agent = await agent_for(url, replica)
    await agent.close()
    await agent.close()
    assert await agent.query(CANISTER, "echo", b"") == b"echo:"
    await agent.close()


# -- end to end, against the devnet ---------------------------------------------------------------------

TEXT = [candid.parse_type("text")]


@pytest.fixture(
    params=[(delegated, version) for delegated in (False, True) for version in (4, 3, 2)],
    ids=lambda p: f"{'subnet-delegation' if p[0] else 'root-signed'}-api-v{p[1]}",
)
async def devnet(request: pytest.FixtureRequest) -> AsyncIterator[Devnet]:
    """The devnet with a root-signed or delegated subnet, serving every endpoint version or only the older ones."""
    delegated, max_api_version = request.param
    async with Devnet(
        canisters={"echo": Echo}, subnet_delegation=delegated, round_ms=10, max_api_version=max_api_version
    ) as dn:
        yield dn


def expected_versions(devnet: Devnet, *, sync_call: bool = True) -> dict[str, int]:
    """The endpoint versions an agent settles on against ``devnet`` (v3 query and read_state came with v4 call)."""
    reads = 3 if devnet.max_api_version == 4 else 2
    return {"call": devnet.max_api_version if sync_call else 2, "query": reads, "read_state": reads}


async def test_devnet_round_trip(devnet: Devnet) -> None:
    echo = devnet.canister_ids["echo"]
    identity = Ed25519Identity.generate()
    async with Agent(devnet.url, identity, verify_query_signatures=True) as agent:
        assert await agent.fetch_root_key() == devnet.root_key_der
        assert candid.decode(await agent.call(echo, "shout", candid.encode(TEXT, ["hi"])), TEXT) == ["HI"]
        whoami = await agent.call(echo, "whoami", candid.encode([], []))
        assert candid.decode(whoami, [candid.parse_type("principal")]) == [identity.sender]
        assert candid.decode(await agent.query(echo, "echo", candid.encode(TEXT, ["q"])), TEXT) == ["q"]
        cert = await agent.read_state(echo, [[b"time"]])
        assert (cert.delegation is not None) == (devnet.subnet_id != Principal.self_authenticating(devnet.root_key_der))
        with pytest.raises(RejectError) as info:
            await agent.call(echo, "no_such_method", candid.encode([], []))
        # The current IC answers "method not found" with CanisterError (5) and IC0536.
        assert (info.value.reject_code, info.value.error_code) == (5, "IC0536")
        with pytest.raises(RejectError) as info:
            await agent.query(echo, "no_such_method", candid.encode([], []))
        assert (info.value.reject_code, info.value.error_code) == (5, "IC0536")
        assert {kind: agent.endpoint_version(kind) for kind in ("call", "query", "read_state")} == expected_versions(
            devnet
        )


async def test_devnet_v2_call_and_polling(devnet: Devnet) -> None:
    echo = devnet.canister_ids["echo"]
    async with Agent(devnet.url, Ed25519Identity.generate(), root_key=devnet.root_key_der, sync_call=False) as agent:
        replies = await asyncio.gather(*(agent.call(echo, "shout", candid.encode(TEXT, [f"m{i}"])) for i in range(20)))
        assert agent.endpoint_version("read_state") == expected_versions(devnet)["read_state"]
    assert [candid.decode(r, TEXT)[0] for r in replies] == [f"M{i}" for i in range(20)]


async def test_devnet_submit_signed(devnet: Devnet) -> None:
    echo = devnet.canister_ids["echo"]
    client = Ed25519Identity.generate()
    envelope = build_envelope(client, call_content(client.sender, echo, "whoami", candid.encode([], []), nonce=b"1"))
    async with Agent(devnet.url, Ed25519Identity.generate(), root_key=devnet.root_key_der) as gateway:
        if devnet.max_api_version == 2:
            # No synchronous call: the outcome must be polled, and only the client may read its status.
            with pytest.raises(CallPending) as pending:
                await submit_signed(gateway, echo, envelope)
            assert pending.value.request_id == parse_envelope(envelope).request_id
        else:
            reply = await submit_signed(gateway, echo, envelope)
            assert candid.decode(reply, [candid.parse_type("principal")]) == [client.sender]
        # The devnet refuses a replay of the same request while it knows it; the agent surfaces its text.
        tampered = cbor.decode(envelope)
        tampered["sender_sig"] = bytes(64)
        with pytest.raises(HttpStatusError) as info:
            await submit_signed(gateway, echo, cbor.encode(tampered))
        assert info.value.status == 400


async def test_devnet_delegation_identity(devnet: Devnet) -> None:
    echo = devnet.canister_ids["echo"]
    root = Ed25519Identity.generate()
    session = Ed25519Identity.generate()
    chain = DelegationChain.create(root, session.der_public_key, time.time_ns() + 10 * MINUTE_NS, targets=[echo])
    identity = DelegationIdentity(session, chain)
    for sync_call in (True, False):  # v2 polls read_state, whose envelope carries the targeted delegation too
        async with Agent(devnet.url, identity, root_key=devnet.root_key_der, sync_call=sync_call) as agent:
            whoami = await agent.call(echo, "whoami", candid.encode([], []))
            assert candid.decode(whoami, [candid.parse_type("principal")]) == [root.sender]
            assert candid.decode(await agent.query(echo, "echo", candid.encode(TEXT, ["d"])), TEXT) == ["d"]


async def test_devnet_read_only_delegation(devnet: Devnet) -> None:
    echo = devnet.canister_ids["echo"]
    root, session = Ed25519Identity.generate(), Ed25519Identity.generate()
    chain = DelegationChain.create(root, session.der_public_key, time.time_ns() + 10 * MINUTE_NS, permissions="queries")
    async with Agent(devnet.url, DelegationIdentity(session, chain), root_key=devnet.root_key_der) as agent:
        assert candid.decode(await agent.query(echo, "echo", candid.encode(TEXT, ["r"])), TEXT) == ["r"]
        await agent.read_state(echo, [[b"time"]])
        # The replica refuses a call signed through a read-only delegation, before it reaches the canister.
        with pytest.raises(HttpStatusError) as info:
            await agent.call(echo, "whoami", candid.encode([], []))
    assert info.value.status == 400 and "permits only queries" in info.value.text
