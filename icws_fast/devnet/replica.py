"""The devnet's replicated state machine: one subnet, one node, Python canisters, certified rounds.

Transport-free: the HTTP layer (:mod:`icws_fast.devnet.server`) validates envelopes and calls
:meth:`Replica.submit`, :meth:`Replica.query` and :meth:`Replica.read_state_certificate`; a
round timer calls :meth:`Replica.run_round`.

A round, as on the IC: induct the queued ingress messages in arrival order and execute them (one
canister runs one message at a time: Python canister code never awaits), run the timers that are
due at the round's time, prune the ingress history, then update the state tree, hash it and sign
its root once (BLS). Every ``read_state`` and every synchronous call of that round is answered
with a witness of that one signed tree, so a round costs one signature however many requests it
serves. The server runs a round step by step (:meth:`Replica.round_steps`), answering requests
between two executions against the certified state; only the canisters that already executed in
the round make their queries wait for its certification.

Canister ids follow a local replica's scheme: the 8-byte big-endian index followed by
``0x01 0x01``; the first canister has index 0 (``rwlgt-iiaaa-aaaaa-aaaaa-cai``). The subnet
hosts the range ``[index 0, index 0xFFFFF]``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time as _time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from icws_fast.cdk.api import Canister
from icws_fast.devnet.runtime import CanisterHost, Reject, canister_not_found, method_not_found, trapped
from icws_fast.devnet.tree import FrozenLeaves, LabeledMap, prune_path
from icws_fast.devnet.wasm import Network, WasmCanister, WasmHost, WasmState
from icws_fast.ic import bls, cbor
from icws_fast.ic.certificate import STATE_ROOT_DOMAIN, sign_certificate
from icws_fast.ic.hashtree import Node
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import RESPONSE_DOMAIN, hash_of_map, leb128

log = logging.getLogger(__name__)

CANISTER_RANGE_SIZE: Final = 1 << 20
# How long a replied/rejected status stays after the request expired ("done"), before it is forgotten.
DONE_RETENTION_NS: Final = 60 * 1_000_000_000
# Delegation certificates are re-signed this often, so their /time stays recent like the IC's.
DELEGATION_REFRESH_NS: Final = 5 * 60 * 1_000_000_000

DelegationFormat = Literal["flat", "tree"]
#: What the replica hosts under a name: a Python canister class or a Wasm module.
CanisterSpec = type[Canister] | WasmCanister
#: A hosted canister of either kind (they share the interface the replica uses).
Host = CanisterHost | WasmHost


def canister_id_from_index(index: int) -> Principal:
    """The canister id of a local replica's ``index``-th canister."""
    return Principal(index.to_bytes(8, "big") + b"\x01\x01")


@dataclass(slots=True)
class IngressStatus:
    """One entry of the ingress history (``/request_status/<request_id>``)."""

    status: str  # "replied" | "rejected" | "done" (messages execute in the round that inducts them)
    sender: Principal
    canister_id: Principal
    expiry_ns: int
    reply: bytes | None = None
    reject: Reject | None = None

    def subtree(self) -> FrozenLeaves:
        entries: dict[bytes, bytes] = {b"status": self.status.encode()}
        if self.status == "replied" and self.reply is not None:
            entries[b"reply"] = self.reply
        elif self.status == "rejected" and self.reject is not None:
            entries[b"reject_code"] = leb128(self.reject.code)
            entries[b"reject_message"] = self.reject.message.encode()
            entries[b"error_code"] = self.reject.error_code.encode()
        return FrozenLeaves(entries)


@dataclass
class _Message:
    request_id: bytes
    sender: Principal
    canister_id: Principal
    method: str
    arg: bytes
    expiry_ns: int


@dataclass(frozen=True)
class Keys:
    """The key material of the devnet: root key, optional subnet key (delegation), node key."""

    root_secret_key: bytes
    node_seed: bytes
    subnet_secret_key: bytes | None = None


