"""The compiled hash tree twin gives exactly the pure results: vector trees, generated trees, malformed nodes, and
for ``read_witness`` their CBOR, valid, hostile or mutated."""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import HashTreeError
from icws_fast.ic import hashtree
from tests import twins
from tests.ic.test_hashtree import mutated
from tests.vectors import load_vectors

pytestmark = twins.skip_unless_compiled(hashtree, "reconstruct")
# The compiled twins (None in a pure run, where every test here is skipped).
compiled = SimpleNamespace(
    **{
        name: twins.twin(hashtree, name).compiled
        for name in ("reconstruct", "lookup_path", "read_witness", "leaf_hash", "fork_hash", "labeled_hash")
    }
)

TREES = [hashtree.parse(bytes.fromhex(r["cbor_hex"])) for r in load_vectors("hash_trees")]
for _record in load_vectors("certificates"):
    for _message in [_record["ws_message"]] if "ws_message" in _record else _record.get("ws_messages", []):
        TREES.append(hashtree.parse(bytes.fromhex(_message["tree_cbor_hex"])))

PATHS = [
    [],
    [b"a"],
    [b"a", b"x"],
    [b"b"],
    [b"c"],
    [b"d"],
    [b"e"],
    [b"time"],
    [b"websocket"],
    [b"websocket", b"x"],
    [b"subnet"],
    [b""],
    [b"\xff" * 40],
]


def _all_paths(tree: hashtree.Node, prefix: list[bytes], out: list[list[bytes]]) -> None:
    """Every label path of ``tree``, plus a missing sibling after each, so all four statuses appear."""
    for node in hashtree.flatten_forks(tree):
        if node[0] == hashtree.LABELED:
            path = [*prefix, node[1]]
            out.append(path)
            out.append([*prefix, node[1] + b"\x00"])
            _all_paths(node[2], path, out)


def test_compiled_is_bound() -> None:
    assert hashtree.reconstruct is compiled.reconstruct is not hashtree.reconstruct_pure
    assert hashtree.lookup_path is compiled.lookup_path is not hashtree.lookup_path_pure
    assert hashtree.read_witness is compiled.read_witness is not hashtree.read_witness_pure


@pytest.mark.parametrize("tree", TREES)
def test_vector_trees_identical(tree: hashtree.Node) -> None:
    assert compiled.reconstruct(tree) == hashtree.reconstruct_pure(tree)
    paths: list[list[bytes]] = []
    _all_paths(tree, [], paths)
    for path in PATHS + paths:
        assert compiled.lookup_path(tree, path) == hashtree.lookup_path_pure(tree, path), path


def test_sha256_around_the_contiguous_limit_and_block_boundaries() -> None:
    # Short inputs are copied and hashed in one piece, long ones (over 256 bytes with the domain) in three.
    for n in [*range(0, 300), 1000, 4096, 65537]:
        value = bytes((i * 7 + n) % 256 for i in range(n))
        assert compiled.reconstruct(hashtree.leaf(value)) == hashlib.sha256(b"\x10ic-hashtree-leaf" + value).digest()
        assert compiled.leaf_hash(value) == hashtree.leaf_hash_pure(value)
        assert compiled.labeled_hash(value, value[:32]) == hashtree.labeled_hash_pure(value, value[:32])
        label_tree = hashtree.labeled(value, hashtree.empty())
        assert compiled.reconstruct(label_tree) == hashtree.reconstruct_pure(label_tree)
    for tree in TREES:
        assert compiled.reconstruct(tree) == hashtree.reconstruct_pure(tree)


_labels = st.binary(max_size=3)
_nodes = st.recursive(
    st.one_of(
        st.just(hashtree.empty()),
        st.binary(max_size=70).map(hashtree.leaf),
        st.binary(min_size=32, max_size=32).map(hashtree.pruned),
    ),
    lambda children: st.one_of(
        st.tuples(children, children).map(lambda lr: hashtree.fork(*lr)),
        st.tuples(_labels, children).map(lambda lc: hashtree.labeled(*lc)),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_nodes, st.lists(st.lists(_labels, max_size=3), min_size=1, max_size=5))
def test_generated_trees_identical(tree: hashtree.Node, paths: list[list[bytes]]) -> None:
    assert compiled.reconstruct(tree) == hashtree.reconstruct_pure(tree)
    for path in paths:
        assert compiled.lookup_path(tree, path) == hashtree.lookup_path_pure(tree, path)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.binary(max_size=6), st.binary(max_size=40), max_size=60), st.lists(st.binary(max_size=6)))
