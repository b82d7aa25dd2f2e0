"""The small twins, pure vs compiled, on what polled batches ask of each.

``leaf_hash`` / ``labeled_hash`` / ``fork_hash`` (``icws_fast.ic.hashtree``): the content hashes of a 50-message
batch, the hashes of its 50 labeled keys and 50 forks above them; ``batch_suffix`` / ``encode_message``
(``icws_fast.gateway.fanout``): the shared ``cert``/``tree`` entries of 10 batches (trees of 2-6.5 kB) and one
batch's 50 messages one by one (the path of a message not framed with its client's others); ``envelope_span``
(``icws_fast.protocol.session``): where the envelope lies in each of 50 clients' signed call frames. Batches of
calls rather than one keep these sub-microsecond functions' ratios steady on a busy machine. The bigger twins are
benchmarked in ``test_cbor.py``, ``test_hashtree.py``, ``test_wsbatch.py`` and ``test_fanout.py``;
``benchmarks/floors.json`` guards the ratios.

Run: ``.venv/bin/python -m pytest benchmarks/test_primitives.py --benchmark-only --benchmark-enable``
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from icws_fast.gateway import fanout
from icws_fast.ic import cbor, hashtree
from icws_fast.protocol import session
from tests import twins
from tests.vectors import load_vectors

BATCH = 50
GATEWAY = "sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae"
KEYS = [f"{GATEWAY}_{1000 + i:020d}".encode() for i in range(BATCH)]
CONTENTS = [bytes([i]) * 200 for i in range(BATCH)]
HASHES = [hashlib.sha256(content).digest() for content in CONTENTS]
CERT, TREE = b"c" * 1500, b"t" * 6500
POLLS = 10
CERTS = [bytes([i]) * 1500 for i in range(POLLS)]
TREES = [bytes([i]) * (2000 + 500 * i) for i in range(POLLS)]

ENVELOPES = {record["id"]: record for record in load_vectors("envelopes")}
ENVELOPE = cbor.decode(bytes.fromhex(ENVELOPES["derived-ed25519-signed-call"]["envelope_cbor_hex"]))
CLIENT_FRAME = cbor.encode({"envelope": ENVELOPE})


@pytest.mark.parametrize("impl", twins.implementations(hashtree, "leaf_hash"))
def test_leaf_hash_batch(benchmark: Any, impl: SimpleNamespace) -> None:
    assert benchmark(lambda: list(map(impl.leaf_hash, CONTENTS))) == list(map(hashtree.leaf_hash_pure, CONTENTS))


@pytest.mark.parametrize("impl", twins.implementations(hashtree, "labeled_hash"))
def test_labeled_hash_batch(benchmark: Any, impl: SimpleNamespace) -> None:
    expected = list(map(hashtree.labeled_hash_pure, KEYS, HASHES))
    assert benchmark(lambda: list(map(impl.labeled_hash, KEYS, HASHES))) == expected


@pytest.mark.parametrize("impl", twins.implementations(hashtree, "fork_hash"))
def test_fork_hash_batch(benchmark: Any, impl: SimpleNamespace) -> None:
    rights = HASHES[1:] + HASHES[:1]
    expected = list(map(hashtree.fork_hash_pure, HASHES, rights))
    assert benchmark(lambda: list(map(impl.fork_hash, HASHES, rights))) == expected


@pytest.mark.parametrize("impl", twins.implementations(fanout, "batch_suffix"))
def test_batch_suffixes(benchmark: Any, impl: SimpleNamespace) -> None:
    expected = list(map(fanout.batch_suffix_pure, CERTS, TREES))
    assert benchmark(lambda: list(map(impl.batch_suffix, CERTS, TREES))) == expected


@pytest.mark.parametrize("impl", twins.implementations(fanout, "encode_message"))
def test_encode_message_batch(benchmark: Any, impl: SimpleNamespace) -> None:
    suffix = fanout.batch_suffix_pure(CERT, TREE)
    suffixes = [suffix] * BATCH
    expected = list(map(fanout.encode_message_pure, KEYS, CONTENTS, suffixes))
    assert benchmark(lambda: list(map(impl.encode_message, KEYS, CONTENTS, suffixes))) == expected


@pytest.mark.parametrize("impl", twins.implementations(session, "envelope_span"))
def test_envelope_span_batch(benchmark: Any, impl: SimpleNamespace) -> None:
    frames = [CLIENT_FRAME] * BATCH
    spans = benchmark(lambda: list(map(impl.envelope_span, frames)))
    assert [cbor.decode(frame[start:end]) for frame, (start, end) in zip(frames, spans, strict=True)] == [
        ENVELOPE
    ] * BATCH
