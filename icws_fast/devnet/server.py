"""The devnet's HTTP interface (the IC's public API, aiohttp) and the in-process :class:`Devnet`.

Endpoints, at the versions the interface specification defines:

- ``GET /api/v2/status``: CBOR ``{ic_api_version, root_key, impl_version, replica_health_status,
  certified_height}``;
- ``POST /api/v2/canister/<ecid>/call``: asynchronous, ``202 Accepted``;
- ``POST /api/v3/canister/<ecid>/call`` and ``/api/v4/...``: synchronous, ``200 {status: "replied",
  certificate}`` once the round that executed the call is certified (``202`` after 10 s, as the
  replica's timeout); v3 certificates carry the flat delegation layout, v4 the sharded one;
- ``POST /api/v{2,3}/canister/<ecid>/query``: signed query responses;
- ``POST /api/v{2,3}/canister/<ecid>/read_state`` and ``/api/v{2,3}/subnet/<subnet_id>/read_state``
  (paths authorized as the replica's ``verify_paths`` does; v3 uses the sharded delegation and, on a
  delegated subnet, prunes ``/subnet/<id>/canister_ranges``);
- ``GET /_devnet/canisters``: ``{"canisters": {name: id}, "root_key": hex, "url": ...}``.

``max_api_version`` plays an older replica: 3 serves the v3 and v2 calls with v2 query and read_state (the
replica before the sharded canister ranges), 2 only the v2 endpoints; the others answer 404, as a replica
without the route does.

Every request body is hostile: malformed CBOR or envelopes get ``400`` with a plain-text reason,
oversized bodies ``413``, unknown routes ``404``; a handler never lets an exception escape.
Status codes and texts follow the replica's HTTP endpoints (``rs/http_endpoints/public``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from icws_fast.cdk.api import Canister
from icws_fast.devnet import storage
from icws_fast.devnet.replica import CanisterSpec, DelegationFormat, Replica
from icws_fast.devnet.runtime import Reject
from icws_fast.errors import EnvelopeError, IcwsError, InvalidPrincipal, SignatureError
from icws_fast.ic import cbor
from icws_fast.ic.envelope import MAX_INGRESS_TTL_NS, PERMITTED_DRIFT_NS, Envelope, parse_envelope, verify_envelope
from icws_fast.ic.principal import Principal

log = logging.getLogger(__name__)

# Connections the kernel queues for the devnet to accept (capped by net.core.somaxconn).
LISTEN_BACKLOG: Final = 4096

CBOR_CONTENT_TYPE: Final = "application/cbor"
IMPL_VERSION: Final = "icws-devnet-0.1.0"
# What the replica reports in /api/v2/status (agents ignore it; the spec no longer versions the API this way).
IC_API_VERSION: Final = "0.18.0"
# The replica's limits: 2 MiB per ingress message on application subnets, 5 MiB per HTTP body.
MAX_INGRESS_BYTES: Final = 2 * 1024 * 1024
MAX_BODY_BYTES: Final = 5 * 1024 * 1024
SYNC_CALL_TIMEOUT_S: Final = 10.0
MAX_PATHS: Final = 1000
# Ingress messages waiting for the next round; beyond this the replica sheds load, as its ingress pool does.
MAX_QUEUED_MESSAGES: Final = 100_000
DEFAULT_ROUND_MS: Final = 50
PERSIST_INTERVAL_S: Final = 30.0


class HttpFailure(IcwsError):
    """A request the replica answers with a plain-text HTTP error."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _format_time(ns: int) -> str:
    """A time as the replica prints it in errors: ``2025-05-01 23:55:18.005285297 UTC``."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns"
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{nanos:09d} UTC" if nanos else f"{text} UTC"


@functools.lru_cache(maxsize=1024)
def _parse_principal(text: str) -> Principal:
    # The same few canister ids arrive in every URL; parsing (base32 + CRC) is worth caching.
    return Principal.from_text(text)


def _cbor_response(value: Any) -> web.Response:
    return web.Response(body=cbor.encode(value), content_type=CBOR_CONTENT_TYPE)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


class _Api:
    """The request handlers, bound to one :class:`Replica`."""

    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet

    @property
    def replica(self) -> Replica:
        return self.devnet.replica

    # -- request validation --------------------------------------------------------------------------

    async def _envelope(self, request: web.Request, request_types: tuple[str, ...], what: str) -> Envelope:
        """Read, parse and authenticate the envelope of ``request`` (in the replica's order of checks).

        For a call or a query, the canister named in the content must be the effective canister id of
        the URL (except for the management canister); for a canister ``read_state`` the URL's id is the
        target that delegations with ``targets`` must allow.
        """
        if request.headers.get("Content-Type", "").lower() != CBOR_CONTENT_TYPE:
            raise HttpFailure(400, "Unexpected content-type, expected application/cbor.")
        effective = self._principal_in_url(request, "ecid") if "ecid" in request.match_info else None
        body = await request.read()
        try:
            env = parse_envelope(body)
        except EnvelopeError as exc:
            raise HttpFailure(400, f"Failed to deserialize cbor request: {exc}") from None
        if env.request_type not in request_types:
            raise HttpFailure(
                400, f"Failed to deserialize cbor request: a {what} endpoint got request_type {env.request_type!r}"
            )
        canister_id = env.canister_id
        if effective is not None and canister_id is not None and canister_id.bytes and canister_id != effective:
            raise HttpFailure(
                400, f"Specified CanisterId {canister_id} does not match effective canister id in URL {effective}"
            )
        if env.request_type == "call" and len(body) > MAX_INGRESS_BYTES:
            raise HttpFailure(
                413,
                f"Request 0x{env.request_id.hex()} is too large. Message byte size {len(body)} is larger "
                f"than the max allowed {MAX_INGRESS_BYTES}.",
            )
        now = self.replica.clock()
        low, high = now, now + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS
        if not low <= env.ingress_expiry <= high:
            raise HttpFailure(
                400,
                "Invalid request expiry: Specified ingress_expiry not within expected range: "
                f"Minimum allowed expiry: {_format_time(low)}, Maximum allowed expiry: {_format_time(high)}, "
                f"Provided expiry:        {_format_time(env.ingress_expiry)}",
            )
        try:
            verify_envelope(env, now_ns=now, effective_canister_id=effective)
        except SignatureError as exc:
            raise HttpFailure(400, f"Invalid signature: {exc}") from None
        except EnvelopeError as exc:
            raise HttpFailure(400, f"Invalid request: {exc}") from None
        return env

    @staticmethod
    def _principal_in_url(request: web.Request, key: str) -> Principal:
        text = request.match_info[key]
        try:
            return _parse_principal(text)
        except InvalidPrincipal as exc:
            raise HttpFailure(400, f"Malformed principal {text!r} in URL: {exc}") from None

    # -- handlers ---------------------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        # Field order of the replica's HttpStatusResponse (serde struct order).
        return _cbor_response(
            {
                "ic_api_version": IC_API_VERSION,
                "root_key": self.replica.root_key_der,
                "impl_version": IMPL_VERSION,
                "replica_health_status": "healthy",
                "certified_height": self.replica.round,
            }
        )

    async def canisters(self, request: web.Request) -> web.Response:
        return web.json_response(self.devnet.info())

    async def call(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        synchronous = version in ("v3", "v4")
        env = await self._envelope(request, ("call",), "call")
        canister_id = env.canister_id
        assert canister_id is not None and env.method_name is not None and env.arg is not None
        request_id = env.request_id
        replica = self.replica
        if not replica.known_request(request_id):
            if replica.queue_length >= MAX_QUEUED_MESSAGES:
                raise HttpFailure(503, "Service is overloaded, try again later.")
            reject = replica.ingress_precheck(canister_id, env.method_name, env.arg, env.sender)
            if reject is not None:
                return _cbor_response(self._non_replicated(reject, with_status=synchronous))
            replica.submit(
                request_id,
                sender=env.sender,
                canister_id=canister_id,
                method=env.method_name,
                arg=env.arg,
                expiry_ns=env.ingress_expiry,
            )
        if not synchronous:
            return web.Response(status=202)
        waiter = replica.wait_certified(request_id)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.devnet.sync_call_timeout_s)
        except asyncio.TimeoutError:
            replica.cancel_wait(request_id, waiter)
            return _text(
                202, "Message did not complete execution and certification within the replica defined timeout."
            )
        layout: DelegationFormat = "tree" if version == "v4" else "flat"
        certificate = self.replica.read_state_certificate([[b"request_status", request_id]], layout)
        return _cbor_response({"certificate": certificate, "status": "replied"})  # sorted, as the replica's BTreeMap

    @staticmethod
    def _non_replicated(reject: Reject, *, with_status: bool) -> dict[str, Any]:
        # The replica builds these answers as CBOR BTreeMaps, so the keys come sorted.
        body: dict[str, Any] = {
            "error_code": reject.error_code,
            "reject_code": reject.code,
            "reject_message": reject.message,
        }
        if with_status:
            body["status"] = "non_replicated_rejection"
        return body

    async def query(self, request: web.Request) -> web.Response:
        env = await self._envelope(request, ("query",), "query")
        canister_id = env.canister_id
        assert canister_id is not None and env.method_name is not None and env.arg is not None
        replica = self.replica
        settled = replica.settled(canister_id)
        if settled is not None:
            await settled
        fields: dict[str, Any]
        try:
            reply = replica.query(canister_id, env.method_name, env.arg, env.sender)
        except Reject as reject:
            fields = {
                "status": "rejected",
                "reject_code": reject.code,
                "reject_message": reject.message,
                "error_code": reject.error_code,
            }
        else:
            fields = {"status": "replied", "reply": {"arg": reply}}
        signature = replica.sign_response({**fields, "request_id": env.request_id})
        return _cbor_response({**fields, "signatures": [signature]})

    async def read_state(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        env = await self._envelope(request, ("read_state",), "read_state")
        effective = self._principal_in_url(request, "ecid")
        assert env.paths is not None
        self._check_canister_paths(env, effective, version)
        replica = self.replica
        if version == "v3" and replica.delegated:
            # v3 certificates keep /subnet/<id>/canister_ranges only for the root (NNS) subnet.
            return _cbor_response(
                {"certificate": replica.read_state_certificate(env.paths, "tree", hide_subnet_ranges=True)}
            )
        layout: DelegationFormat = "tree" if version == "v3" else "flat"
        return _cbor_response({"certificate": replica.read_state_certificate(env.paths, layout)})

    async def subnet_read_state(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        env = await self._envelope(request, ("read_state",), "read_state")
        effective = self._principal_in_url(request, "subnet_id")
        assert env.paths is not None
        _check_path_count(env.paths)
        for path in env.paths:
            if _subnet_path_allowed(path):
                continue
            if len(path) == 3 and path[0] == b"subnet" and path[2] == b"metrics":
                _check_same_principal(path[1], effective)
                continue
            raise HttpFailure(404, "Invalid path requested.")
        layout: DelegationFormat = "tree" if version == "v3" else "flat"
        return _cbor_response({"certificate": self.replica.read_state_certificate(env.paths, layout)})

    def _check_canister_paths(self, env: Envelope, effective: Principal, version: str) -> None:
        """The replica's authorization of a canister ``read_state``'s paths (``verify_paths``)."""
        assert env.paths is not None
        _check_path_count(env.paths)
        replica = self.replica
        request_id: bytes | None = None
        for path in env.paths:
            n = len(path)
            head = path[0] if path else b""
            if head == b"canister" and (
                (n == 3 and path[2] in (b"controllers", b"module_hash")) or (n == 4 and path[2] == b"metadata")
            ):
                if n == 4:
                    try:
                        path[3].decode()
                    except UnicodeDecodeError as exc:
                        raise HttpFailure(400, f"Could not parse the custom section name: {exc}.") from None
                _check_same_principal(path[1], effective)
            elif head == b"subnet" and n == 3 and path[2] == b"canister_ranges":
                # Flat canister ranges: always on v2; on v3 only for the root (NNS) subnet.
                if version == "v3" and (replica.delegated or path[1] != replica.subnet_id.bytes):
                    raise HttpFailure(404, "Invalid path requested.")
            elif head == b"request_status" and (n == 2 or (n == 3 and path[2] in _REQUEST_STATUS_LEAVES)):
                if len(path[1]) != 32:
                    raise HttpFailure(
                        400, "Invalid request id in paths. Maybe the request ID is not of 32 bytes in length?!"
                    )
                if request_id is not None and request_id != path[1]:
                    raise HttpFailure(
                        400,
                        "More than one non-unique request ID exists in request_status paths: "
                        f"{request_id.hex()} and {path[1].hex()}.",
                    )
                request_id = path[1]
                entry = replica.ingress.get(request_id)
                if entry is not None and entry.sender != env.sender:
                    raise HttpFailure(403, "The user tries to access Request ID not signed by the caller.")
                targets = _delegation_targets(env)
                if entry is not None and targets is not None and entry.canister_id.bytes not in targets:
                    raise HttpFailure(
                        403,
                        "The user tries to access request IDs for canisters not belonging to sender delegation "
                        "targets.",
                    )
            elif not _common_path_allowed(path):
                raise HttpFailure(404, "Invalid path requested.")


_REQUEST_STATUS_LEAVES: Final = frozenset({b"status", b"reply", b"reject_code", b"reject_message", b"error_code"})
_BOUNDARY_NODE_LEAVES: Final = frozenset({b"domain", b"ipv4_address", b"ipv6_address"})


def _common_path_allowed(path: list[bytes]) -> bool:
    """Paths both read_state endpoints allow: time, API boundary nodes, subnet keys and nodes."""
    n = len(path)
    if n == 0:
        return False
    head = path[0]
    if head == b"time":
        return n == 1
    if head == b"api_boundary_nodes":
        return n <= 2 or (n == 3 and path[2] in _BOUNDARY_NODE_LEAVES)
    if head == b"subnet":
        return (
            n <= 2
            or (n == 3 and path[2] in (b"public_key", b"node"))
            or (n == 4 and path[2] == b"node")
            or (n == 5 and path[2] == b"node" and path[4] == b"public_key")
        )
    return False


def _subnet_path_allowed(path: list[bytes]) -> bool:
    """Paths the subnet read_state endpoint allows besides ``/subnet/<id>/metrics``."""
    if len(path) == 3 and path[0] == b"subnet" and path[2] == b"canister_ranges":
        return True
    if path and path[0] == b"canister_ranges":  # the sharded layout: /canister_ranges/<subnet_id>/<shard>
        return len(path) <= 3
    return _common_path_allowed(path)


def _check_path_count(paths: list[list[bytes]]) -> None:
    if len(paths) > MAX_PATHS:
        raise HttpFailure(400, f"Too many paths: {len(paths)} (at most {MAX_PATHS})")


def _check_same_principal(raw: bytes, effective: Principal) -> None:
    try:
        requested = Principal(raw)
    except InvalidPrincipal as exc:
        raise HttpFailure(400, f"Could not parse principal ID: {exc}.") from None
    if requested != effective:
        raise HttpFailure(
            400, f"Effective principal id in URL {effective} does not match requested principal id: {requested}."
        )


def _delegation_targets(env: Envelope) -> set[bytes] | None:
    """The canisters the sender's delegations allow (their intersection), or None when unrestricted."""
    allowed: set[bytes] | None = None
    for link in env.sender_delegation or ():
        targets = link["delegation"].get("targets")
        if targets is not None:
            allowed = set(targets) if allowed is None else allowed & set(targets)
    return allowed


@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn every failure into an HTTP answer; nothing a client sends may escape as an exception."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except HttpFailure as failure:
        return _text(failure.status, failure.text)
    except web.HTTPException:
        raise  # aiohttp's own answers: 404 unknown route, 405, 413 body too large
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal error answering %s %s", request.method, request.path)
        return _text(500, "Internal error in the devnet (see its log).")


def build_app(devnet: Devnet) -> web.Application:
    """The aiohttp application serving ``devnet``'s replica."""
    api = _Api(devnet)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors_middleware])
    app.router.add_get("/api/v2/status", api.status)
    app.router.add_get("/_devnet/canisters", api.canisters)
    # The v3 query and read_state endpoints came with the v4 call (both use the sharded canister ranges).
    calls = "234"[: devnet.max_api_version - 1]
    reads = "23" if devnet.max_api_version >= 4 else "2"
    app.router.add_post(rf"/api/{{version:v[{calls}]}}/canister/{{ecid}}/call", api.call)
    app.router.add_post(rf"/api/{{version:v[{reads}]}}/canister/{{ecid}}/query", api.query)
    app.router.add_post(rf"/api/{{version:v[{reads}]}}/canister/{{ecid}}/read_state", api.read_state)
    app.router.add_post(rf"/api/{{version:v[{reads}]}}/subnet/{{subnet_id}}/read_state", api.subnet_read_state)
    return app


