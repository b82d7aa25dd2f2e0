"""Candid cross-check: the IC WebSocket types encoded by ``@dfinity/candid`` and by ``icws_fast.ic.candid``.

A few hundred random values (seeded, with the edge cases: 0 and 2**64 - 1, empty and long blobs, principals of
every length, non-ASCII text) are encoded by both; the bytes must be identical, and each side must decode the
other's bytes back to the original value. The JavaScript side (``candid_cross.mjs``) writes its types from the
CDK's ``.did`` independently of ours, so a field name, field order (hash), type code or opt/variant encoding that
differs shows up as different bytes.
"""

from __future__ import annotations

import json
import random
import subprocess
from typing import Any, Final

import pytest

from icws_fast.devnet.canisters.pingpong import APP_MESSAGE_DID
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import SERVICE_MESSAGES_DID, WS_TYPES_DID
from tests.interop.ws_stack import HERE

pytestmark = pytest.mark.interop

_DEFS: Final = WS_TYPES_DID + SERVICE_MESSAGES_DID + APP_MESSAGE_DID
# Case name (as in candid_cross.mjs) -> Candid argument list.
CASES: Final = {
    name: candid.parse_args(args, _DEFS)
    for name, args in {
        "ClientKey": "(ClientKey)",
        "WebsocketMessage": "(WebsocketMessage)",
        "CanisterOutputMessage": "(CanisterOutputMessage)",
        "CanisterWsOpenArguments": "(CanisterWsOpenArguments)",
        "CanisterWsOpenResult": "(CanisterWsOpenResult)",
        "CanisterWsCloseArguments": "(CanisterWsCloseArguments)",
        "CanisterWsMessageArguments": "(CanisterWsMessageArguments)",
        "CanisterWsGetMessagesArguments": "(CanisterWsGetMessagesArguments)",
        "CanisterWsGetMessagesResult": "(CanisterWsGetMessagesResult)",
        "WebsocketServiceMessageContent": "(WebsocketServiceMessageContent)",
        "AppMessage": "(AppMessage)",
        "ws_message": "(CanisterWsMessageArguments, opt AppMessage)",
    }.items()
}
VALUES_PER_CASE: Final = 30
_NAT64_EDGES: Final = (0, 1, 127, 128, 2**32, 2**63, 2**64 - 1)
_TEXT_ALPHABET: Final = 'abcXYZ 019_-.\n"\\é中🙂\u0000\u07ff\uffff'


def _resolve(t: candid.Type) -> candid.Type:
    while isinstance(t, candid.NamedType):
        t = t.definition
    return t


def random_value(t: candid.Type, rng: random.Random) -> Any:
    """A random Python value of ``t`` (the forms ``icws_fast.ic.candid`` encodes and decodes)."""
    t = _resolve(t)
    if t is candid.NAT64:
        return rng.choice(_NAT64_EDGES) if rng.random() < 0.3 else rng.getrandbits(rng.choice((8, 32, 64)))
    if t is candid.BOOL:
        return rng.random() < 0.5
    if t is candid.NULL:
        return None
    if t is candid.TEXT:
        return "".join(rng.choice(_TEXT_ALPHABET) for _ in range(rng.choice((0, 1, 5, 40))))
    if t is candid.PRINCIPAL:
        return Principal(rng.randbytes(rng.randint(0, 29)))
    if isinstance(t, candid.OptType):
        return None if rng.random() < 0.3 else random_value(t.inner, rng)
    if isinstance(t, candid.VecType):
        if t.inner is candid.NAT8:
            return rng.randbytes(rng.choice((0, 1, 33, 300)))
        return [random_value(t.inner, rng) for _ in range(rng.choice((0, 1, 3)))]
    if isinstance(t, candid.RecordType):
        return {f.key: random_value(f.type, rng) for f in t.fields}
    if isinstance(t, candid.VariantType):
        f = rng.choice(t.fields)
        return {f.key: random_value(f.type, rng)}
    raise AssertionError(f"no generator for {t}")


def to_json(t: candid.Type, v: Any) -> Any:
    """The JSON form ``candid_cross.mjs`` reads and writes (see its header)."""
    t = _resolve(t)
    if t is candid.NAT64:
        return str(v)
    if t is candid.PRINCIPAL:
        return v.to_text()
    if isinstance(t, candid.OptType):
        return [] if v is None else [to_json(t.inner, v)]
    if isinstance(t, candid.VecType):
        return v.hex() if t.inner is candid.NAT8 else [to_json(t.inner, x) for x in v]
    if isinstance(t, candid.RecordType):
        return {f.key: to_json(f.type, v[f.key]) for f in t.fields}
    if isinstance(t, candid.VariantType):
        ((key, inner),) = v.items()
        return {key: to_json(next(f.type for f in t.fields if f.key == key), inner)}
    return v  # text, bool, null


def test_dfinity_candid_and_icws_fast_agree(node: str) -> None:
    rng = random.Random(20_240_501)
    cases: list[tuple[str, list[Any], bytes]] = []
    for name, types in CASES.items():
        for _ in range(VALUES_PER_CASE):
            values = [random_value(t, rng) for t in types]
            cases.append((name, values, candid.encode(types, values)))
    request = [
        {"case": name, "value": [to_json(t, v) for t, v in zip(CASES[name], values, strict=True)], "hex": data.hex()}
        for name, values, data in cases
    ]
    result = subprocess.run(
        [node, str(HERE / "candid_cross.mjs")],
        input=json.dumps(request),
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # asserted below, with stderr
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert len(answers) == len(cases) == len(CASES) * VALUES_PER_CASE
    for (name, values, ours), sent, answer in zip(cases, request, answers, strict=True):
        theirs = bytes.fromhex(answer["hex"])
        assert theirs == ours, f"{name} {sent['value']}: @dfinity/candid {theirs.hex()} != icws_fast {ours.hex()}"
        assert candid.decode(theirs, CASES[name]) == values, name
        assert answer["value"] == sent["value"], name
