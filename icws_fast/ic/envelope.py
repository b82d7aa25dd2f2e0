"""Request envelopes of the IC HTTP interface: build, parse (strictly) and verify them as the IC does.

An envelope is the CBOR map ``{content, sender_pubkey?, sender_sig?, sender_delegation?}``; the
content of a ``call`` / ``query`` names ``canister_id``, ``method_name`` and ``arg``, the content of
a ``read_state`` names ``paths``; every content has ``request_type``, ``sender``, ``ingress_expiry``
and an optional ``nonce``.

:func:`parse_envelope` checks the shape only (types of every field, known request type, principal
lengths, delegation structure) and is cheap: a gateway runs it on every client message.
:func:`verify_envelope` runs the checks the IC applies before it accepts a request: ingress expiry
window, sender authentication, delegation chain, signature, effective canister id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from icws_fast.errors import CborError, EnvelopeError, InvalidPrincipal, SignatureError
from icws_fast.ic import cbor
from icws_fast.ic.identity import Identity, delegation_signing_message, verify_signature
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import REQUEST_DOMAIN, request_id

REQUEST_TYPES: Final = frozenset({"call", "query", "read_state"})
MAX_INGRESS_TTL_NS: Final = 5 * 60 * 1_000_000_000
PERMITTED_DRIFT_NS: Final = 30 * 1_000_000_000
MAX_DELEGATIONS: Final = 20
MAX_DELEGATION_TARGETS: Final = 1000
_DEFAULT_EXPIRY_NS: Final = 4 * 60 * 1_000_000_000
_MINUTE_NS: Final = 60 * 1_000_000_000
_U64_LIMIT: Final = 1 << 64

_COMMON_FIELDS: Final = frozenset({"request_type", "sender", "ingress_expiry", "nonce"})
_CALL_FIELDS: Final = _COMMON_FIELDS | {"canister_id", "method_name", "arg"}
_READ_STATE_FIELDS: Final = _COMMON_FIELDS | {"paths"}
_ENVELOPE_FIELDS: Final = frozenset({"content", "sender_pubkey", "sender_sig", "sender_delegation"})
_DELEGATION_FIELDS: Final = frozenset({"pubkey", "expiration", "targets", "permissions"})
#: A delegation's optional ``permissions`` (interface spec, read-only delegations): ``"queries"`` lets the
#: delegated key sign queries and read_state requests only, ``"all"`` (like no field) every request type.
DELEGATION_PERMISSIONS: Final = frozenset({"queries", "all"})


def default_ingress_expiry(now_ns: int | None = None) -> int:
    """Now plus 4 minutes, rounded down to a whole minute (as agents do).

    Four minutes keeps the expiry inside the IC's 5-minute window despite some clock skew; the
    rounding makes requests of the same minute share an expiry, which lets boundary nodes cache queries.
    """
    now = time.time_ns() if now_ns is None else now_ns
    return (now + _DEFAULT_EXPIRY_NS) // _MINUTE_NS * _MINUTE_NS


def call_content(
    sender: Principal,
    canister_id: Principal,
    method_name: str,
    arg: bytes,
    *,
    ingress_expiry_ns: int | None = None,
    nonce: bytes | None = None,
    request_type: str = "call",
) -> dict[str, Any]:
    """The content map of a ``call`` (or, with ``request_type="query"``, a ``query``)."""
    if request_type not in ("call", "query"):
        raise ValueError(f"call_content builds call or query content, not {request_type!r}")
    content: dict[str, Any] = {
        "request_type": request_type,
        "sender": sender.bytes,
        "canister_id": canister_id.bytes,
        "method_name": method_name,
        "arg": bytes(arg),
        "ingress_expiry": default_ingress_expiry() if ingress_expiry_ns is None else ingress_expiry_ns,
    }
    if nonce is not None:
        content["nonce"] = bytes(nonce)
    return content


def read_state_content(
    sender: Principal,
    paths: Sequence[Sequence[bytes]],
    *,
    ingress_expiry_ns: int | None = None,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """The content map of a ``read_state`` for ``paths`` (each a sequence of byte-string labels)."""
    content: dict[str, Any] = {
        "request_type": "read_state",
        "sender": sender.bytes,
        "paths": [[bytes(label) for label in path] for path in paths],
        "ingress_expiry": default_ingress_expiry() if ingress_expiry_ns is None else ingress_expiry_ns,
    }
    if nonce is not None:
        content["nonce"] = bytes(nonce)
    return content


def build_envelope(identity: Identity, content: dict[str, Any], *, rid: bytes | None = None) -> bytes:
    """Sign ``content`` with ``identity`` and encode the envelope (CBOR, self-describe tag).

    An anonymous identity yields ``{content}`` only. ``content["sender"]`` must be the identity's principal.
    ``rid`` is ``request_id(content)`` when the caller needs it too and has computed it (it is what is signed).
    """
    sender = content.get("sender")
    if (sender.bytes if isinstance(sender, Principal) else sender) != identity.sender.bytes:
        raise ValueError("content sender is not the identity's principal")
    envelope: dict[str, Any] = {"content": content}
    der = identity.der_public_key
    if der is not None:
        envelope["sender_pubkey"] = der
        envelope["sender_sig"] = identity.sign(REQUEST_DOMAIN + (request_id(content) if rid is None else rid))
        delegations = identity.delegations
        if delegations:
            envelope["sender_delegation"] = delegations
    return cbor.encode(envelope)


class Envelope:
    """An envelope whose shape has been validated, as :func:`parse_envelope` returns it.

    The content fields are exposed as attributes; those of the other request kind are None.
    """

    __slots__ = (
        "_request_id",
        "arg",
        "canister_id",
        "content",
        "ingress_expiry",
        "method_name",
        "nonce",
        "paths",
        "request_type",
        "sender",
        "sender_delegation",
        "sender_pubkey",
        "sender_sig",
    )

    _request_id: bytes | None
    content: dict[str, Any]
    sender_pubkey: bytes | None
    sender_sig: bytes | None
    sender_delegation: list[dict[str, Any]] | None
    request_type: str
    sender: Principal
    ingress_expiry: int
    nonce: bytes | None
    canister_id: Principal | None
    method_name: str | None
    arg: bytes | None
    paths: list[list[bytes]] | None

    @property
    def request_id(self) -> bytes:
        """The request id (representation-independent hash of the content), computed once."""
        if self._request_id is None:
            self._request_id = request_id(self.content)
        return self._request_id

    def to_cbor(self) -> bytes:
        """Encode the envelope again (CBOR, self-describe tag), e.g. to relay it to a replica."""
        envelope: dict[str, Any] = {"content": self.content}
        if self.sender_pubkey is not None:
            envelope["sender_pubkey"] = self.sender_pubkey
        if self.sender_sig is not None:
            envelope["sender_sig"] = self.sender_sig
        if self.sender_delegation is not None:
            envelope["sender_delegation"] = self.sender_delegation
        return cbor.encode(envelope)

    def __repr__(self) -> str:
        target = self.method_name if self.paths is None else f"{len(self.paths)} paths"
        return f"<Envelope {self.request_type} {target} from {self.sender}>"


def _blob(obj: Mapping[str, Any], key: str, where: str) -> bytes:
    value = obj.get(key)
    if type(value) is not bytes:
        raise EnvelopeError(f"{where}.{key} must be a byte string, got {type(value).__name__}")
    return value


def _optional_blob(obj: Mapping[str, Any], key: str, where: str) -> bytes | None:
    return None if obj.get(key) is None else _blob(obj, key, where)


def _nat64(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    # `type(...) is int` also rejects bool, which CBOR true/false decode to.
    if type(value) is not int or not 0 <= value < _U64_LIMIT:
        raise EnvelopeError(f"{where}.{key} must be a 64-bit natural number")
    return value


def _principal(obj: Mapping[str, Any], key: str, where: str) -> Principal:
    try:
        return Principal(_blob(obj, key, where))
    except InvalidPrincipal as exc:
        raise EnvelopeError(f"{where}.{key}: {exc}") from None


def _check_fields(obj: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if type(obj) is not dict:
        raise EnvelopeError(f"{where} must be a map")
    unknown = obj.keys() - allowed
    if unknown:
        raise EnvelopeError(f"{where} has unknown fields {sorted(map(str, unknown))}")
    return obj


def _lenient_request_id(content: dict[str, Any]) -> bytes:
    """The request id of a ``content`` map holding fields this code does not know, or EnvelopeError."""
    if not all(type(key) is str for key in content):
        raise EnvelopeError("content has a field name that is not text")
    try:
        return request_id(content)
    except (TypeError, ValueError, AttributeError) as exc:  # a float, a negative integer, a map keyed by numbers
        raise EnvelopeError(f"content holds a value no request id covers: {exc}") from None


def _parse_delegations(value: Any) -> list[dict[str, Any]]:
    if type(value) is not list:
        raise EnvelopeError("sender_delegation must be an array")
    if not 0 < len(value) <= MAX_DELEGATIONS:
        raise EnvelopeError(f"sender_delegation must hold 1 to {MAX_DELEGATIONS} delegations, not {len(value)}")
    for i, link in enumerate(value):
        where = f"sender_delegation[{i}]"
        _check_fields(link, frozenset({"delegation", "signature"}), where)
        _blob(link, "signature", where)
        delegation = _check_fields(link.get("delegation"), _DELEGATION_FIELDS, f"{where}.delegation")
        _blob(delegation, "pubkey", f"{where}.delegation")
        _nat64(delegation, "expiration", f"{where}.delegation")
        if "targets" in delegation:
            targets = delegation["targets"]
            if type(targets) is not list or len(targets) > MAX_DELEGATION_TARGETS:
                raise EnvelopeError(f"{where}.delegation.targets must be an array of at most 1000 canister ids")
            for target in targets:
                if type(target) is not bytes or len(target) > 29:
                    raise EnvelopeError(f"{where}.delegation.targets holds a malformed canister id")
        # Refused when unknown: a permission this code does not know may restrict more than it can enforce.
        permissions = delegation.get("permissions", "all")
        if type(permissions) is not str or permissions not in DELEGATION_PERMISSIONS:
            raise EnvelopeError(f"{where}.delegation.permissions must be 'queries' or 'all'")
    return value


def parse_envelope(data: bytes | bytearray | memoryview | dict[str, Any], *, strict: bool = True) -> Envelope:
    """Parse an envelope (CBOR bytes, or the map already decoded from an enclosing message).

    Checks the shape only; any malformation raises :class:`~icws_fast.errors.EnvelopeError`.
    ``strict`` refuses content fields this code does not know, as a replica that cannot act on them
    does (the devnet). A relay passes ``strict=False``: a field added to the IC's requests (such as
    ``sender_info``) is covered by the request id and the signature, so it is relayed, not judged; it
    must still be text-keyed and hashable into the request id (which is then computed here).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            obj = cbor.decode(data)
        except CborError as exc:
            raise EnvelopeError(f"malformed envelope CBOR: {exc}") from None
    else:
        obj = data
    obj = _check_fields(obj, _ENVELOPE_FIELDS, "envelope")
    content = obj.get("content")
    if type(content) is not dict:
        raise EnvelopeError("envelope.content must be a map")
    request_type = content.get("request_type")
    # Text first: an array or a map (unhashable) cannot even be looked up in REQUEST_TYPES.
    if type(request_type) is not str or request_type not in REQUEST_TYPES:
        raise EnvelopeError(f"unknown request_type {request_type!r:.60}")
    known = _READ_STATE_FIELDS if request_type == "read_state" else _CALL_FIELDS
    env = Envelope()
    env._request_id = None
    if strict or content.keys() <= known:
        _check_fields(content, known, "content")
    else:
        env._request_id = _lenient_request_id(content)
    env.content = content
    env.request_type = request_type
    env.sender = _principal(content, "sender", "content")
    env.ingress_expiry = _nat64(content, "ingress_expiry", "content")
    env.nonce = _optional_blob(content, "nonce", "content")
    if request_type == "read_state":
        paths = content.get("paths")
        if type(paths) is not list or not all(
            type(path) is list and all(type(label) is bytes for label in path) for path in paths
        ):
            raise EnvelopeError("content.paths must be an array of arrays of byte strings")
        env.paths = paths
        env.canister_id = env.method_name = env.arg = None
    else:
        env.paths = None
        env.canister_id = _principal(content, "canister_id", "content")
        method_name = content.get("method_name")
        if type(method_name) is not str:
            raise EnvelopeError("content.method_name must be a text string")
        env.method_name = method_name
        env.arg = _blob(content, "arg", "content")
    env.sender_pubkey = _optional_blob(obj, "sender_pubkey", "envelope")
    env.sender_sig = _optional_blob(obj, "sender_sig", "envelope")
    delegations = obj.get("sender_delegation")
    env.sender_delegation = None if delegations is None else _parse_delegations(delegations)
    return env