def _default_canisters() -> dict[str, type[Canister]]:
    """The demo canisters, when the CDK's ``icws_fast.devnet.canisters`` provides them."""
    try:
        from icws_fast.devnet.canisters import DEMO_CANISTERS  # noqa: PLC0415 - optional, written separately
    except ImportError:
        log.warning("icws_fast.devnet.canisters.DEMO_CANISTERS is not available: no canisters are hosted")
        return {}
    return dict(DEMO_CANISTERS)


class Devnet:
    """An in-process devnet: ``async with Devnet(address="127.0.0.1:0") as dn: ... dn.url ...``.

    ``canisters`` maps names to canister classes or :class:`~icws_fast.devnet.wasm.WasmCanister`
    modules (default: the demo canisters). With ``state_dir``
    the keys and the canisters' state persist across restarts (same ids, root key and state);
    ``root_key_file`` loads or stores the BLS root secret key; ``subnet_delegation`` certifies
    through a delegation from the root key to a subnet key; ``root_key_seed`` derives the root key
    deterministically when neither file gives one; ``sync_call_timeout_s`` bounds how long a v3/v4
    call waits for its certificate before answering ``202`` (10 s, as the replica); ``max_api_version``
    (2, 3 or 4) hides the newer endpoints (see the module docstring). :meth:`stop` and
    :meth:`start` can be called again (the replica's state is kept in memory and the port is
    reused) to simulate a replica going away under load.

    Not modelled: the management canister (``aaaaa-aa`` answers IC0301), cycles, inter-canister
    calls made by Python canisters (Wasm canisters make them), and the ``received``/``processing``
    request states (a message executes in the round that inducts it). A trap rolls back the
    canister's certified data and the timers the message set; its Python attributes only for
    canisters that set ``ROLLBACK_ON_TRAP`` (a Wasm canister's whole state).
    """

    def __init__(
        self,
        address: str = "127.0.0.1:0",
        canisters: Mapping[str, CanisterSpec] | None = None,
        *,
        round_ms: float = DEFAULT_ROUND_MS,
        state_dir: str | os.PathLike[str] | None = None,
        root_key_file: str | os.PathLike[str] | None = None,
        subnet_delegation: bool = False,
        root_key_seed: bytes | None = None,
        sync_call_timeout_s: float = SYNC_CALL_TIMEOUT_S,
        max_api_version: int = 4,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address must be host:port, got {address!r}")
        if max_api_version not in (2, 3, 4):
            raise ValueError(f"max_api_version must be 2, 3 or 4, got {max_api_version!r}")
        self.max_api_version = max_api_version
        self.host = host.strip("[]")
        self.port = int(port)
        self.round_s = round_ms / 1000
        self.sync_call_timeout_s = sync_call_timeout_s
        self.state_dir = Path(state_dir) if state_dir is not None else None
        canister_classes: dict[str, CanisterSpec] = dict(_default_canisters() if canisters is None else canisters)
        keys = storage.load_keys(
            self.state_dir,
            Path(root_key_file) if root_key_file is not None else None,
            subnet_delegation=subnet_delegation,
            root_key_seed=root_key_seed,
        )
        saved = storage.load_canisters(self.state_dir) if self.state_dir is not None else None
        self.replica = Replica(
            canister_classes,
            keys,
            canister_indices=saved.indices if saved else None,
            restored=saved.canisters if saved else None,
        )
        self._runner: web.AppRunner | None = None
        self._rounds: asyncio.Task[None] | None = None
        self._last_persist = 0.0

    # -- properties ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def root_key_der(self) -> bytes:
        return self.replica.root_key_der

    @property
    def canister_ids(self) -> dict[str, Principal]:
        return dict(self.replica.canister_ids)

    @property
    def subnet_id(self) -> Principal:
        return self.replica.subnet_id

    def info(self) -> dict[str, Any]:
        """What the CLI prints on start and ``GET /_devnet/canisters`` serves."""
        return {
            "canisters": {name: str(canister_id) for name, canister_id in self.replica.canister_ids.items()},
            "root_key": self.root_key_der.hex(),
            "url": self.url,
        }

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve HTTP and run rounds (on the port of the previous start, if any)."""
        if self._runner is not None:
            return
        runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False)
        await runner.setup()
        # A gateway opens up to --max-concurrent-calls connections at once in a burst of opens; aiohttp's default
        # backlog (128) would drop their SYNs (each retried a second later).
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True, backlog=LISTEN_BACKLOG)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self._runner = runner
        self._rounds = asyncio.create_task(self._run_rounds(), name="icws-devnet-rounds")
        log.info(
            "devnet serving at %s: subnet %s (%s), %d canister(s), %g ms rounds",
            self.url,
            self.subnet_id,
            "through a delegation" if self.replica.delegated else "root-signed",
            len(self.replica.canister_ids),
            self.round_s * 1000,
        )

    async def stop(self) -> None:
        """Stop serving (open connections are closed) and persist the state when a state dir is set."""
        rounds, self._rounds = self._rounds, None
        if rounds is not None:
            rounds.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rounds
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.persist()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Devnet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def persist(self) -> None:
        """Write the canisters' state to the state dir (no-op without one)."""
        if self.state_dir is not None:
            storage.save_canisters(self.state_dir, self.replica)

    def _finish_round(self, steps: Iterator[None]) -> None:
        try:
            for _ in steps:
                pass
        except Exception:
            log.exception("round %d failed", self.replica.round + 1)

    async def _run_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        # On the IC queries run beside execution; here they share one thread with the rounds, and the queries
        # of a canister that executed wait for the round's certification. So a round that overran its slot is
        # still followed by half a round without one: the queries released by its certification, and those
        # their answers lead to (a gateway's next polls), are served before the next round blocks them again.
        # Without that pause an overloaded devnet ran rounds back to back and answered one poll per gateway
        # pipeline slot per round, which only made it fall further behind.
        min_pause = self.round_s / 2
        next_round = loop.time()
        while True:
            next_round = max(next_round + self.round_s, loop.time() + min_pause)
            await asyncio.sleep(next_round - loop.time())
            steps = self.replica.round_steps()
            try:
                for _ in steps:
                    # Serve requests between two executions: a round of many messages must not stall the server.
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                # Stopped in the middle of a round: finish it, so that no executed message is lost.
                self._finish_round(steps)
                raise
            except Exception:
                log.exception("round %d failed", self.replica.round + 1)
            if self.state_dir is not None and loop.time() - self._last_persist >= PERSIST_INTERVAL_S:
                self._last_persist = loop.time()
                self.persist()
