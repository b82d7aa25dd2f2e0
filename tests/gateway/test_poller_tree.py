"""The poller's reading of a batch's witness tree: message key -> certified content hash."""

from __future__ import annotations

import hashlib

import pytest

from icws_fast.errors import CertificateError
from icws_fast.gateway.poller import _leaf_hashes
from icws_fast.ic import hashtree
from icws_fast.protocol.types import LABEL_WEBSOCKET

KEYS = [f"gw_{i:020d}".encode() for i in range(40)]
MAPPING = {LABEL_WEBSOCKET: {key: hashlib.sha256(key).digest() for key in KEYS}, b"other": {b"x": b"y"}}


def test_a_witness_yields_exactly_its_messages():
    wanted = KEYS[10:25]
    tree = hashtree.witness(MAPPING, [[LABEL_WEBSOCKET, key] for key in wanted])
    hashes = _leaf_hashes(hashtree.lookup_subtree(tree, [LABEL_WEBSOCKET]))
    assert hashes == {key: hashlib.sha256(key).digest() for key in wanted}
    for key in wanted:  # the same answers as the spec's lookup
        assert hashtree.lookup_path(tree, [LABEL_WEBSOCKET, key]).value == hashes[key]


def test_no_websocket_subtree_certifies_nothing():
    tree = hashtree.witness(MAPPING, [[b"other", b"x"]])
    assert _leaf_hashes(hashtree.lookup_subtree(tree, [LABEL_WEBSOCKET])) == {}


@pytest.mark.parametrize("labels", [[b"b", b"a"], [b"a", b"a"]])
def test_labels_out_of_order_are_refused(labels):
    sub = hashtree.fork(*(hashtree.labeled(label, hashtree.leaf(b"h")) for label in labels))
    tree = hashtree.labeled(LABEL_WEBSOCKET, sub)
    with pytest.raises(CertificateError):
        _leaf_hashes(hashtree.lookup_subtree(tree, [LABEL_WEBSOCKET]))
