"""``route_shares``: the poller's routing of one batch and the content check of every message it hands out (the pure
function and its compiled twin, which must agree on every input, hostile or odd)."""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any

import pytest

from icws_fast.errors import CertificateError
from icws_fast.protocol import poller
from icws_fast.protocol.certified import REASON_CONTENT_MISMATCH, REASON_KEY_NOT_FOUND
from tests import twins

ROUTES = [b"client-%d" % i for i in range(4)]
KEYS = [b"gw_%020d" % i for i in range(12)]
CONTENTS = [b"content %d" % i for i in range(12)]
HASHES = {key: hashlib.sha256(content).digest() for key, content in zip(KEYS, CONTENTS, strict=True)}
# Message i goes to client i % 3: client-3 is registered and gets nothing; route b"gone" has no recipient.
BATCH_ROUTES = [ROUTES[i % 3] for i in range(12)]

IMPLS = twins.implementations(poller, "route_shares")


class Recipient:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Recipient({self.name})"


RECIPIENTS = {route: Recipient(route.decode()) for route in ROUTES}


@pytest.mark.parametrize("impl", IMPLS)
def test_shares_in_batch_order_by_recipient(impl: Any) -> None:
    routes = dict(RECIPIENTS)
    batch_routes = [*BATCH_ROUTES[:5], b"gone", *BATCH_ROUTES[6:]]
    shares, reached = impl.route_shares(routes, batch_routes, KEYS, CONTENTS, HASHES)
    assert list(shares) == [RECIPIENTS[ROUTES[0]], RECIPIENTS[ROUTES[1]], RECIPIENTS[ROUTES[2]]]
    assert reached == ROUTES[:3]
    assert shares[RECIPIENTS[ROUTES[0]]] == ([KEYS[i] for i in (0, 3, 6, 9)], [CONTENTS[i] for i in (0, 3, 6, 9)])
    assert shares[RECIPIENTS[ROUTES[1]]] == ([KEYS[i] for i in (1, 4, 7, 10)], [CONTENTS[i] for i in (1, 4, 7, 10)])
    assert shares[RECIPIENTS[ROUTES[2]]][0] == [KEYS[i] for i in (2, 8, 11)]  # message 5 had no recipient


@pytest.mark.parametrize("impl", IMPLS)
def test_a_message_handed_out_must_be_certified(impl: Any) -> None:
    forged = [*CONTENTS[:4], b"forged", *CONTENTS[5:]]
    with pytest.raises(CertificateError) as raised:
        impl.route_shares(RECIPIENTS, BATCH_ROUTES, KEYS, forged, HASHES)
    assert raised.value.reason == REASON_CONTENT_MISMATCH
    missing = {key: value for key, value in HASHES.items() if key != KEYS[7]}
    with pytest.raises(CertificateError) as raised:
        impl.route_shares(RECIPIENTS, BATCH_ROUTES, KEYS, CONTENTS, missing)
    assert raised.value.reason == REASON_KEY_NOT_FOUND
    # A message nobody receives is not checked, and nothing is checked without hashes.
    unrouted = [*BATCH_ROUTES[:4], b"gone", *BATCH_ROUTES[5:]]
    assert impl.route_shares(RECIPIENTS, unrouted, KEYS, forged, HASHES)[1] == ROUTES[:3]
    assert impl.route_shares(RECIPIENTS, BATCH_ROUTES, KEYS, forged, None)[1] == ROUTES[:3]


def _cases() -> list[tuple[Any, ...]]:
    routes = dict(RECIPIENTS)
    shared = {ROUTES[0]: RECIPIENTS[ROUTES[0]], ROUTES[1]: RECIPIENTS[ROUTES[0]]}  # two routes, one recipient
    return [
        (routes, BATCH_ROUTES, KEYS, CONTENTS, HASHES),
        (routes, BATCH_ROUTES, KEYS, CONTENTS, None),
        (routes, [], [], [], HASHES),
        ({}, BATCH_ROUTES, KEYS, CONTENTS, HASHES),
        (shared, BATCH_ROUTES, KEYS, CONTENTS, HASHES),
        (routes, BATCH_ROUTES, KEYS, [*CONTENTS[:11], b"forged"], HASHES),  # the last one fails
        (routes, BATCH_ROUTES, KEYS, [b"forged", *CONTENTS[1:]], HASHES),
        (routes, BATCH_ROUTES, KEYS, [b"x", *CONTENTS[1:11], b"y"], HASHES),  # two fail: the same one is reported
        (routes, BATCH_ROUTES, KEYS, CONTENTS, {}),
        (routes, BATCH_ROUTES, KEYS, CONTENTS, {**HASHES, KEYS[3]: HASHES[KEYS[3]] + b"\x00"}),  # no SHA-256
        (routes, BATCH_ROUTES, KEYS, CONTENTS, {**HASHES, KEYS[3]: "text"}),
        (routes, BATCH_ROUTES, KEYS, CONTENTS[:-1], HASHES),  # lengths differ
        (routes, BATCH_ROUTES[:-1], KEYS, CONTENTS, None),
        (routes, BATCH_ROUTES, [*KEYS[:2], "text", *KEYS[3:]], CONTENTS, HASHES),  # not bytes
        (routes, BATCH_ROUTES, KEYS, [*CONTENTS[:2], None, *CONTENTS[3:]], HASHES),
        (routes, BATCH_ROUTES, KEYS, [*CONTENTS[:2], None, *CONTENTS[3:]], None),  # not checked: handed out as is
        (routes, [*BATCH_ROUTES[:2], bytearray(ROUTES[2]), *BATCH_ROUTES[3:]], KEYS, CONTENTS, HASHES),
        (routes, [*BATCH_ROUTES[:2], [1], *BATCH_ROUTES[3:]], KEYS, CONTENTS, HASHES),  # unhashable
        (routes, tuple(BATCH_ROUTES), tuple(KEYS), tuple(CONTENTS), HASHES),  # other sequences
        (MappingProxyType(routes), BATCH_ROUTES, KEYS, CONTENTS, MappingProxyType(HASHES)),  # other mappings
        (routes, BATCH_ROUTES, KEYS, [bytearray(c) for c in CONTENTS], HASHES),
    ]


@pytest.mark.parametrize("case", _cases(), ids=range(len(_cases())))
def test_twins_agree(case: tuple[Any, ...]) -> None:
    twins.assert_agree(poller, "route_shares", *case)