def verify_envelope(
    env: Envelope, *, now_ns: int | None = None, effective_canister_id: Principal | None = None
) -> None:
    """Apply the IC's admission checks to a parsed envelope; raise on the first failure.

    - ``ingress_expiry`` not in the past and at most 5 minutes (+30 s drift) ahead of ``now_ns``;
    - ``effective_canister_id`` (the canister in the URL), when given, equals ``canister_id`` of a
      call/query. Simplification: for calls to the management canister (``aaaaa-aa``) any effective id
      is accepted, as the real rule reads the target canister out of the Candid argument;
    - the anonymous sender carries no key, signature or delegation; any other sender carries a key
      whose self-authenticating principal is the sender, and a signature;
    - each delegation is signed by the previous key, unexpired, lists the target canister when it has
      ``targets`` (the effective canister id of a read_state or management call, else ``canister_id``),
      no key appears twice in the chain, and a call is signed through no delegation with
      ``permissions: "queries"`` (such a chain signs queries and read_state requests only);
    - ``sender_sig`` verifies over ``b"\\x0aic-request" || request_id`` under the last key of the chain.

    Signature failures raise :class:`~icws_fast.errors.SignatureError`, everything else
    :class:`~icws_fast.errors.EnvelopeError`.
    """
    now = time.time_ns() if now_ns is None else now_ns
    if env.ingress_expiry < now:
        raise EnvelopeError(f"ingress_expiry {env.ingress_expiry} is in the past (now {now})")
    if env.ingress_expiry > now + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS:
        raise EnvelopeError(f"ingress_expiry {env.ingress_expiry} is too far in the future (now {now})")

    target = env.canister_id
    if target is None or target.bytes == b"":
        target = effective_canister_id
    elif effective_canister_id is not None and effective_canister_id != target:
        raise EnvelopeError(f"effective canister id {effective_canister_id} does not match canister_id {target}")

    if env.sender.is_anonymous:
        if env.sender_pubkey is not None or env.sender_sig is not None or env.sender_delegation is not None:
            raise EnvelopeError("an anonymous request must not carry sender_pubkey, sender_sig or sender_delegation")
        return
    if env.sender_pubkey is None or env.sender_sig is None:
        raise EnvelopeError("a non-anonymous request needs sender_pubkey and sender_sig")
    if Principal.self_authenticating(env.sender_pubkey) != env.sender:
        raise EnvelopeError(f"sender {env.sender} is not the principal of sender_pubkey")

    key = env.sender_pubkey
    seen = {key}
    for i, link in enumerate(env.sender_delegation or ()):
        delegation = link["delegation"]
        if not verify_signature(key, delegation_signing_message(delegation), link["signature"]):
            raise SignatureError(f"delegation {i} is not signed by the previous key")
        if delegation["expiration"] < now:
            raise EnvelopeError(f"delegation {i} expired at {delegation['expiration']} (now {now})")
        targets = delegation.get("targets")
        if targets is not None:
            if target is None:
                raise EnvelopeError(f"delegation {i} is restricted to targets but no effective canister id is known")
            if target.bytes not in targets:
                raise EnvelopeError(f"delegation {i} does not allow canister {target}")
        if env.request_type == "call" and delegation.get("permissions") == "queries":
            raise EnvelopeError(f"delegation {i} permits only queries and read_state requests, not a call")
        key = delegation["pubkey"]
        if key in seen:
            raise EnvelopeError(f"delegation {i} repeats a key of the chain")
        seen.add(key)
    if not verify_signature(key, REQUEST_DOMAIN + env.request_id, env.sender_sig):
        raise SignatureError("sender_sig does not verify")