def test_built_witnesses_identical(mapping: dict[bytes, bytes], labels: list[bytes]) -> None:
    wit = hashtree.witness({b"m": mapping}, [[b"m", label] for label in labels])
    assert compiled.reconstruct(wit) == hashtree.reconstruct_pure(wit) == hashtree.HashedTree({b"m": mapping}).root_hash
    for label in labels:
        assert compiled.lookup_path(wit, [b"m", label]) == hashtree.lookup_path_pure(wit, [b"m", label])


def _deep(n: int) -> hashtree.Node:
    node: hashtree.Node = hashtree.leaf(b"x")
    for _ in range(n):
        node = (hashtree.FORK, node, hashtree.empty())
    return node


MALFORMED: list[Any] = [
    (),
    [1, (0,), (0,)],
    (9,),
    (True,),
    ("1",),
    (1, (0,)),
    (2, "label", (0,)),
    (2, bytearray(b"l"), (0,)),
    (3, 5),
    (3, b"v", b"w"),
    (4, b"short"),
    (0, 0),
    (1, (0,), (7, b"")),
    (2, b"a", [3, b"v"]),
    None,
    _deep(600),
]


@pytest.mark.parametrize("node", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_nodes_fail_alike(node: Any) -> None:
    assert twins.assert_agree(hashtree, "reconstruct", node)[:2] == ("raised", HashTreeError)
    for path in ([], [b"a"], [b"a", b"b"]):
        twins.assert_agree(hashtree, "lookup_path", node, path)


def test_label_types() -> None:
    tree = hashtree.build({b"a": {b"b": b"v"}})
    paths: list[list[Any]] = [["a", "b"], [bytearray(b"a"), memoryview(b"b")]]
    for path in paths:
        assert compiled.lookup_path(tree, path) == hashtree.lookup_path_pure(tree, path)
    for fn in (compiled.lookup_path, hashtree.lookup_path_pure):
        with pytest.raises(TypeError):
            fn(tree, [1])  # type: ignore[list-item]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=40), st.text(max_size=10))
def test_hash_helpers_identical(data: bytes, other: bytes, text: str) -> None:
    assert compiled.leaf_hash(data) == hashtree.leaf_hash_pure(data) == compiled.leaf_hash(bytearray(data))
    assert compiled.fork_hash(data, other) == hashtree.fork_hash_pure(data, other)
    assert compiled.fork_hash(memoryview(data), other) == hashtree.fork_hash_pure(data, other)
    assert compiled.labeled_hash(data, other) == hashtree.labeled_hash_pure(data, other)
    assert compiled.labeled_hash(text, other) == hashtree.labeled_hash_pure(text, other)


def test_hash_helpers_reject_alike() -> None:
    for fn, args in [("leaf_hash", ("text",)), ("fork_hash", (b"", None)), ("labeled_hash", (1, b""))]:
        for impl in (getattr(compiled, fn), getattr(hashtree, f"{fn}_pure")):
            with pytest.raises(TypeError):
                impl(*args)


# -- read_witness ---------------------------------------------------------------------------------------------------

WITNESS_LABELS = [b"websocket", b"a", b"b", b"time", b"", b"\xff" * 40, b"canister", b"m"]


def _witness_agrees(data: Any, label: Any = b"websocket") -> tuple[Any, ...]:
    """Both read_witness twins on ``data``: the same Witness or the same error; the pure outcome."""
    return twins.assert_agree(hashtree, "read_witness", data, label)


@pytest.mark.parametrize("tree", TREES)
def test_read_witness_of_vector_trees(tree: hashtree.Node) -> None:
    data = hashtree.to_cbor(tree)
    labels = WITNESS_LABELS + [node[1] for node in hashtree.flatten_forks(tree) if node[0] == hashtree.LABELED]
    for label in labels:
        outcome = _witness_agrees(data, label)
        assert outcome[0] == "ok" and outcome[1].root_hash == hashtree.reconstruct_pure(tree)
        _witness_agrees(data[3:], label)  # without the self-describe tag


@settings(max_examples=300, deadline=None)
@given(_nodes, st.lists(_labels, min_size=1, max_size=4))
def test_read_witness_of_generated_trees(tree: hashtree.Node, labels: list[bytes]) -> None:
    """Any tree, its labels in order or not, duplicated or not: the same root, leaves and order flag."""
    data = hashtree.to_cbor(tree)
    for label in labels:
        assert _witness_agrees(data, label)[0] == "ok"


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.binary(max_size=6), st.binary(max_size=40), max_size=60),
    st.lists(st.binary(max_size=6)),
    st.dictionaries(st.binary(max_size=6), st.binary(max_size=8), max_size=5),
)
def test_read_witness_of_built_witnesses(
    mapping: dict[bytes, bytes], labels: list[bytes], others: dict[bytes, bytes]
) -> None:
    wit = hashtree.witness({b"m": mapping, **others}, [[b"m", label] for label in labels])
    outcome = _witness_agrees(hashtree.to_cbor(wit), b"m")
    assert outcome[1] == hashtree.Witness(
        hashtree.reconstruct_pure(wit), {label: mapping[label] for label in labels if label in mapping}, True
    )