class Replica:
    """The state of the devnet subnet and the logic of rounds; no I/O."""

    def __init__(
        self,
        canisters: Mapping[str, CanisterSpec],
        keys: Keys,
        *,
        canister_indices: Mapping[str, int] | None = None,
        restored: Mapping[str, tuple[Canister | WasmState, bytes]] | None = None,
        clock: Callable[[], int] = _time.time_ns,
    ) -> None:
        self.clock = clock
        self.keys = keys
        self.root_key_der = bls.der_encode_public_key(bls.public_key(keys.root_secret_key))
        self._node = Ed25519Identity.from_seed(keys.node_seed)
        self.node_id = Principal.self_authenticating(self._node.der_public_key)
        if keys.subnet_secret_key is None:
            # Without a delegation the certificates come from the root subnet, whose id agents derive
            # from the root key (ic-agent: Principal::self_authenticating(root_key)).
            self._signing_key = keys.root_secret_key
            self.subnet_key_der = self.root_key_der
        else:
            self._signing_key = keys.subnet_secret_key
            self.subnet_key_der = bls.der_encode_public_key(bls.public_key(keys.subnet_secret_key))
        self.subnet_id = Principal.self_authenticating(self.subnet_key_der)
        self.delegated = keys.subnet_secret_key is not None
        self.range_low = canister_id_from_index(0)
        self.range_high = canister_id_from_index(CANISTER_RANGE_SIZE - 1)

        self.time_ns = self.clock()
        self.round = 0
        # Assign ids: persisted names keep their index; new names take the next free ones, in order.
        self.canister_indices: dict[str, int] = dict(canister_indices or {})
        next_index = max(self.canister_indices.values(), default=-1) + 1
        for name in canisters:
            if name not in self.canister_indices:
                self.canister_indices[name] = next_index
                next_index += 1
        self.canister_ids: dict[str, Principal] = {}
        self.hosts: dict[Principal, Host] = {}
        # Inter-canister calls (Wasm canisters make them) are delivered among these hosts.
        self.network = Network(self.hosts)
        for name, canister_class in canisters.items():
            canister_id = canister_id_from_index(self.canister_indices[name])
            self.canister_ids[name] = canister_id
            saved = (restored or {}).get(name)
            if isinstance(canister_class, WasmCanister):
                self.hosts[canister_id] = self._install_wasm(canister_id, name, canister_class, saved)
                continue
            if saved is not None and isinstance(saved[0], canister_class):
                host = CanisterHost.restore(canister_id, canister_class, saved[0], saved[1], self.time_ns)
            else:
                host = CanisterHost.install(canister_id, canister_class, self.time_ns)
            self.hosts[canister_id] = host

        self.ingress: dict[bytes, IngressStatus] = {}
        self._queue: list[_Message] = []
        self._queued: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        # The canisters that executed in the round under way (see round_steps), and the queries waiting for it.
        self.executing: set[Principal] = set()
        self._settled: list[asyncio.Future[None]] = []
        self._expiring: list[tuple[int, bytes]] = []
        self._forgetting: list[tuple[int, bytes]] = []

        self._requests = LabeledMap()
        self._canisters = LabeledMap()
        self._certified_data: dict[Principal, bytes] = {}
        self._root = LabeledMap(
            {
                b"time": leb128(self.time_ns),
                b"request_status": self._requests,
                b"canister": self._canisters,
                b"subnet": self._subnet_subtree(),
                b"canister_ranges": self._ranges_subtree(),
            }
        )
        self._signature = b""
        self._delegations: dict[DelegationFormat, dict[str, Any]] = {}
        self._delegation_time = 0
        self._data_certificates: dict[Principal, bytes] = {}
        self.run_round()

    def _install_wasm(
        self, canister_id: Principal, name: str, spec: WasmCanister, saved: tuple[Canister | WasmState, bytes] | None
    ) -> WasmHost:
        if saved is not None and isinstance(saved[0], WasmState):
            return WasmHost.restore(canister_id, name, spec, self.network, saved[0], self.time_ns)
        return WasmHost.install(canister_id, name, spec, self.network, self.time_ns)

    # -- static parts of the tree ----------------------------------------------------------------------

    def _ranges_cbor(self) -> bytes:
        return cbor.encode([[self.range_low.bytes, self.range_high.bytes]])

    def _subnet_subtree(self) -> LabeledMap:
        entries: dict[bytes, Any] = {b"public_key": self.subnet_key_der, b"canister_ranges": self._ranges_cbor()}
        entries[b"node"] = LabeledMap({self.node_id.bytes: LabeledMap({b"public_key": self._node.der_public_key})})
        return LabeledMap({self.subnet_id.bytes: LabeledMap(entries)})

    @staticmethod
    def _canister_subtree(host: Host) -> LabeledMap:
        """``/canister/<id>``: certified data, a module hash (of the class's qualified name, standing in
        for the Wasm module), the controllers (none: the devnet installs the canisters itself) and the
        public ``candid:service`` metadata that tools read to learn the interface."""
        return LabeledMap(
            {
                b"certified_data": host.certified_data,
                b"controllers": cbor.encode([]),
                b"metadata": LabeledMap({b"candid:service": host.candid_service().encode()}),
                b"module_hash": host.module_hash,
            }
        )

    def _ranges_subtree(self) -> LabeledMap:
        # /canister_ranges/<subnet_id>/<shard>: one shard, labeled by the lowest canister id it holds.
        return LabeledMap({self.subnet_id.bytes: LabeledMap({self.range_low.bytes: self._ranges_cbor()})})

    # -- delegation ---------------------------------------------------------------------------------------

    def _refresh_delegations(self) -> None:
        """Sign the root subnet's delegation certificates (flat and tree layouts of the canister ranges)."""
        subnet_entries: dict[bytes, Any] = {b"public_key": self.subnet_key_der}
        layouts: dict[DelegationFormat, LabeledMap] = {
            # The older layout: /subnet/<id>/canister_ranges (api v2 endpoints and v3 call).
            "flat": LabeledMap(
                {
                    b"time": leb128(self.time_ns),
                    b"subnet": LabeledMap(
                        {self.subnet_id.bytes: LabeledMap({**subnet_entries, b"canister_ranges": self._ranges_cbor()})}
                    ),
                }
            ),
            # The sharded layout: /canister_ranges/<id>/<shard> (v4 call, v3 read_state and query).
            "tree": LabeledMap(
                {
                    b"time": leb128(self.time_ns),
                    b"subnet": LabeledMap({self.subnet_id.bytes: LabeledMap(subnet_entries)}),
                    b"canister_ranges": self._ranges_subtree(),
                }
            ),
        }
        for layout, tree in layouts.items():
            certificate = sign_certificate(tree.full(), self.keys.root_secret_key)
            self._delegations[layout] = {"subnet_id": self.subnet_id.bytes, "certificate": certificate}
        self._delegation_time = self.time_ns

    def certificate(self, tree: Node, layout: DelegationFormat = "flat") -> bytes:
        """Encode a certificate for ``tree``, a witness of the latest certified state."""
        content: dict[str, Any] = {"tree": tree, "signature": self._signature}
        if self.delegated:
            content["delegation"] = self._delegations[layout]
        return cbor.encode(content)

    # -- ingress ---------------------------------------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        """How many ingress messages wait for the next round."""
        return len(self._queue)

    def known_request(self, request_id: bytes) -> bool:
        """Whether a request id is queued, executing or in the ingress history (a replay is not executed again)."""
        return request_id in self.ingress or request_id in self._queued

    def submit(
        self,
        request_id: bytes,
        *,
        sender: Principal,
        canister_id: Principal,
        method: str,
        arg: bytes,
        expiry_ns: int,
    ) -> None:
        """Queue an ingress message for the next round; a known request id is ignored (no re-execution)."""
        if self.known_request(request_id):
            return
        self._queued.add(request_id)
        self._queue.append(_Message(request_id, sender, canister_id, method, arg, expiry_ns))

    def ingress_precheck(
        self, canister_id: Principal, method: str, arg: bytes = b"", sender: Principal | None = None
    ) -> Reject | None:
        """The IC's ingress filter: the reject a call gets before it is even accepted, if any.

        A Wasm canister that exports ``canister_inspect_message`` is asked too (with ``arg`` and ``sender``).
        """
        host = self.hosts.get(canister_id)
        if host is None:
            return canister_not_found(canister_id)
        if host.method_kind(method) is None:
            return method_not_found(canister_id, "update", method)
        if isinstance(host, WasmHost):
            return host.inspect_message(method, arg, sender or Principal.anonymous(), self.time_ns)
        return None

    def wait_certified(self, request_id: bytes) -> asyncio.Future[None]:
        """A future resolved after the round that certifies a final status for ``request_id``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if request_id in self.ingress:
            future.set_result(None)
        else:
            self._waiters.setdefault(request_id, []).append(future)
        return future

    def cancel_wait(self, request_id: bytes, future: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(request_id)
        if waiters is not None and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[request_id]

    # -- queries --------------------------------------------------------------------------------------------

    def query(self, canister_id: Principal, method: str, arg: bytes, sender: Principal) -> bytes:
        """Run a query against the current state (at its certified time); raises :class:`Reject`."""
        host = self.hosts.get(canister_id)
        if host is None:
            raise canister_not_found(canister_id)
        try:
            return host.execute(
                method,
                arg,
                sender,
                self.time_ns,
                is_query=True,
                certificate=lambda: self.data_certificate(canister_id),
            )
        except Reject:
            raise
        except Exception as exc:  # a host fault (e.g. a state that cannot be copied) rejects this query only
            log.exception("canister %s: query %s failed", canister_id, method)
            raise trapped(canister_id, exc) from None

    def data_certificate(self, canister_id: Principal) -> bytes:
        """The latest round's certificate of ``canister_id``'s certified data (what ic0.data_certificate gives)."""
        certificate = self._data_certificates.get(canister_id)
        if certificate is None:
            tree = self._root.witness([(b"time",), (b"canister", canister_id.bytes, b"certified_data")])
            certificate = self._data_certificates[canister_id] = self.certificate(tree)
        return certificate

    def sign_response(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A node signature over a query response (``fields`` carries status, reply/reject, request_id)."""
        timestamp = self.clock()
        signed = RESPONSE_DOMAIN + hash_of_map({**fields, "timestamp": timestamp})
        return {"timestamp": timestamp, "signature": self._node.sign(signed), "identity": self.node_id.bytes}

    # -- read_state -------------------------------------------------------------------------------------------

    def read_state_certificate(
        self, paths: list[list[bytes]], layout: DelegationFormat, *, hide_subnet_ranges: bool = False
    ) -> bytes:
        """A certificate of the latest certified state revealing ``paths`` (and always ``/time``).

        ``hide_subnet_ranges`` prunes ``/subnet/<id>/canister_ranges`` of this (non-root) subnet, as
        the replica's v3 endpoints do.
        """
        tree = self._root.witness([[b"time"], *paths])
        if hide_subnet_ranges:
            tree = prune_path(tree, [b"subnet", self.subnet_id.bytes, b"canister_ranges"])
        return self.certificate(tree, layout)

    # -- rounds --------------------------------------------------------------------------------------------------

    def run_round(self) -> None:
        """Execute one round and certify the resulting state."""
        for _ in self.round_steps():
            pass

    def round_steps(self) -> Iterator[None]:
        """One round, pausing (``yield``) after each execution so that a server can answer requests meanwhile.

        Between two steps the certified state is still the previous round's: the ingress history, the
        state tree, its signature and :attr:`time_ns` change only in the last step, where the round is
        certified. A canister that executed in this round is in :attr:`executing` until then, and
        queries must not run against it (:meth:`settled`), since its state is not certified yet; any
        other canister's state is still the certified one. Run the generator to its end even when the
        caller is cancelled, or the round's messages are lost.
        """
        now = max(self.clock(), self.time_ns + 1)
        queue, self._queue = self._queue, []
        records: list[tuple[bytes, IngressStatus]] = []
        for message in queue:
            records.append((message.request_id, self._execute(message, now)))
            self.executing.add(message.canister_id)
            yield
        for canister_id, host in self.hosts.items():
            if host.run_due_timers(now):
                self.executing.add(canister_id)
                yield
        self._certify(now, records)

    def _certify(self, now: int, records: list[tuple[bytes, IngressStatus]]) -> None:
        """The end of a round: record the executed messages, update the state tree, sign it (once)."""
        self.time_ns = now
        self.round += 1
        for request_id, entry in records:
            self._record(request_id, entry)
        self._queued.difference_update(request_id for request_id, _ in records)
        for canister_id, host in self.hosts.items():
            if self._certified_data.get(canister_id) != host.certified_data:
                self._certified_data[canister_id] = host.certified_data
                self._canisters.set(canister_id.bytes, self._canister_subtree(host))
        self._prune(now)

        self._root.set(b"time", leb128(now))
        self._root.set(b"request_status", self._requests)
        self._root.set(b"canister", self._canisters)
        # One signature per round: every witness of this tree has the same root hash, so all the
        # certificates of the round share it (sign_certificate would sign once per certificate).
        root_hash = self._root.root_hash()
        self._signature = bls.sign(self._signing_key, STATE_ROOT_DOMAIN + root_hash)
        if self.delegated and now - self._delegation_time >= DELEGATION_REFRESH_NS:
            self._refresh_delegations()
        self._data_certificates.clear()

        self.executing.clear()
        settled, self._settled = self._settled, []
        for future in settled:
            if not future.done():
                future.set_result(None)
        for request_id, _ in records:
            for future in self._waiters.pop(request_id, ()):
                if not future.done():
                    future.set_result(None)

    def settled(self, canister_id: Principal) -> asyncio.Future[None] | None:
        """None when queries may run against ``canister_id`` now; else a future resolved when they may.

        That is when the canister executed in the round under way: its state is then ahead of the
        certified state (and of its data certificate) until the round is certified.
        """
        if canister_id not in self.executing:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settled.append(future)
        return future

    def _execute(self, message: _Message, now: int) -> IngressStatus:
        entry = IngressStatus("replied", message.sender, message.canister_id, message.expiry_ns)
        host = self.hosts.get(message.canister_id)
        try:
            if host is None:
                raise canister_not_found(message.canister_id)
            entry.reply = host.execute(message.method, message.arg, message.sender, now, is_query=False)
        except Reject as reject:
            entry.reject = reject
            entry.status = "rejected"
        except Exception as exc:
            # A fault of the host (say, a canister state that cannot be snapshotted) fails this message
            # only: the round goes on and certifies every other message.
            log.exception("canister %s: executing %s failed", message.canister_id, message.method)
            entry.reject = trapped(message.canister_id, exc)
            entry.status = "rejected"
        return entry

    def _record(self, request_id: bytes, entry: IngressStatus) -> None:
        self.ingress[request_id] = entry
        self._requests.set(request_id, entry.subtree())
        heapq.heappush(self._expiring, (entry.expiry_ns, request_id))

    def _prune(self, now: int) -> None:
        """Expired requests lose their reply (status ``done``); later they are forgotten entirely."""
        while self._expiring and self._expiring[0][0] < now:
            expiry, request_id = heapq.heappop(self._expiring)
            entry = self.ingress.get(request_id)
            if entry is not None:
                entry.status, entry.reply, entry.reject = "done", None, None
                self._requests.set(request_id, entry.subtree())
                heapq.heappush(self._forgetting, (expiry + DONE_RETENTION_NS, request_id))
        while self._forgetting and self._forgetting[0][0] < now:
            _, request_id = heapq.heappop(self._forgetting)
            self.ingress.pop(request_id, None)
            self._requests.delete(request_id)
