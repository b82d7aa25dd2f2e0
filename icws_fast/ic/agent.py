"""An asyncio agent for the IC HTTPS interface: status, queries, update calls, read_state.

One :class:`Agent` owns one pooled keep-alive HTTP client (:class:`~icws_fast.ic.http.HttpClient`) for one
replica or boundary-node URL.
Endpoints used (interface specification as ic-agent 0.49 speaks it), newest first:

* ``GET /api/v2/status`` for :meth:`Agent.status` and :meth:`Agent.fetch_root_key`;
* ``POST /api/v4/canister/<ecid>/call`` (synchronous; delegations use the sharded ``/canister_ranges/<subnet_id>``
  layout), else ``/api/v3/.../call`` (synchronous; flat ``/subnet/<subnet_id>/canister_ranges``), else
  ``/api/v2/.../call`` (``202``, then polling) for :meth:`Agent.call` and :meth:`Agent.submit_signed`; a
  synchronous ``202`` (the replica's own time-out) is followed by polling as well;
* ``POST /api/v3/canister/<ecid>/query``, else ``/api/v2/...`` for :meth:`Agent.query`;
* ``POST /api/v3/canister/<ecid>/read_state``, else ``/api/v2/...`` for :meth:`Agent.read_state` and polling.

An older replica has no route for a newer version and answers 404 (405 or 501 from some proxies): the agent
then tries the next older version, and remembers the newest one that answered for each endpoint kind (one
agent talks to one host, so this is per host). Only those statuses move it down, and only once an older
version has answered: a boundary node's 404 for an unknown canister repeats on every version and is raised,
and a reject (HTTP 200) or any other error never changes the version.

Every certified answer (call, read_state) is checked with :meth:`Certificate.verify` against the root key and
the effective canister id (either delegation layout of the canister ranges), and must be fresh
(:data:`~icws_fast.ic.certificate.MAX_CERTIFICATE_AGE_NS`). Query answers are not certified; their node
signatures are checked when ``verify_query_signatures`` is on (the default for mainnet URLs, as in agent-js
and the Rust gateway) against the node keys of the canister's subnet, read from a certified ``read_state`` of
``/subnet`` and cached for :data:`NODE_KEYS_TTL_S` (re-read once when a signature does not verify, as nodes
join and leave subnets).

Failures raise :class:`~icws_fast.errors.AgentError` subclasses: :class:`~icws_fast.errors.AgentTimeout` when a
request exceeds its time-out, :class:`~icws_fast.errors.TransportError` when the connection fails,
:class:`~icws_fast.errors.HttpStatusError` for an HTTP 4xx/5xx, :class:`~icws_fast.errors.RejectError` for a
reject (non-replicated or certified), plain :class:`~icws_fast.errors.AgentError` for a malformed answer; a
certificate or node signature that does not verify raises :class:`~icws_fast.errors.CertificateError`.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

from icws_fast.errors import (
    AgentError,
    AgentTimeout,
    CallPending,
    CertificateError,
    DecodeError,
    EnvelopeError,
    HttpStatusError,
    RejectError,
)
from icws_fast.ic import bls, cbor, hashtree
from icws_fast.ic.certificate import MAX_CERTIFICATE_AGE_NS, REASON_NODE_SIGNATURE, Certificate, check_canister_ranges
from icws_fast.ic.envelope import (
    MAX_INGRESS_TTL_NS,
    PERMITTED_DRIFT_NS,
    Envelope,
    build_envelope,
    call_content,
    read_state_content,
)
from icws_fast.ic.http import HttpClient, Origin
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
#: Largest answer body read from a replica by default (a reply is at most 2 MiB; certificates add little).
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
#: How long a subnet's node keys are trusted before they are read again (agent-js keeps them 5 minutes).
NODE_KEYS_TTL_S: Final = 5 * 60.0
#: The endpoint versions tried for each kind of request, newest first.
ENDPOINT_VERSIONS: Final[dict[str, tuple[int, ...]]] = {"call": (4, 3, 2), "query": (3, 2), "read_state": (3, 2)}
#: The HTTP statuses with which a replica or boundary node says it has no such endpoint (no route: 404; a proxy
#: that knows the path but not the method or the version: 405, 501).
ENDPOINT_MISSING_STATUSES: Final = frozenset({404, 405, 501})
_NONCE_BYTES: Final = 16
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


def _node_signature_failure(keys: dict[bytes, bytes], entries: list[tuple[bytes, bytes, bytes]]) -> str | None:
    """Why the ``(node_id, message, signature)`` entries do not all verify under the node ``keys``; None if they do."""
    for node_id, message, signature in entries:
        key = keys.get(node_id)
        if key is None:
            return f"node {node_id.hex()} is not in the canister's subnet"
        if not verify_signature(key, message, signature):
            return f"bad query signature of node {node_id.hex()}"
    return None


class Agent:
    """An asyncio client of one IC replica (or boundary node) URL; see the module docstring.

    ``identity`` signs every request (anonymous by default). ``root_key`` is the DER trust anchor: the mainnet
    key is built in for mainnet URLs; elsewhere pass it, or call :meth:`fetch_root_key` (which trusts the
    replica, so only do that for a local or test network). ``timeout_s`` bounds every HTTP request unless a
    method is given its own ``timeout_s``. ``verify_query_signatures`` defaults to on for mainnet URLs only.
    ``sync_call=False`` skips the synchronous call endpoints (v2 call and polling only). ``max_connections``
    bounds the keep-alive pool (and so the requests in flight), ``max_response_bytes`` the body of an answer.
    ``ssl_context`` replaces the default TLS context (system trust store, host name checked) for ``https``.
    A URL that is not ``http(s)://host[:port][/prefix]`` raises :class:`~icws_fast.errors.AgentError`.
    Use as ``async with Agent(...) as agent`` or call :meth:`close`.
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
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._origin = Origin(url)
        self.url = self._origin.url
        self.identity: Identity = identity if identity is not None else AnonymousIdentity()
        self.is_mainnet = is_mainnet_url(url)
        self._root_key = root_key if root_key is not None else (MAINNET_ROOT_KEY if self.is_mainnet else None)
        self.timeout_s = timeout_s
        self.verify_query_signatures = self.is_mainnet if verify_query_signatures is None else verify_query_signatures
        self._max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context
        self._client: HttpClient | None = None
        # The versions still tried per endpoint kind, newest first; _post drops those the host turns out to lack.
        self._versions: dict[str, tuple[int, ...]] = dict(ENDPOINT_VERSIONS)
        if not sync_call:
            self._versions["call"] = (2,)
        # Node public keys (DER) by node id, with the monotonic time they were read, per effective canister id.
        self._node_keys: dict[Principal, tuple[float, dict[bytes, bytes]]] = {}

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool; the agent opens a new one if used again."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @property
    def root_key(self) -> bytes:
        """The DER root key certificates are checked against; :class:`AgentError` if it is not known yet."""
        if self._root_key is None:
            raise AgentError(f"no root key for {self.url}: pass root_key= or call fetch_root_key() first")
        return self._root_key

    # -- HTTP ---------------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: bytes | None, timeout_s: float | None) -> tuple[int, bytes]:
        """Send one HTTP request; the status (2xx) and body, or a typed error."""
        client = self._client
        if client is None:
            # Created on first use, so that it binds to the running event loop, not the constructor's caller.
            client = self._client = HttpClient(
                self._origin,
                max_connections=self._max_connections,
                max_response_bytes=self.max_response_bytes,
                ssl_context=self._ssl_context,
            )
        status, data = await client.request(method, path, body, self.timeout_s if timeout_s is None else timeout_s)
        if status >= 300:
            raise HttpStatusError(status, data[:_HTTP_TEXT_LIMIT].decode("utf-8", "replace"))
        return status, data

    def endpoint_version(self, kind: str) -> int:
        """The endpoint version the agent uses now for ``kind`` (``call``, ``query`` or ``read_state``)."""
        return self._versions[kind][0]

    async def _post(
        self, kind: str, canister_id: Principal, body: bytes, timeout_s: float | None
    ) -> tuple[int, int, bytes]:
        """POST ``body`` to the newest ``kind`` endpoint of ``canister_id`` the host has; (version, status, body).

        A missing endpoint (:data:`ENDPOINT_MISSING_STATUSES`) moves on to the next older version; when an older
        one answers, the newer ones are dropped for good. When every version says "missing", the newest one's
        error is raised and nothing is remembered (that is how a boundary node answers for an unknown canister).
        """
        versions = self._versions[kind]
        missing: HttpStatusError | None = None
        for index, version in enumerate(versions):
            path = f"/api/v{version}/canister/{canister_id}/{kind}"
            try:
                status, data = await self._request("POST", path, body, timeout_s)
            except HttpStatusError as exc:
                if exc.status not in ENDPOINT_MISSING_STATUSES:
                    raise
                missing = missing or exc
                continue
            if index:
                # Only an answer proves the host lacks the newer versions; another agent method may have got there
                # first, so never move back up.
                self._versions[kind] = min(self._versions[kind], versions[index:], key=len)
            return version, status, data
        assert missing is not None  # the loop ran at least once and only a missing endpoint continues it
        raise missing

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
        _, _, data = await self._post("read_state", canister_id, build_envelope(identity, content), timeout_s)
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
        rid = request_id(content)
        _, _, data = await self._post("query", canister, build_envelope(self.identity, content, rid=rid), timeout_s)
        answer = self._cbor_map(data, "query")
        status = answer.get("status")
        if status == "replied":
            reply = answer.get("reply")
            arg_out = reply.get("arg") if type(reply) is dict else None
            if type(arg_out) is not bytes:
                raise AgentError("the query reply carries no arg byte string")
            signed: dict[str, Any] = {"status": "replied", "reply": {"arg": arg_out}}
            if self.verify_query_signatures:
                await self._check_node_signatures(canister, rid, signed, answer, timeout_s)
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
                await self._check_node_signatures(canister, rid, signed, answer, timeout_s)
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
        """Check every node signature of a query answer (spec: ``verify_response``).

        The entries' shape and freshness are checked first; then the signatures against the cached node keys of
        the canister's subnet, and once more against freshly read keys if that fails (a node may have joined).
        """
        signatures = answer.get("signatures")
        if type(signatures) is not list or not signatures:
            raise CertificateError(REASON_NODE_SIGNATURE, "the query answer carries no node signatures")
        if len(signatures) > MAX_NODE_SIGNATURES:
            raise CertificateError(
                REASON_NODE_SIGNATURE, f"{len(signatures)} node signatures: more than a subnet has nodes"
            )
        now = time.time_ns()
        entries: list[tuple[bytes, bytes, bytes]] = []
        for entry in signatures:
            timestamp = entry.get("timestamp") if type(entry) is dict else None
            signature = entry.get("signature") if type(entry) is dict else None
            node_id = entry.get("identity") if type(entry) is dict else None
            if type(timestamp) is not int or type(signature) is not bytes or type(node_id) is not bytes:
                raise CertificateError(REASON_NODE_SIGNATURE, "malformed node signature entry")
            if abs(now - timestamp) > MAX_CERTIFICATE_AGE_NS:
                raise CertificateError(REASON_NODE_SIGNATURE, f"signature timestamp {timestamp} is not recent")
            message = RESPONSE_DOMAIN + hash_of_map({**signed, "timestamp": timestamp, "request_id": rid})
            entries.append((node_id, message, signature))
        keys = await self._subnet_node_keys(canister_id, timeout_s, refresh=False)
        if _node_signature_failure(keys, entries) is None:
            return
        failure = _node_signature_failure(await self._subnet_node_keys(canister_id, timeout_s, refresh=True), entries)
        if failure is not None:
            raise CertificateError(REASON_NODE_SIGNATURE, failure)

    async def _subnet_node_keys(
        self, canister_id: Principal, timeout_s: float | None, *, refresh: bool
    ) -> dict[bytes, bytes]:
        """The node keys (DER, by node id) of ``canister_id``'s subnet: cached, or read when old or ``refresh``."""
        cached = self._node_keys.get(canister_id)
        if cached is not None and not refresh and time.monotonic() - cached[0] < NODE_KEYS_TTL_S:
            return cached[1]
        keys = await self._fetch_node_keys(canister_id, timeout_s)
        self._node_keys[canister_id] = (time.monotonic(), keys)
        return keys

    async def _fetch_node_keys(self, canister_id: Principal, timeout_s: float | None) -> dict[bytes, bytes]:
        cert = await self._read_state_as(self.identity, canister_id, [[b"subnet"]], timeout_s)
        if cert.delegation is not None:
            # verify() has checked that the delegated subnet's ranges hold the canister.
            subnet_id = cert.delegation.subnet_id.bytes
        else:
            # Signed by the root key itself: the answer comes from the root subnet, whose id is the principal of
            # the root key (spec: RootSubnetId); its own certificate must show the canister in its ranges.
            subnet_id = Principal.self_authenticating(self.root_key).bytes
            check_canister_ranges(cert, subnet_id, canister_id.bytes)
        nodes = hashtree.lookup_subtree(cert.tree, [b"subnet", subnet_id, b"node"])
        if nodes.status != "Found":
            raise CertificateError(
                REASON_NODE_SIGNATURE, "the certificate reveals no node keys of the canister's subnet"
            )
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
        rid = request_id(content)
        body = build_envelope(self.identity, content, rid=rid)
        expiry = content["ingress_expiry"]
        return await self._submit(canister, rid, body, expiry, poller=self.identity, timeout_s=timeout_s)

    async def submit_signed(
        self,
        canister_id: Principal | str,
        envelope: Envelope,
        envelope_bytes: bytes,
        *,
        timeout_s: float | None = None,
    ) -> bytes:
        """Relay an envelope someone else signed to ``canister_id``; its certified reply.

        ``envelope`` is the parsed form (:func:`~icws_fast.ic.envelope.parse_envelope`) of ``envelope_bytes``,
        which are posted unchanged: a relay decodes the envelope once, where it first reads it. Its shape and
        target are checked first (:class:`~icws_fast.errors.EnvelopeError`: not a call, or a call to another
        canister than ``canister_id``); the replica checks the signature. When the outcome is not in the
        synchronous answer it must be polled, and the spec lets only the request's own sender read its status:
        the agent polls when that sender is its own identity or anonymous, and otherwise raises
        :class:`~icws_fast.errors.CallPending` (the call was accepted; its outcome is not readable here).
        """
        canister = _as_principal(canister_id)
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
        """Post a signed call (v4, v3 or v2: see :meth:`_post`) and return its certified reply, polling when needed."""
        version, status, data = await self._post("call", canister_id, body, timeout_s)
        if status == 200 and version >= 3:
            answer = self._cbor_map(data, "call")
            kind = answer.get("status")
            if kind == "non_replicated_rejection":
                raise _reject_error(answer, "call")
            if kind != "replied":
                raise AgentError(f"unknown call answer status {kind!r:.60}")
            reply = _request_outcome(self._verified(answer.get("certificate"), canister_id), rid)
            if reply is not None:
                return reply
        elif status == 200 and data:
            # The v2 endpoint answers a non-replicated rejection (a failed inspect_message, say) with a body.
            raise _reject_error(self._cbor_map(data, "call"), "call")
        # 202 (accepted, or the replica's own time-out), or a certificate from before the call finished: poll.
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
