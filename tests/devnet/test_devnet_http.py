"""The devnet over real HTTP: requests built and signed with icws_fast.ic, answers checked like an agent would.

Every certificate is verified against the devnet's root key (BLS, delegation, canister ranges, time);
query answers are checked against the node key the devnet certifies under ``/subnet``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from icws_fast.devnet import Devnet
from icws_fast.ic import candid, cbor, hashtree
from icws_fast.ic.certificate import Certificate
from icws_fast.ic.envelope import build_envelope, call_content, read_state_content
from icws_fast.ic.identity import (
    AnonymousIdentity,
    DelegationChain,
    DelegationIdentity,
    Ed25519Identity,
    Identity,
    P256Identity,
    Secp256k1Identity,
    verify_signature,
)
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import RESPONSE_DOMAIN, hash_of_map, request_id
from tests.devnet.devnet_canisters import Counter, Ticker

CANISTERS = {"counter": Counter, "ticker": Ticker}
MINUTE_NS = 60 * 1_000_000_000


@pytest.fixture(params=[False, True], ids=["root-signed", "subnet-delegation"])
def devnet_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"subnet_delegation": request.param}


@pytest.fixture
def devnet_canisters() -> dict[str, type[Any]]:
    return CANISTERS


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Client:
    """Builds signed requests for one identity and posts them to the devnet."""

    def __init__(self, dn: Devnet, http: aiohttp.ClientSession, identity: Identity | None = None) -> None:
        self.dn = dn
        self.http = http
        self.identity = identity or Ed25519Identity.generate()

    async def post(self, path: str, body: bytes, content_type: str = "application/cbor") -> tuple[int, bytes]:
        async with self.http.post(self.dn.url + path, data=body, headers={"Content-Type": content_type}) as resp:
            return resp.status, await resp.read()

    def call_envelope(self, canister: Principal, method: str, arg: bytes, **kw: Any) -> tuple[bytes, bytes]:
        kw.setdefault("nonce", secrets.token_bytes(8))
        content = call_content(self.identity.sender, canister, method, arg, **kw)
        return build_envelope(self.identity, content), request_id(content)

    async def call(self, canister: Principal, method: str, arg: bytes, version: str = "v3") -> tuple[int, Any, bytes]:
        body, rid = self.call_envelope(canister, method, arg)
        status, data = await self.post(f"/api/{version}/canister/{canister}/call", body)
        return status, (cbor.decode(data) if status == 200 else data), rid

    async def query(self, canister: Principal, method: str, arg: bytes, version: str = "v2") -> tuple[int, Any, bytes]:
        content = call_content(self.identity.sender, canister, method, arg, request_type="query")
        status, data = await self.post(
            f"/api/{version}/canister/{canister}/query", build_envelope(self.identity, content)
        )
        return status, (cbor.decode(data) if status == 200 else data), request_id(content)

    async def read_state(self, effective: Principal, paths: list[list[bytes]], version: str = "v2") -> tuple[int, Any]:
        content = read_state_content(self.identity.sender, paths)
        status, data = await self.post(
            f"/api/{version}/canister/{effective}/read_state", build_envelope(self.identity, content)
        )
        return status, (cbor.decode(data) if status == 200 else data)

    def certificate(self, data: bytes, canister: Principal) -> Certificate:
        cert = Certificate.from_cbor(data)
        cert.verify(self.dn.root_key_der, canister)
        return cert

    async def update(self, canister: Principal, method: str, arg: bytes = b"DIDL\x00\x00") -> bytes:
        """A v3 call whose certified reply is returned (asserting it replied)."""
        status, answer, rid = await self.call(canister, method, arg)
        assert status == 200, answer
        assert answer["status"] == "replied", answer
        cert = self.certificate(answer["certificate"], canister)
        assert cert.lookup_value([b"request_status", rid, b"status"]) == b"replied"
        return cert.lookup_value([b"request_status", rid, b"reply"])


def _nat(data: bytes) -> int:
    value, shift = 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
    return value


# -- status and discovery ---------------------------------------------------------------------------------


async def test_status_serves_the_root_key(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    async with http.get(devnet.url + "/api/v2/status") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/cbor"
        status = cbor.decode(await resp.read())
    assert status["root_key"] == devnet.root_key_der
    assert len(status["root_key"]) == 133
    assert status["replica_health_status"] == "healthy"


async def test_canisters_endpoint_lists_deterministic_ids(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    async with http.get(devnet.url + "/_devnet/canisters") as resp:
        info = await resp.json()
    assert info == devnet.info()
    assert info["url"] == devnet.url
    # A local replica's scheme: 8-byte big-endian index, then 0x01 0x01; the first canister has index 0.
    assert info["canisters"] == {"counter": "rwlgt-iiaaa-aaaaa-aaaaa-cai", "ticker": "rrkah-fqaaa-aaaaa-aaaaq-cai"}
    assert devnet.canister_ids["ticker"].bytes == bytes.fromhex("00000000000000010101")


# -- update calls --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v3", "v4"])
async def test_synchronous_call_returns_a_certified_reply(
    devnet: Devnet, http: aiohttp.ClientSession, version: str
) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    status, answer, rid = await client.call(counter, "increment", candid.encode("()", []), version)
    assert status == 200 and answer["status"] == "replied"
    cert = client.certificate(answer["certificate"], counter)
    assert candid.decode(cert.lookup_value([b"request_status", rid, b"reply"]), "(nat64)") == [1]
    assert abs(cert.time_ns - time.time_ns()) < MINUTE_NS
    if cert.delegation is not None:
        # v3 carries the flat canister ranges, v4 the sharded /canister_ranges/<subnet>/<shard> layout.
        sharded = cert.delegation.certificate.lookup([b"canister_ranges", devnet.subnet_id.bytes])
        flat = cert.delegation.certificate.lookup([b"subnet", devnet.subnet_id.bytes, b"canister_ranges"])
        assert (sharded.status, flat.status) == (("Error", "Absent") if version == "v4" else ("Absent", "Found"))


async def test_asynchronous_call_then_read_state_polling(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    body, rid = client.call_envelope(counter, "increment", candid.encode("()", []))
    status, data = await client.post(f"/api/v2/canister/{counter}/call", body)
    assert (status, data) == (202, b"")
    for _ in range(200):
        status, answer = await client.read_state(counter, [[b"request_status", rid]])
        assert status == 200
        cert = client.certificate(answer["certificate"], counter)
        found = cert.lookup([b"request_status", rid, b"status"])
        if found.status == "Found":
            break
        assert found.status == "Absent"  # not yet inducted: provably absent, not pruned
        await asyncio.sleep(0.005)
    assert cert.lookup_value([b"request_status", rid, b"status"]) == b"replied"
    assert candid.decode(cert.lookup_value([b"request_status", rid, b"reply"]), "(nat64)") == [1]
    # The witness reveals nothing else: /time and this request only.
    assert cert.lookup([b"canister", counter.bytes, b"certified_data"]).status == "Unknown"


def _identities() -> list[Identity]:
    session = Ed25519Identity.generate()
    root = Secp256k1Identity.generate()
    chain = DelegationChain.create(root, session.der_public_key, time.time_ns() + 10 * MINUTE_NS)
    return [
        Ed25519Identity.generate(),
        Secp256k1Identity.generate(),
        P256Identity.generate(),
        DelegationIdentity(session, chain),
        AnonymousIdentity(),
    ]


@pytest.mark.parametrize("identity", _identities(), ids=["ed25519", "secp256k1", "p256", "delegation", "anonymous"])
async def test_every_sender_kind_is_authenticated(
    devnet: Devnet, http: aiohttp.ClientSession, identity: Identity
) -> None:
    client = Client(devnet, http, identity)
    counter = devnet.canister_ids["counter"]
    info = candid.decode(await client.update(counter, "info"), "(record { caller : principal; self : principal })")
    assert info[0]["caller"] == identity.sender
    assert info[0]["self"] == counter
    status, answer, _ = await client.query(counter, "whoami", candid.encode("()", []))
    assert status == 200 and candid.decode(answer["reply"]["arg"], "(principal)") == [identity.sender]


async def test_delegation_targets_are_enforced(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    session, root = Ed25519Identity.generate(), Ed25519Identity.generate()
    expiry = time.time_ns() + 10 * MINUTE_NS
    allowed = DelegationIdentity(
        session, DelegationChain.create(root, session.der_public_key, expiry, [devnet.canister_ids["counter"]])
    )
    ticker_only = DelegationIdentity(
        session, DelegationChain.create(root, session.der_public_key, expiry, [devnet.canister_ids["ticker"]])
    )
    counter = devnet.canister_ids["counter"]
    assert candid.decode(await Client(devnet, http, allowed).update(counter, "increment"), "(nat64)") == [1]
    status, text, _ = await Client(devnet, http, ticker_only).call(counter, "increment", candid.encode("()", []))
    assert status == 400 and b"does not allow canister" in text


async def test_calls_of_one_canister_run_one_at_a_time(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    replies = await asyncio.gather(*(client.update(counter, "increment") for _ in range(40)))
    assert sorted(candid.decode(r, "(nat64)")[0] for r in replies) == list(range(1, 41))


async def test_multiple_results_and_candid_arguments(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    reply = await client.update(devnet.canister_ids["counter"], "swap", candid.encode("(nat, text)", [7, "seven"]))
    assert candid.decode(reply, "(text, nat)") == ["seven", 7]


# -- rejects ----------------------------------------------------------------------------------------------------


async def _certified_reject(client: Client, canister: Principal, method: str, arg: bytes) -> tuple[int, str, str]:
    status, answer, rid = await client.call(canister, method, arg)
    assert status == 200 and answer["status"] == "replied", answer
    cert = client.certificate(answer["certificate"], canister)
    assert cert.lookup_value([b"request_status", rid, b"status"]) == b"rejected"
    return (
        _nat(cert.lookup_value([b"request_status", rid, b"reject_code"])),
        cert.lookup_value([b"request_status", rid, b"reject_message"]).decode(),
        cert.lookup_value([b"request_status", rid, b"error_code"]).decode(),
    )


async def test_trap_is_a_certified_canister_error(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    code, message, error_code = await _certified_reject(client, counter, "fail", candid.encode("(text)", ["no way"]))
    assert (code, error_code) == (5, "IC0503")
    assert message.startswith(f"Error from Canister {counter}: Canister called `ic0.trap` with message: 'no way'")
    code, message, error_code = await _certified_reject(client, counter, "crash", candid.encode("()", []))
    assert (code, error_code) == (5, "IC0502") and "ZeroDivisionError" in message
    # Candid that does not decode at the method's argument types traps in the canister, as the Rust CDK does.
    code, message, error_code = await _certified_reject(client, counter, "swap", candid.encode("(text)", ["x"]))
    assert (code, error_code) == (5, "IC0503") and "failed to decode call arguments" in message
    code, message, error_code = await _certified_reject(client, counter, "bad_result", candid.encode("()", []))
    assert (code, error_code) == (5, "IC0503") and "failed to encode the reply" in message
    code, message, error_code = await _certified_reject(
        client, counter, "set_data", candid.encode("(blob)", [b"x" * 33])
    )
    assert (code, error_code) == (5, "IC0503") and "at most 32" in message


@pytest.mark.parametrize("version", ["v2", "v3", "v4"])
async def test_unknown_canister_and_method_are_rejected_before_execution(
    devnet: Devnet, http: aiohttp.ClientSession, version: str
) -> None:
    client = Client(devnet, http)
    missing = Principal(bytes.fromhex("00000000000000630101"))
    status, answer, _ = await client.call(missing, "increment", candid.encode("()", []), version)
    assert status == 200
    assert (answer["reject_code"], answer["error_code"]) == (3, "IC0301")
    assert answer["reject_message"] == f"Canister {missing} not found"
    counter = devnet.canister_ids["counter"]
    status, answer, _ = await client.call(counter, "nope", candid.encode("()", []), version)
    assert (answer["reject_code"], answer["error_code"]) == (5, "IC0536")
    assert answer["reject_message"].startswith(f"Error from Canister {counter}: Canister has no update method 'nope'.")
    # v3/v4 tag the answer; v2 answers the bare reject map, as the replica does.
    assert answer.get("status") == (None if version == "v2" else "non_replicated_rejection")


# -- queries ------------------------------------------------------------------------------------------------------


def _node_keys(cert: Certificate, subnet_id: Principal) -> dict[bytes, bytes]:
    nodes = hashtree.lookup_subtree(cert.tree, [b"subnet", subnet_id.bytes, b"node"])
    assert nodes.status == "Found"
    keys = {}
    for node in hashtree.flatten_forks(nodes.value):
        keys[node[1]] = hashtree.lookup_path(node[2], [b"public_key"]).value
    return keys


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_query_answers_are_signed_by_the_certified_node_key(
    devnet: Devnet, http: aiohttp.ClientSession, version: str
) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    await client.update(counter, "increment")
    _, answer = await client.read_state(counter, [[b"subnet"]], version)
    node_keys = _node_keys(client.certificate(answer["certificate"], counter), devnet.subnet_id)

    status, replied, rid = await client.query(counter, "get", candid.encode("()", []), version)
    assert status == 200 and replied["status"] == "replied"
    assert candid.decode(replied["reply"]["arg"], "(nat64)") == [1]
    status, rejected, rid2 = await client.query(counter, "nope", candid.encode("()", []), version)
    assert rejected["status"] == "rejected" and rejected["error_code"] == "IC0536"
    assert rejected["reject_message"].startswith(f"Error from Canister {counter}: Canister has no query method 'nope'.")

    for answer_, rid_ in ((replied, rid), (rejected, rid2)):
        (signature,) = answer_["signatures"]
        fields = {k: v for k, v in answer_.items() if k != "signatures"}
        signed = RESPONSE_DOMAIN + hash_of_map({**fields, "timestamp": signature["timestamp"], "request_id": rid_})
        assert verify_signature(node_keys[signature["identity"]], signed, signature["signature"])
        assert not verify_signature(node_keys[signature["identity"]], signed + b"x", signature["signature"])


async def test_data_certificate_certifies_the_canister_data(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    await client.update(counter, "increment")
    _, answer, _ = await client.query(counter, "certificate", candid.encode("()", []))
    (cert_bytes,) = candid.decode(answer["reply"]["arg"], "(opt blob)")
    cert = client.certificate(cert_bytes, counter)
    assert cert.lookup_value([b"canister", counter.bytes, b"certified_data"]) == (1).to_bytes(8, "big")
    # Only in queries, as ic0.data_certificate_present says.
    assert candid.decode(await client.update(counter, "certificate_in_update"), "(opt blob)") == [None]
    _, answer, _ = await client.query(counter, "set_data_in_query", candid.encode("()", []))
    assert answer["status"] == "rejected" and answer["error_code"] == "IC0503"


async def test_update_method_run_as_query_keeps_no_state(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    _, answer, _ = await client.query(counter, "bump", candid.encode("()", []))
    assert answer["status"] == "replied" and candid.decode(answer["reply"]["arg"], "(nat64)") == [1]
    # ic0.certified_data_set is not available in query mode, so this update traps when run as a query.
    _, answer, _ = await client.query(counter, "increment", candid.encode("()", []))
    assert answer["status"] == "rejected" and answer["error_code"] == "IC0503"
    _, answer, _ = await client.query(counter, "get", candid.encode("()", []))
    assert candid.decode(answer["reply"]["arg"], "(nat64)") == [0]


# -- authentication and hostile input ------------------------------------------------------------------------------


async def test_bad_signature_is_refused(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    body, _ = client.call_envelope(counter, "increment", candid.encode("()", []))
    envelope = cbor.decode(body)
    envelope["sender_sig"] = bytes([envelope["sender_sig"][0] ^ 1]) + envelope["sender_sig"][1:]
    status, text = await client.post(f"/api/v3/canister/{counter}/call", cbor.encode(envelope))
    assert status == 400 and text.startswith(b"Invalid signature")
    # Someone else's key for this sender.
    envelope["sender_pubkey"] = Ed25519Identity.generate().der_public_key
    status, text = await client.post(f"/api/v2/canister/{counter}/call", cbor.encode(envelope))
    assert status == 400
    assert candid.decode(await client.update(counter, "get"), "(nat64)") == [0]  # nothing ran


@pytest.mark.parametrize("offset_ns", [-MINUTE_NS, 6 * MINUTE_NS], ids=["expired", "too-far-ahead"])
async def test_ingress_expiry_window(devnet: Devnet, http: aiohttp.ClientSession, offset_ns: int) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    body, _ = client.call_envelope(
        counter, "increment", candid.encode("()", []), ingress_expiry_ns=time.time_ns() + offset_ns
    )
    query_content = call_content(
        client.identity.sender,
        counter,
        "get",
        b"DIDL\x00\x00",
        request_type="query",
        ingress_expiry_ns=time.time_ns() + offset_ns,
    )
    query_body = build_envelope(client.identity, query_content)
    for path, request in (
        ("v2/canister/{}/call", body),
        ("v3/canister/{}/call", body),
        ("v2/canister/{}/query", query_body),
    ):
        status, text = await client.post("/api/" + path.format(counter), request)
        assert status == 400
        assert text.startswith(b"Invalid request expiry: Specified ingress_expiry not within expected range: ")
    content = read_state_content(client.identity.sender, [[b"time"]], ingress_expiry_ns=time.time_ns() + offset_ns)
    status, _ = await client.post(f"/api/v2/canister/{counter}/read_state", build_envelope(client.identity, content))
    assert status == 400


async def test_wrong_effective_canister_id(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter, ticker = devnet.canister_ids["counter"], devnet.canister_ids["ticker"]
    body, _ = client.call_envelope(counter, "increment", candid.encode("()", []))
    status, text = await client.post(f"/api/v3/canister/{ticker}/call", body)
    assert status == 400
    assert text.decode() == f"Specified CanisterId {counter} does not match effective canister id in URL {ticker}"
    status, text = await client.post("/api/v3/canister/not-a-principal/call", body)
    assert status == 400


async def test_replayed_call_runs_once(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    body, rid = client.call_envelope(counter, "increment", candid.encode("()", []))
    answers = []
    for version in ("v3", "v3", "v2", "v4"):
        status, data = await client.post(f"/api/{version}/canister/{counter}/call", body)
        answers.append((status, data))
    assert [status for status, _ in answers] == [200, 200, 202, 200]
    for _, data in (answers[0], answers[1], answers[3]):
        cert = client.certificate(cbor.decode(data)["certificate"], counter)
        assert candid.decode(cert.lookup_value([b"request_status", rid, b"reply"]), "(nat64)") == [1]
    assert candid.decode(await client.update(counter, "get"), "(nat64)") == [1]


async def test_request_status_is_private_to_its_sender(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    alice, mallory = Client(devnet, http), Client(devnet, http)
    counter, ticker = devnet.canister_ids["counter"], devnet.canister_ids["ticker"]
    status, _, rid = await alice.call(counter, "increment", candid.encode("()", []))
    assert status == 200
    status, text = await mallory.read_state(counter, [[b"request_status", rid]])
    assert (status, text) == (403, b"The user tries to access Request ID not signed by the caller.")
    # The replica routes read_state by the URL but does not tie request ids to it.
    status, answer = await alice.read_state(ticker, [[b"request_status", rid, b"status"]])
    assert status == 200
    assert Certificate.from_cbor(answer["certificate"]).lookup_value([b"request_status", rid, b"status"]) == b"replied"
    status, text = await alice.read_state(counter, [[b"request_status", rid], [b"request_status", b"\x00" * 32]])
    assert status == 400 and text.startswith(b"More than one non-unique request ID exists in request_status paths")
    status, text = await alice.read_state(counter, [[b"request_status", b"short"]])
    assert status == 400 and b"not of 32 bytes" in text


async def test_request_status_respects_delegation_targets(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    root = Ed25519Identity.generate()
    counter, ticker = devnet.canister_ids["counter"], devnet.canister_ids["ticker"]
    expiry = time.time_ns() + 10 * MINUTE_NS

    def session_for(target: Principal) -> DelegationIdentity:
        session = Ed25519Identity.generate()
        return DelegationIdentity(session, DelegationChain.create(root, session.der_public_key, expiry, [target]))

    caller = Client(devnet, http, session_for(counter))
    status, _, rid = await caller.call(counter, "increment", candid.encode("()", []))
    assert status == 200
    status, text = await Client(devnet, http, session_for(ticker)).read_state(ticker, [[b"request_status", rid]])
    assert status == 403 and text.endswith(b"not belonging to sender delegation targets.")
    status, _ = await Client(devnet, http, root).read_state(ticker, [[b"request_status", rid]])
    assert status == 200


async def test_read_state_paths_are_checked(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter, ticker = devnet.canister_ids["counter"], devnet.canister_ids["ticker"]
    status, text = await client.read_state(counter, [[b"secrets"]])
    assert (status, text) == (404, b"Invalid path requested.")
    status, text = await client.read_state(counter, [[b"canister", ticker.bytes, b"module_hash"]])
    assert status == 400 and b"does not match requested principal id" in text
    status, answer = await client.read_state(counter, [[b"canister", counter.bytes, b"module_hash"]], "v3")
    assert status == 200
    cert = client.certificate(answer["certificate"], counter)
    module_hash = hashlib.sha256(f"{Counter.__module__}.{Counter.__qualname__}".encode()).digest()
    assert cert.lookup_value([b"canister", counter.bytes, b"module_hash"]) == module_hash
    status, answer = await client.read_state(counter, [[b"canister", counter.bytes, b"controllers"]])
    cert = client.certificate(answer["certificate"], counter)
    assert cbor.decode(cert.lookup_value([b"canister", counter.bytes, b"controllers"])) == []
    path = [b"canister", counter.bytes, b"metadata", b"candid:service"]
    status, answer = await client.read_state(counter, [path])
    did = candid.parse_did(client.certificate(answer["certificate"], counter).lookup_value(path).decode())
    assert "whoami : () -> (principal) query" in str(did.service)
    # Certified data is read through data certificates, not read_state.
    status, _ = await client.read_state(counter, [[b"canister", counter.bytes, b"certified_data"]])
    assert status == 404


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_subnet_read_state(devnet: Devnet, http: aiohttp.ClientSession, version: str) -> None:
    client = Client(devnet, http)
    subnet = devnet.subnet_id
    paths = [[b"subnet", subnet.bytes], [b"canister_ranges", subnet.bytes]]
    content = read_state_content(client.identity.sender, paths)
    status, data = await client.post(
        f"/api/{version}/subnet/{subnet}/read_state", build_envelope(client.identity, content)
    )
    assert status == 200
    cert = Certificate.from_cbor(cbor.decode(data)["certificate"])
    cert.verify(devnet.root_key_der, subnet_id=subnet)
    ranges = cbor.decode(cert.lookup_value([b"subnet", subnet.bytes, b"canister_ranges"]))
    assert ranges == [[bytes.fromhex("00000000000000000101"), bytes.fromhex("00000000000fffff0101")]]
    public_key = cert.lookup_value([b"subnet", subnet.bytes, b"public_key"])
    assert Principal.self_authenticating(public_key) == subnet
    for bad in ([b"request_status", b"\x00" * 32], [b"canister", subnet.bytes, b"module_hash"]):
        content = read_state_content(client.identity.sender, [bad])
        status, text = await client.post(
            f"/api/{version}/subnet/{subnet}/read_state", build_envelope(client.identity, content)
        )
        assert (status, text) == (404, b"Invalid path requested.")


async def test_v3_read_state_hides_the_flat_ranges_of_a_delegated_subnet(
    devnet: Devnet, http: aiohttp.ClientSession
) -> None:
    client = Client(devnet, http)
    counter, subnet = devnet.canister_ids["counter"], devnet.subnet_id
    ranges_path = [b"subnet", subnet.bytes, b"canister_ranges"]
    status, answer = await client.read_state(counter, [[b"subnet"]], "v3")
    assert status == 200
    cert = client.certificate(answer["certificate"], counter)
    assert cert.lookup(ranges_path).status == ("Unknown" if cert.delegation is not None else "Found")
    assert cert.lookup([b"subnet", subnet.bytes, b"public_key"]).status == "Found"
    status, _ = await client.read_state(counter, [ranges_path], "v3")
    assert status == (404 if cert.delegation is not None else 200)
    status, _ = await client.read_state(counter, [ranges_path], "v2")
    assert status == 200


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff\xff", b"not cbor at all", cbor.encode([1, 2, 3]), cbor.encode({"content": {}}), b"\x9f" * 10_000],
    ids=["empty", "garbage", "text", "array", "empty-content", "deep-nesting"],
)
async def test_malformed_bodies_get_400_and_the_server_stays_up(
    devnet: Devnet, http: aiohttp.ClientSession, body: bytes
) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    for endpoint in ("v2/canister/{}/call", "v3/canister/{}/call", "v3/canister/{}/query", "v2/canister/{}/read_state"):
        status, text = await client.post("/api/" + endpoint.format(counter), body)
        assert status == 400, (endpoint, text)
        assert text.startswith(b"Failed to deserialize cbor request: ")
    assert candid.decode(await client.update(counter, "increment"), "(nat64)") == [1]


async def test_transport_level_refusals(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    body, _ = client.call_envelope(counter, "increment", candid.encode("()", []))
    status, text = await client.post(f"/api/v3/canister/{counter}/call", body, content_type="text/plain")
    assert (status, text) == (400, b"Unexpected content-type, expected application/cbor.")
    big, _ = client.call_envelope(counter, "increment", b"DIDL" + b"\x00" * (3 * 1024 * 1024))
    status, text = await client.post(f"/api/v3/canister/{counter}/call", big)
    assert status == 413 and b"is too large" in text
    status, _ = await client.post(f"/api/v3/canister/{counter}/call", b"\x00" * (6 * 1024 * 1024))
    assert status == 413
    status, _ = await client.post(f"/api/v9/canister/{counter}/call", body)
    assert status == 404
    async with http.get(f"{devnet.url}/api/v3/canister/{counter}/call") as resp:
        assert resp.status == 405


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        b"GARBAGE\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ],
    ids=["tls-hello", "garbage", "bad-length"],
)
async def test_non_http_bytes_do_not_hurt_the_server(devnet: Devnet, http: aiohttp.ClientSession, raw: bytes) -> None:
    host, port = devnet.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer == b"" or answer.split(b" ", 2)[1] == b"400"
    client = Client(devnet, http)
    assert candid.decode(await client.update(devnet.canister_ids["counter"], "increment"), "(nat64)") == [1]


SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


async def test_secp256k1_high_s_signature_is_accepted(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    identity = Secp256k1Identity.generate()
    client = Client(devnet, http, identity)
    counter = devnet.canister_ids["counter"]
    content = call_content(identity.sender, counter, "increment", candid.encode("()", []), nonce=b"high-s")
    envelope = cbor.decode(build_envelope(identity, content))
    r, s = envelope["sender_sig"][:32], int.from_bytes(envelope["sender_sig"][32:], "big")
    envelope["sender_sig"] = r + (SECP256K1_ORDER - s).to_bytes(32, "big")  # the same signature's high-S twin
    status, data = await client.post(f"/api/v3/canister/{counter}/call", cbor.encode(envelope))
    assert status == 200, data


def _mutations(valid: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Corruptions of a valid envelope: flipped bytes, truncations, and swapped CBOR values."""
    decoded = cbor.decode(valid)
    odd_values: list[Any] = [None, 0, -1, 2**64, "x" * 100, b"", b"\x00" * 40, [], {}, [[b"time"]] * 3, 1.5, True]
    bodies: list[bytes] = []
    for _ in range(count):
        choice = rng.randrange(3)
        if choice == 0:
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            bodies.append(bytes(data))
        elif choice == 1:
            bodies.append(valid[: rng.randrange(len(valid))])
        else:
            envelope = {**decoded, "content": dict(decoded["content"])}
            target = envelope["content"] if rng.random() < 0.7 else envelope
            target[rng.choice(sorted(target))] = rng.choice(odd_values)
            bodies.append(cbor.encode(envelope))
    return bodies


async def test_corrupted_envelopes_never_cause_a_server_error(devnet: Devnet, http: aiohttp.ClientSession) -> None:
    rng = random.Random(1234)
    client = Client(devnet, http)
    counter = devnet.canister_ids["counter"]
    call, _ = client.call_envelope(counter, "swap", candid.encode("(nat, text)", [1, "x"]))
    query = build_envelope(
        client.identity, call_content(client.identity.sender, counter, "get", b"DIDL\x00\x00", request_type="query")
    )
    read = build_envelope(client.identity, read_state_content(client.identity.sender, [[b"time"], [b"subnet"]]))
    cases = [
        (f"/api/v3/canister/{counter}/call", call),
        (f"/api/v2/canister/{counter}/query", query),
        (f"/api/v3/canister/{counter}/read_state", read),
        (f"/api/v2/subnet/{devnet.subnet_id}/read_state", read),
    ]
    statuses: set[int] = set()
    for path, valid in cases:
        for body in _mutations(valid, rng, 60):
            status, _ = await client.post(path, body)
            statuses.add(status)
    assert statuses <= {200, 202, 400, 403, 404}, statuses
    assert 400 in statuses
    assert candid.decode(await client.update(counter, "increment"), "(nat64)") == [1]