def _deep_cbor(levels: int) -> bytes:
    """``levels`` nested Labeled nodes over an Empty, as CBOR."""
    return b"\x83\x02\x41a" * (levels - 1) + b"\x81\x00"


HOSTILE = [
    b"",
    b"\xd9\xd9\xf7",
    b"\x81\x00",
    b"\x81\x00\x00",  # a trailing byte
    b"\x80",
    b"\x81\x05",
    b"\x81\x20",  # a negative tag
    b"\x81\x18\x00",  # a tag in a two-byte head: valid, for the pure twin
    b"\x98\x01\x00",  # an array head in two bytes: valid, for the pure twin
    b"\x9f\x00\xff",  # an indefinite array
    b"\x82\x03\x5f\x41a\x41b\xff",  # an indefinite byte string
    b"\x82\x03\x61a",  # a text string
    b"\x82\x04\x58\x20" + b"\x11" * 32,
    b"\x82\x04\x58\x1f" + b"\x11" * 31,
    b"\x82\x04\x58\x20" + b"\x11" * 31,
    b"\x83\x01\x81\x00",
    b"\x83\x01\x81\x00\xd9\xd9\xf7\x81\x00",  # a self-describe tag inside: valid, for the pure twin
    b"\xd9\xd9\xf7\xd9\xd9\xf7\x81\x00",
    b"\xc4\x82\x04\x58\x20" + b"\x11" * 32,  # tag 4 around a node
    b"\x83\x02\x41a\x82\x03\x5b" + b"\xff" * 8,  # a length beyond any buffer
    b"\x83\x02\x41a\x82\x03\x5a\xff\xff\xff\xff",
    b"\x82\x03\x1c",
    b"\x83\xc2\x41\x01\x81\x00\x81\x00",  # a bignum tag as the node tag: valid, for the pure twin
    _deep_cbor(256),
    _deep_cbor(257),
    b"\x83\x01" * 300 + b"\x81\x00" * 301,
]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_read_witness_of_hostile_bytes(data: bytes) -> None:
    for label in (b"websocket", b"a"):
        _witness_agrees(data, label)
        _witness_agrees(b"\xd9\xd9\xf7" + data, label)


def test_read_witness_of_mutated_trees() -> None:
    rng = random.Random(4321)
    seeds = [hashtree.to_cbor(tree) for tree in TREES]
    raised = 0
    for _ in range(4000):
        data = mutated(rng, rng.choice(seeds), 3)
        raised += _witness_agrees(data, rng.choice(WITNESS_LABELS))[0] == "raised"
    assert 0 < raised < 4000


def test_read_witness_of_other_buffers_and_labels() -> None:
    data = hashtree.to_cbor(hashtree.build({b"websocket": {b"k": b"v"}}))
    for buffer in (bytearray(data), memoryview(data)):
        assert _witness_agrees(buffer)[1].leaves == {b"k": b"v"}
    _witness_agrees(data, "websocket")
    _witness_agrees(data, bytearray(b"websocket"))
    _witness_agrees(data, 7)
    _witness_agrees("text", b"websocket")
    _witness_agrees(None, b"websocket")
