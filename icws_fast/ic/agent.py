"""An asyncio agent for the IC HTTPS interface: status, queries, update calls, read_state.

One :class:`Agent` owns one pooled keep-alive HTTP client (aiohttp) for one replica URL. Endpoints used
(interface specification, the versions @dfinity/agent 2.x speaks):

* ``GET /api/v2/status`` for :meth:`Agent.status` and :meth:`Agent.fetch_root_key`;
* ``POST /api/v2/canister/<ecid>/query`` for :meth:`Agent.query`;
* ``POST /api/v3/canister/<ecid>/call`` (synchronous) for :meth:`Agent.call` and :meth:`Agent.submit_signed`;
  a replica without it (HTTP 404) is remembered and served by ``/api/v2/canister/<ecid>/call`` plus polling;
  a v3 ``202`` (the replica's own time-out) is followed by polling as well;
* ``POST /api/v2/canister/<ecid>/read_state`` for :meth:`Agent.read_state` and the polling.

Every certified answer (v3 call, read_state) is checked with :meth:`Certificate.verify` against the root key
and the effective canister id, and must be fresh (:data:`~icws_fast.ic.certificate.MAX_CERTIFICATE_AGE_NS`).
Query answers are not certified; their node signatures are checked when ``verify_query_signatures`` is on
(the default for mainnet URLs, as in the Rust gateway).

Failures raise :class:`~icws_fast.errors.AgentError` subclasses: :class:`~icws_fast.errors.AgentTimeout` when a
request exceeds its time-out, :class:`~icws_fast.errors.TransportError` when the connection fails,
:class:`~icws_fast.errors.HttpStatusError` for an HTTP 4xx/5xx, :class:`~icws_fast.errors.RejectError` for a
reject (non-replicated or certified), plain :class:`~icws_fast.errors.AgentError` for a malformed answer; a
certificate or node signature that does not verify raises :class:`~icws_fast.errors.CertificateError`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from icws_fast.errors import (
    AgentError,
    AgentTimeout,
    CallPending,
    CertificateError,
    DecodeError,
    EnvelopeError,
    HttpStatusError,
    RejectError,
    TransportError,
)
from icws_fast.ic import bls, cbor, hashtree
from icws_fast.ic.certificate import MAX_CERTIFICATE_AGE_NS, Certificate
from icws_fast.ic.envelope import (
    MAX_INGRESS_TTL_NS,
    PERMITTED_DRIFT_NS,
    build_envelope,
    call_content,
    parse_envelope,
    read_state_content,
)
from icws_fast.ic.identity import AnonymousIdentity, Identity, verify_signature
from icws_fast.ic.leb128 import leb128_value
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import RESPONSE_DOMAIN, hash_of_map, request_id

#: The IC mainnet root key (DER-wrapped BLS12-381 G2 point); public, and the trust anchor for mainnet URLs.
MAINNET_ROOT_KEY: Final = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100814c0e6ec71fab583b08bd81373c255c"
    "3c371b2e84863c98a4f1e08b74235d14fb5d9c0cd546d9685f913a0c0b2cc5341583bf4b4392e467db96d65b9bb4cb717112f8472e0d"
    "5a4d14505ffd7484b01291091c5f87b98883463f98091a0baaae"
)
#: Host names (and their subdomains) that are the IC mainnet, where the root key is never fetched.
MAINNET_HOSTS: Final = ("ic0.app", "icp0.io", "icp-api.io")
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_CONNECTIONS: Final = 100
#: Largest answer body read from a replica (a reply is at most 2 MiB; certificates add little).
MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
#: Polling back-off: first delay, growth factor and cap (seconds).
POLL_FIRST_DELAY_S: Final = 0.02
POLL_BACKOFF: Final = 1.5
POLL_MAX_DELAY_S: Final = 1.0
#: Longest a call is polled, whatever its ingress expiry says: the IC accepts no expiry further ahead, so a relayed
#: envelope claiming one (hostile or broken) must not keep a poller busy for longer.
MAX_POLL_NS: Final = MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS
#: More node signatures on one query answer than any subnet has nodes (the spec sends one) is malformed.
MAX_NODE_SIGNATURES: Final = 100
_NONCE_BYTES: Final = 16
_CBOR_HEADERS: Final = {"Content-Type": "application/cbor"}
_HTTP_TEXT_LIMIT: Final = 2000


def is_mainnet_url(url: str) -> bool:
    """Whether ``url`` points at an IC mainnet host (``ic0.app``, ``icp0.io``, ``icp-api.io`` or a subdomain)."""
    host = (urlsplit(url).hostname or "").lower()
    return any(host == name or host.endswith("." + name) for name in MAINNET_HOSTS)


def root_key_from_status(data: bytes, url: str) -> bytes:
    """The root key (DER BLS12-381) in the body of ``url``'s ``/api/v2/status`` answer.

    One parser for every transport (this agent, the blocking client): raises :class:`AgentError`
    when the body is not a CBOR map, has no ``root_key`` byte string, or that key is not DER BLS.
    """
    try:
        status = cbor.decode(data)
    except DecodeError as exc:
        raise AgentError(f"malformed CBOR in the status answer of {url}: {exc}") from exc
    key = status.get("root_key") if type(status) is dict else None
    if type(key) is not bytes:
        raise AgentError(f"the status of {url} carries no root_key byte string")
    try:
        bls.der_decode_public_key(key)
    except DecodeError as exc:
        raise AgentError(f"the root key of {url} is not a DER BLS12-381 public key: {exc}") from exc
    return key


def _as_principal(value: Principal | str) -> Principal:
    return value if isinstance(value, Principal) else Principal.from_text(value)


def _reject_error(answer: dict[str, Any], what: str) -> RejectError:
    """The :class:`RejectError` of a non-replicated rejection or a rejected query answer."""
    code = answer.get("reject_code")
    message = answer.get("reject_message")
    error_code = answer.get("error_code")
    if (
        type(code) is not int
        or code < 0
        or type(message) is not str
        or not (error_code is None or type(error_code) is str)
    ):
        raise AgentError(f"malformed {what} rejection: {answer!r:.300}")
    return RejectError(code, message, error_code)


def _request_outcome(cert: Certificate, rid: bytes) -> bytes | None:
    """The reply of request ``rid`` as ``cert`` certifies it; None while it is not terminal.

    Raises :class:`RejectError` for a rejected request and :class:`AgentError` for one that is ``done`` (its
    reply was pruned, so nobody can learn it any more) or an unknown status.
    """
    base = [b"request_status", rid]
    found = cert.lookup([*base, b"status"])
    if found.status in ("Absent", "Unknown"):
        return None
    if found.status != "Found" or not isinstance(found.value, bytes):
        raise AgentError(f"request status of 0x{rid.hex()} is not a leaf in the certificate")
    status = found.value
    if status == b"replied":
        return cert.lookup_value([*base, b"reply"])
    if status == b"rejected":
        reject_code = cert.lookup_value([*base, b"reject_code"])
        try:
            code = leb128_value(reject_code)
        except DecodeError:
            raise AgentError(f"malformed LEB128 reject_code in certificate: {reject_code.hex()}") from None
        try:
            message = cert.lookup_value([*base, b"reject_message"]).decode()
            error = cert.lookup([*base, b"error_code"])
            error_code = error.value.decode() if error.status == "Found" and isinstance(error.value, bytes) else None
        except UnicodeDecodeError as exc:
            raise AgentError(f"reject of 0x{rid.hex()}: text that is not UTF-8 in the certificate") from exc
        raise RejectError(code, message, error_code)
    if status == b"done":
        raise AgentError(f"request 0x{rid.hex()} is done: its reply was already pruned")
    if status in (b"received", b"processing"):
        return None
    raise AgentError(f"unknown request status {status!r:.60} of 0x{rid.hex()}")


def _labeled_children(node: hashtree.Node) -> Iterator[tuple[bytes, hashtree.Node]]:
    """The ``(label, subtree)`` pairs of a forest; pruned parts hide theirs."""
    for child in hashtree.flatten_forks(node):
        if child[0] == hashtree.LABELED:
            yield child[1], child[2]


class Agent:
    """An asyncio client of one IC replica (or boundary node) URL; see the module docstring.

    ``identity`` signs every request (anonymous by default). ``root_key`` is the DER trust anchor: the mainnet
    key is built in for mainnet URLs; elsewhere pass it, or call :meth:`fetch_root_key` (which trusts the
    replica, so only do that for a local or test network). ``timeout_s`` bounds every HTTP request unless a
    method is given its own ``timeout_s``. ``verify_query_signatures`` defaults to on for mainnet URLs only.
    ``sync_call=False`` skips the v3 endpoint (v2 call and polling only). ``max_connections`` bounds the
    keep-alive pool. Use as ``async with Agent(...) as agent`` or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        identity: Identity | None = None,
        *,
        root_key: bytes | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verify_query_signatures: bool | None = None,
        sync_call: bool = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.url = url.rstrip("/")
        self.identity: Identity = identity if identity is not None else AnonymousIdentity()
        self.is_mainnet = is_mainnet_url(url)
        self._root_key = root_key if root_key is not None else (MAINNET_ROOT_KEY if self.is_mainnet else None)
        self.timeout_s = timeout_s
        self.verify_query_signatures = self.is_mainnet if verify_query_signatures is None else verify_query_signatures
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        # Also cleared once a replica shows it has no v3 call endpoint, so that later calls go straight to v2.
        self._v3_call = sync_call
        # Node public keys (DER) by node id, per effective canister id, for query signature checks.
        self._node_keys: dict[Principal, dict[bytes, bytes]] = {}

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool; the agent opens a new one if used again."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def root_key(self) -> bytes:
        """The DER root key certificates are checked against; :class:`AgentError` if it is not known yet."""
        if self._root_key is None:
            raise AgentError(f"no root key for {self.url}: pass root_key= or call fetch_root_key() first")
        return self._root_key

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use so that it binds to the running event loop, not the constructor's caller.
        if self._session is None or self._session.closed:
            # The body limit of _request applies to decompressed bytes, so compressed answers are harmless.
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _request(self, method: str, path: str, body: bytes | None, timeout_s: float | None) -> tuple[int, bytes]:
        """Send one HTTP request; the status (2xx) and body, or a typed error."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        what = f"{method} {path}"
        try:
            async with self._http().request(
                method,
                self.url + path,
                data=body,
                headers=_CBOR_HEADERS if body is not None else None,
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
            ) as resp:
                if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
                    raise AgentError(f"{what}: answer of {resp.content_length} bytes is over the limit")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise AgentError(f"{what}: answer over {MAX_RESPONSE_BYTES} bytes")
                    chunks.append(chunk)
                status = resp.status
        except TimeoutError as exc:  # aiohttp's timeouts derive from it (asyncio.TimeoutError is an alias)
            raise AgentTimeout(f"{what}: no answer from {self.url} within {limit} s") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{what} to {self.url} failed: {exc!r}") from exc
        data = b"".join(chunks)
        if status >= 300:
            raise HttpStatusError(status, data[:_HTTP_TEXT_LIMIT].decode("utf-8", "replace"))
        return status, data

    @staticmethod
    def _cbor_map(data: bytes, what: str) -> dict[str, Any]:
        """Decode a CBOR map answer; anything else is a malformed answer."""
        try:
            value = cbor.decode(data)
        except DecodeError as exc:
            raise AgentError(f"malformed CBOR in the {what} answer: {exc}") from exc
        if type(value) is not dict:
            raise AgentError(f"the {what} answer is not a CBOR map")
        return value

    # -- status and root key ----------------------------------------------------------------------------

    async def status(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """The replica's ``/api/v2/status`` map (``root_key``, ``impl_version``, ...)."""
        _, data = await self._request("GET", "/api/v2/status", None, timeout_s)
        return self._cbor_map(data, "status")

    async def fetch_root_key(self, *, timeout_s: float | None = None) -> bytes:
        """The root key: built in for mainnet URLs, else fetched from ``/api/v2/status`` and kept.

        Fetching trusts the replica for the key, as agent-js's ``fetchRootKey`` does; never do it for mainnet.
        """
        if self.is_mainnet:
            self._root_key = MAINNET_ROOT_KEY
            return MAINNET_ROOT_KEY
        _, data = await self._request("GET", "/api/v2/status", None, timeout_s)
        key = root_key_from_status(data, self.url)
        self._root_key = key
        return key

    # -- certified answers ------------------------------------------------------------------------------

    def _verified(self, cert_bytes: Any, canister_id: Principal) -> Certificate:
        """Parse and verify a certificate of an answer for ``canister_id`` (signature, delegation, freshness)."""
        if type(cert_bytes) is not bytes:
            raise AgentError("the answer's certificate is not a byte string")
        cert = Certificate.from_cbor(cert_bytes)
        cert.verify(
            self.root_key,
            effective_canister_id=canister_id,
            now_ns=time.time_ns(),
            max_age_ns=MAX_CERTIFICATE_AGE_NS,
        )
        return cert

    async def _read_state_as(
        self, identity: Identity, canister_id: Principal, paths: Sequence[Sequence[bytes]], timeout_s: float | None
    ) -> Certificate:
        """A verified read_state signed by ``identity`` (whose requests' statuses it may read)."""
        content = read_state_content(identity.sender, paths)
        _, data = await self._request(
            "POST", f"/api/v2/canister/{canister_id}/read_state", build_envelope(identity, content), timeout_s
        )
        return self._verified(self._cbor_map(data, "read_state").get("certificate"), canister_id)

    async def read_state(
        self, canister_id: Principal | str, paths: Sequence[Sequence[bytes]], *, timeout_s: float | None = None
    ) -> Certificate:
        """A verified certificate revealing ``paths`` (each a sequence of byte labels) of the state tree."""
        return await self._read_state_as(self.identity, _as_principal(canister_id), paths, timeout_s)

    # -- queries ----------------------------------------------------------------------------------------

    async def query(
        self, canister_id: Principal | str, method: str, arg: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """Run query ``method`` of ``canister_id`` with the Candid ``arg``; its Candid reply bytes.

        Raises :class:`RejectError` if the canister or the replica rejects the query.
        """
        canister = _as_principal(canister_id)
        content = call_content(self.identity.sender, canister, method, arg, request_type="query")
        _, data = await self._request(
            "POST", f"/api/v2/canister/{canister}/query", build_envelope(self.identity, content), timeout_s
        )
        answer = self._cbor_map(data, "query")
        status = answer.get("status")
        if status == "replied":
            reply = answer.get("reply")
            arg_out = reply.get("arg") if type(reply) is dict else None
            if type(arg_out) is not bytes:
                raise AgentError("the query reply carries no arg byte string")
            signed: dict[str, Any] = {"status": "replied", "reply": {"arg": arg_out}}
            if self.verify_query_signatures:
                await self._check_node_signatures(canister, request_id(content), signed, answer, timeout_s)
            return arg_out
        if status == "rejected":
            reject = _reject_error(answer, "query")
            if self.verify_query_signatures:
                signed = {
                    "status": "rejected",
                    "reject_code": reject.reject_code,
                    "reject_message": reject.reject_message,
                    "error_code": reject.error_code,
                }
                await self._check_node_signatures(canister, request_id(content), signed, answer, timeout_s)
            raise reject
        raise AgentError(f"unknown query answer status {status!r:.60}")

    async def _check_node_signatures(
        self,
        canister_id: Principal,
        rid: bytes,
        signed: dict[str, Any],
        answer: dict[str, Any],
        timeout_s: float | None,
    ) -> None:
        """Check every node signature of a query answer (spec: ``verify_node_signatures``)."""
        signatures = answer.get("signatures")
        if type(signatures) is not list or not signatures:
            raise CertificateError("node_signature", "the query answer carries no node signatures")
        if len(signatures) > MAX_NODE_SIGNATURES:
            raise CertificateError("node_signature", f"{len(signatures)} node signatures: more than a subnet has nodes")
        now = time.time_ns()
        for entry in signatures:
            timestamp = entry.get("timestamp") if type(entry) is dict else None
            signature = entry.get("signature") if type(entry) is dict else None
            node_id = entry.get("identity") if type(entry) is dict else None
            if type(timestamp) is not int or type(signature) is not bytes or type(node_id) is not bytes:
                raise CertificateError("node_signature", "malformed node signature entry")
            if abs(now - timestamp) > MAX_CERTIFICATE_AGE_NS:
                raise CertificateError("node_signature", f"signature timestamp {timestamp} is not recent")
            key = await self._node_key(canister_id, node_id, timeout_s)
            message = RESPONSE_DOMAIN + hash_of_map({**signed, "timestamp": timestamp, "request_id": rid})
            if not verify_signature(key, message, signature):
                raise CertificateError("node_signature", f"bad query signature of node {node_id.hex()}")

    async def _node_key(self, canister_id: Principal, node_id: bytes, timeout_s: float | None) -> bytes:
        """The DER key of ``node_id``, from a cached certified read of the canister's subnet (refreshed on a miss)."""
        key = self._node_keys.get(canister_id, {}).get(node_id)
        if key is None:
            self._node_keys[canister_id] = await self._fetch_node_keys(canister_id, timeout_s)
            key = self._node_keys[canister_id].get(node_id)
            if key is None:
                raise CertificateError("node_signature", f"node {node_id.hex()} is not in the canister's subnet")
        return key

    async def _fetch_node_keys(self, canister_id: Principal, timeout_s: float | None) -> dict[bytes, bytes]:
        cert = await self._read_state_as(self.identity, canister_id, [[b"subnet"]], timeout_s)
        subnets = hashtree.lookup_subtree(cert.tree, [b"subnet"])
        if subnets.status != "Found":
            raise CertificateError("node_signature", "the certificate reveals no /subnet")
        if cert.delegation is not None:
            # verify() has checked that the delegated subnet's ranges hold the canister.
            subnet_id = cert.delegation.subnet_id.bytes
        else:
            # Signed by the root key itself: the canister lives on the subnet whose key is the root key.
            subnet_id = next(
                (
                    label
                    for label, sub in _labeled_children(subnets.value)
                    if hashtree.lookup_path(sub, [b"public_key"]).value == self.root_key
                ),
                b"",
            )
        nodes = hashtree.lookup_subtree(subnets.value, [subnet_id, b"node"])
        if nodes.status != "Found":
            raise CertificateError("node_signature", "the certificate reveals no node keys of the canister's subnet")
        keys: dict[bytes, bytes] = {}
        for node_id, sub in _labeled_children(nodes.value):
            found = hashtree.lookup_path(sub, [b"public_key"])
            if found.status == "Found" and isinstance(found.value, bytes):
                keys[node_id] = found.value
        return keys

    # -- update calls -----------------------------------------------------------------------------------

    async def call(
        self, canister_id: Principal | str, method: str, arg: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """Call update ``method`` of ``canister_id`` with the Candid ``arg``; its certified Candid reply bytes.

        Raises :class:`RejectError` if the call is rejected, :class:`AgentTimeout` if no outcome is certified
        before the call's ingress expiry.
        """
        canister = _as_principal(canister_id)
        # A fresh nonce makes two identical calls two requests (the IC drops a replayed request id).
        content = call_content(self.identity.sender, canister, method, arg, nonce=secrets.token_bytes(_NONCE_BYTES))
        body = build_envelope(self.identity, content)
        return await self._submit(
            canister, request_id(content), body, content["ingress_expiry"], poller=self.identity, timeout_s=timeout_s
        )

    async def submit_signed(
        self, canister_id: Principal | str, envelope_bytes: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """Relay an envelope someone else signed (bytes unchanged) to ``canister_id``; its certified reply.

        The envelope's shape and target are checked first (:class:`~icws_fast.errors.EnvelopeError`: not a call,
        or a call to another canister than ``canister_id``); the replica checks the signature. When the outcome
        is not in the synchronous answer it must be polled, and the spec lets only the request's own sender read
        its status: the agent polls when that sender is its own identity or anonymous, and otherwise raises
        :class:`~icws_fast.errors.CallPending` (the call was accepted; its outcome is not readable here).
        """
        canister = _as_principal(canister_id)
        envelope = parse_envelope(envelope_bytes)
        if envelope.request_type != "call":
            raise EnvelopeError(f"submit_signed relays call envelopes, not {envelope.request_type}")
        # The IC refuses a call whose canister_id is not the effective canister id (bar the management canister,
        # whose effective id is read from its argument); refusing it here keeps a relayed envelope to its canister.
        if envelope.canister_id != canister and envelope.canister_id != Principal.management():
            raise EnvelopeError(f"the envelope calls {envelope.canister_id}, not {canister}")
        poller: Identity | None = None
        if envelope.sender == self.identity.sender:
            poller = self.identity
        elif envelope.sender.is_anonymous:
            poller = AnonymousIdentity()
        return await self._submit(
            canister,
            envelope.request_id,
            bytes(envelope_bytes),
            envelope.ingress_expiry,
            poller=poller,
            timeout_s=timeout_s,
        )

    async def _submit(
        self,
        canister_id: Principal,
        rid: bytes,
        body: bytes,
        ingress_expiry: int,
        *,
        poller: Identity | None,
        timeout_s: float | None,
    ) -> bytes:
        """Post a signed call (v3, else v2) and return its certified reply, polling when needed."""
        v3_missing = False
        if self._v3_call:
            try:
                status, data = await self._request("POST", f"/api/v3/canister/{canister_id}/call", body, timeout_s)
            except HttpStatusError as exc:
                if exc.status != 404:
                    raise
                v3_missing = True
            else:
                if status == 200:
                    answer = self._cbor_map(data, "call")
                    kind = answer.get("status")
                    if kind == "non_replicated_rejection":
                        raise _reject_error(answer, "call")
                    if kind != "replied":
                        raise AgentError(f"unknown call answer status {kind!r:.60}")
                    reply = _request_outcome(self._verified(answer.get("certificate"), canister_id), rid)
                    if reply is not None:
                        return reply
                # 202 (or a certificate from before the call finished): the outcome must be polled.
                return await self._poll(canister_id, rid, ingress_expiry, poller, timeout_s)
        status, data = await self._request("POST", f"/api/v2/canister/{canister_id}/call", body, timeout_s)
        if v3_missing:
            # v2 answered where v3 was 404: the replica lacks v3 (a 404 for an unknown canister would have
            # repeated on v2), so later calls skip it.
            self._v3_call = False
        if status == 200 and data:
            raise _reject_error(self._cbor_map(data, "call"), "call")
        return await self._poll(canister_id, rid, ingress_expiry, poller, timeout_s)

    async def _poll(
        self,
        canister_id: Principal,
        rid: bytes,
        ingress_expiry: int,
        poller: Identity | None,
        timeout_s: float | None,
    ) -> bytes:
        """Read ``request_status`` with back-off until the request is terminal or its ingress expiry passes."""
        if poller is None:
            raise CallPending(rid)
        deadline = min(ingress_expiry, time.time_ns() + MAX_POLL_NS)
        delay = POLL_FIRST_DELAY_S
        while True:
            cert = await self._read_state_as(poller, canister_id, [[b"request_status", rid]], timeout_s)
            reply = _request_outcome(cert, rid)
            if reply is not None:
                return reply
            if time.time_ns() > deadline:
                # Past its expiry an unprocessed call can never start; a processing one is abandoned too.
                raise AgentTimeout(f"no certified outcome of request 0x{rid.hex()} before its ingress expiry")
            await asyncio.sleep(delay)
            delay = min(delay * POLL_BACKOFF, POLL_MAX_DELAY_S)
