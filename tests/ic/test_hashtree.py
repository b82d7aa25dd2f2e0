"""Hash trees against the shared vectors, plus build/witness round trips and fuzzing of parse."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import CborError, HashTreeError, IcwsError
from icws_fast.ic import cbor, hashtree
from icws_fast.ic.hashtree import HashedTree, LookupResult
from tests import twins
from tests.vectors import load_vectors

RECORDS = load_vectors("hash_trees")


def _from_json(tree: list[Any]) -> hashtree.Node:
    """The node tuple of a vector's JSON tree (hex strings for labels, values and hashes)."""
    tag = tree[0]
    if tag == 0:
        return hashtree.empty()
    if tag == 1:
        return hashtree.fork(_from_json(tree[1]), _from_json(tree[2]))
    if tag == 2:
        return hashtree.labeled(bytes.fromhex(tree[1]), _from_json(tree[2]))
    if tag == 3:
        return hashtree.leaf(bytes.fromhex(tree[1]))
    return hashtree.pruned(bytes.fromhex(tree[1]))


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_vector_parse_encode_reconstruct(record: dict[str, Any]) -> None:
    data = bytes.fromhex(record["cbor_hex"])
    node = hashtree.parse(data)
    assert node == _from_json(record["tree"])
    assert hashtree.parse(cbor.decode(data)) == node
    assert hashtree.parse(hashtree.to_cbor(node)) == node
    assert hashtree.reconstruct(node).hex() == record["root_hash"]
    assert hashtree.reconstruct_pure(node).hex() == record["root_hash"]
    if "certified_data_it_must_not_match" in record:
        assert hashtree.reconstruct(node).hex() != record["certified_data_it_must_not_match"]


LOOKUPS = [(r, i, lk) for r in RECORDS for i, lk in enumerate(r.get("lookups", []))]


@pytest.mark.parametrize(
    "record,lookup", [(r, lk) for r, _, lk in LOOKUPS], ids=[f"{r['id']}-{i}" for r, i, _ in LOOKUPS]
)
def test_vector_lookups(record: dict[str, Any], lookup: dict[str, Any]) -> None:
    node = hashtree.parse(bytes.fromhex(record["cbor_hex"]))
    path = [bytes.fromhex(label) for label in lookup["path"]]
    if lookup["mode"] == "lookup_path":
        results = [hashtree.lookup_path(node, path), hashtree.lookup_path_pure(node, path)]
        for result in results:
            assert result.status == lookup["expected"]
            if result.status == "Found":
                assert result.value.hex() == lookup["value_hex"]
            else:
                assert result.value is None
    else:
        result = hashtree.lookup_subtree(node, path)
        assert result.status == lookup["expected"]
        if result.status == "Found":
            assert result.value == _from_json(lookup["subtree"])


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_vector_hashtree_object(record: dict[str, Any]) -> None:
    tree = hashtree.HashTree.from_cbor(bytes.fromhex(record["cbor_hex"]))
    assert tree.reconstruct().hex() == record["root_hash"]
    assert hashtree.HashTree.from_cbor(tree.to_cbor()).root == tree.root
    for lookup in record.get("lookups", []):
        path = [bytes.fromhex(label) for label in lookup["path"]]
        result = tree.lookup(path) if lookup["mode"] == "lookup_path" else tree.lookup_subtree(path)
        assert result.status == lookup["expected"]


def test_str_labels_are_utf8() -> None:
    node = hashtree.build({"time": b"\x01", "a": {"b": b"c"}})
    assert hashtree.lookup_path(node, ["a", "b"]) == LookupResult("Found", b"c")
    assert hashtree.lookup_path(node, [b"a", b"b"]) == LookupResult("Found", b"c")


HASHES = twins.implementations(hashtree, "reconstruct", "lookup_path", "leaf_hash", "fork_hash", "labeled_hash")


@pytest.mark.parametrize("impl", HASHES)
def test_spec_domain_separators(impl: Any) -> None:
    # Independent recomputation of the spec's reconstruct for one node of each kind.
    import hashlib

    def h(*parts: bytes) -> bytes:
        return hashlib.sha256(b"".join(parts)).digest()

    leaf = h(b"\x10ic-hashtree-leaf", b"v")
    lab = h(b"\x13ic-hashtree-labeled", b"k", leaf)
    emp = h(b"\x11ic-hashtree-empty")
    root = h(b"\x10ic-hashtree-fork", lab, emp)
    tree = hashtree.fork(hashtree.labeled(b"k", hashtree.leaf(b"v")), hashtree.empty())
    assert impl.reconstruct(tree) == root
    assert emp == hashtree.EMPTY_HASH
    assert impl.fork_hash(lab, emp) == root
    assert impl.labeled_hash(b"k", impl.leaf_hash(b"v")) == lab
    assert impl.labeled_hash("k", leaf) == lab
    assert impl.reconstruct(hashtree.pruned(root)) == root


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [5],
        [0, b""],
        [1, [0]],
        [2, "text-label", [0]],
        [3, 7],
        [4, b"short"],
        [True],
        ["x"],
        {"a": 1},
        b"not-a-list",
        [1, [0], [9]],
    ],
)
def test_parse_rejects_malformed_shapes(bad: Any) -> None:
    with pytest.raises(HashTreeError):
        hashtree.parse(bad)
    with pytest.raises(HashTreeError):
        hashtree.parse(cbor.encode(bad))


def test_parse_depth_limit() -> None:
    deep: hashtree.Node = hashtree.empty()
    for _ in range(300):
        deep = hashtree.labeled(b"a", deep)
    with pytest.raises(HashTreeError):
        hashtree.parse(deep)
    with pytest.raises(HashTreeError):
        hashtree.parse(hashtree.to_cbor(deep))
    shallow: hashtree.Node = hashtree.empty()
    for _ in range(100):
        shallow = hashtree.labeled(b"a", shallow)
    assert hashtree.parse(hashtree.to_cbor(shallow)) == shallow


def test_parse_rejects_bad_cbor_as_hashtree_error() -> None:
    with pytest.raises(HashTreeError) as info:
        hashtree.parse(b"\x83\x01")
    assert isinstance(info.value.__cause__, CborError)


def mutated(rng: random.Random, data: bytes, max_edits: int) -> bytes:
    """``data`` with 1 to ``max_edits`` random edits: a byte replaced, up to 8 deleted or up to 8 inserted."""
    out = bytearray(data)
    for _ in range(rng.randint(1, max_edits)):
        op = rng.randrange(3)
        pos = rng.randrange(len(out)) if out else 0
        if op == 0 and out:
            out[pos] = rng.randrange(256)
        elif op == 1:
            del out[pos : pos + rng.randint(1, 8)]
        else:
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
    return bytes(out)


def test_fuzz_parse_only_raises_package_errors() -> None:
    rng = random.Random(1234)
    seeds = [bytes.fromhex(r["cbor_hex"]) for r in RECORDS]
    for _ in range(3000):
        data = mutated(rng, rng.choice(seeds), 4)
        try:
            node = hashtree.parse(data)
        except IcwsError:
            continue
        hashtree.reconstruct(node)
        hashtree.lookup_path(node, [b"a", b"b"])


def test_fuzz_random_bytes() -> None:
    rng = random.Random(77)
    for _ in range(3000):
        data = rng.randbytes(rng.randint(0, 40))
        if rng.random() < 0.5:
            data = rng.choice([b"\x83\x01", b"\x83\x02\x41a", b"\x82\x04\x58\x20", b"\xd9\xd9\xf7"]) + data
        try:
            node = hashtree.parse(data)
        except HashTreeError:
            continue
        hashtree.reconstruct(node)
        hashtree.lookup_subtree(node, [b"a"])


def test_parse_accepts_any_byte_buffer() -> None:
    data = bytes.fromhex(RECORDS[0]["cbor_hex"])
    assert hashtree.parse(bytearray(data)) == hashtree.parse(memoryview(data)) == hashtree.parse(data)


def _sample_mapping(n: int) -> dict[bytes, Any]:
    return {
        b"time": b"\x01\x02",
        b"canister": {f"c{i:04d}".encode(): {b"certified_data": bytes([i % 256]) * 32} for i in range(n)},
        b"request_status": {bytes([i]) * 32: {b"status": b"replied", b"reply": b"r" * i} for i in range(0, 250, 7)},
    }


def test_build_is_sorted_and_balanced_and_matches_reconstruct() -> None:
    mapping = _sample_mapping(100)
    hashed = HashedTree(mapping)
    tree = hashtree.build(mapping)
    assert hashtree.reconstruct(tree) == hashed.root_hash == hashtree.reconstruct_pure(tree)
    canisters = hashtree.lookup_subtree(tree, [b"canister"]).value
    labels = [node[1] for node in hashtree.flatten_forks(canisters)]
    assert labels == sorted(labels) and len(labels) == 100

    def depth(node: hashtree.Node) -> int:
        return 1 + max(depth(node[1]), depth(node[2])) if node[0] == 1 else 0

    assert depth(canisters) == 7  # ceil(log2(100))
    for i in range(100):
        found = hashtree.lookup_path(tree, [b"canister", f"c{i:04d}".encode(), b"certified_data"])
        assert found == LookupResult("Found", bytes([i % 256]) * 32)


def test_witness_keeps_paths_prunes_rest_and_proves_absence() -> None:
    mapping = _sample_mapping(100)
    full = hashtree.build(mapping)
    root = hashtree.reconstruct(full)
    paths = [[b"time"], [b"canister", b"c0042", b"certified_data"], [b"canister", b"c0042x"], [b"canister", b"a"]]
    paths += [[b"canister", b"zzz"], [b"request_status", bytes([7]) * 32]]
    wit = hashtree.witness(mapping, paths)
    assert hashtree.reconstruct(wit) == root
    assert len(hashtree.to_cbor(wit)) < len(hashtree.to_cbor(full)) // 5
    assert hashtree.lookup_path(wit, [b"time"]) == LookupResult("Found", b"\x01\x02")
    assert hashtree.lookup_path(wit, [b"canister", b"c0042", b"certified_data"]).value == bytes([42]) * 32
    for missing in ([b"canister", b"c0042x"], [b"canister", b"a"], [b"canister", b"zzz"], [b"nothing"]):
        assert hashtree.lookup_path(wit, missing).status == "Absent", missing
    assert hashtree.lookup_path(wit, [b"canister", b"c0043", b"certified_data"]).status == "Unknown"
    subtree = hashtree.lookup_subtree(wit, [b"request_status", bytes([7]) * 32]).value
    assert hashtree.lookup_path(subtree, [b"status"]) == LookupResult("Found", b"replied")
    # A path through a leaf keeps the leaf; a path to a subtree keeps it whole.
    wit2 = hashtree.witness(mapping, [[b"time", b"deeper"], [b"request_status"]])
    assert hashtree.lookup_path(wit2, [b"time"]).status == "Found"
    assert (
        hashtree.lookup_subtree(wit2, [b"request_status"]).value
        == hashtree.lookup_subtree(full, [b"request_status"]).value
    )
    assert hashtree.witness(mapping, [[]]) == full


def test_witness_reuses_hashed_subtrees_and_empty_mapping() -> None:
    inner = HashedTree({b"x": b"1", b"y": b"2"})
    outer = HashedTree({b"websocket": inner, b"other": {b"z": b"3"}})
    assert hashtree.reconstruct(outer.tree()) == outer.root_hash
    assert outer.root_hash == hashtree.reconstruct(
        hashtree.build({b"websocket": {b"x": b"1", b"y": b"2"}, b"other": {b"z": b"3"}})
    )
    wit = outer.witness([[b"websocket", b"y"]])
    assert hashtree.reconstruct(wit) == outer.root_hash
    assert hashtree.lookup_path(wit, [b"websocket", b"y"]).value == b"2"
    assert hashtree.build({}) == hashtree.empty()
    assert hashtree.witness({}, [[b"a"]]) == hashtree.empty()
    assert hashtree.lookup_path(hashtree.witness({}, [[b"a"]]), [b"a"]).status == "Absent"
    with pytest.raises(HashTreeError):
        HashedTree({b"a": b"1", "a": b"2"})  # type: ignore[arg-type]


_label = st.binary(min_size=0, max_size=4)
_mapping = st.recursive(
    st.binary(max_size=8),
    lambda children: st.dictionaries(_label, children, max_size=6),
    max_leaves=30,
).filter(lambda m: isinstance(m, dict))


@pytest.mark.parametrize("impl", HASHES)
@settings(max_examples=150, deadline=None)
@given(_mapping, st.lists(st.lists(_label, min_size=1, max_size=3), max_size=4))
def test_witness_answers_like_the_full_tree(impl: Any, mapping: dict[bytes, Any], paths: list[list[bytes]]) -> None:
    full = hashtree.build(mapping)
    wit = hashtree.witness(mapping, paths)
    assert impl.reconstruct(wit) == impl.reconstruct(full) == HashedTree(mapping).root_hash
    for path in paths:
        expected = impl.lookup_path(full, path)
        got = impl.lookup_path(wit, path)
        assert got == expected, path


def test_tagged_cbor_items_are_not_tree_nodes() -> None:
    # cbor.Tag is a tuple: tag 4 around 32 bytes must not pass for a Pruned node, nor tag 0 around a list for a node.
    digest = b"\x11" * 32
    assert hashtree.parse(cbor.encode([4, digest])) == (4, digest)
    for data in (cbor.encode(cbor.Tag(4, digest)), cbor.encode([1, cbor.Tag(4, digest), [0]])):
        with pytest.raises(HashTreeError):
            hashtree.parse(data)


def test_balanced_forks_stay_equal_to_a_fresh_build() -> None:
    rng = random.Random(11)
    hashes = [rng.randbytes(32) for _ in range(5)]
    forks = hashtree.BalancedForks(hashes)
    assert hashtree.BalancedForks().root_hash == hashtree.EMPTY_HASH
    for _ in range(300):
        op = rng.random()
        if op < 0.4 and hashes:
            i = rng.randrange(len(hashes))
            hashes[i] = rng.randbytes(32)
            forks.update(i, hashes[i])
        elif op < 0.7 or not hashes:
            i = rng.randint(0, len(hashes))
            hashes.insert(i, rng.randbytes(32))
            forks.insert(i, hashes[i])
        else:
            i = rng.randrange(len(hashes))
            del hashes[i]
            forks.delete(i)
        assert len(forks) == len(hashes)
        assert forks.root_hash == hashtree.BalancedForks(hashes).root_hash
        if hashes:
            # Any kept node (here Pruned nodes standing for themselves) keeps the root hash.
            kept = {i: hashtree.pruned(hashes[i]) for i in rng.sample(range(len(hashes)), min(3, len(hashes)))}
            assert hashtree.reconstruct(forks.witness(kept)) == forks.root_hash


def test_balanced_forks_shape() -> None:
    a, b, c = (bytes([i]) * 32 for i in (1, 2, 3))
    forks = hashtree.BalancedForks([a, b, c])
    # [0, 3) splits at 2: the left half is the larger one.
    assert forks.root_hash == hashtree.fork_hash(hashtree.fork_hash(a, b), c)
    leaf = hashtree.leaf(b"x")
    assert forks.witness({2: leaf}) == (1, (4, hashtree.fork_hash(a, b)), leaf)


def test_read_witness_reads_the_leaves_at_the_label() -> None:
    mapping = {b"websocket": {b"k1": b"h1", b"k2": b"h2", b"k3": b"h3", b"sub": {b"x": b"y"}}, b"other": b"o"}
    full = hashtree.build(mapping)
    wit = hashtree.witness(mapping, [[b"websocket", b"k1"], [b"websocket", b"k3"], [b"websocket", b"sub"]])
    for tree, leaves in ((full, {b"k1": b"h1", b"k2": b"h2", b"k3": b"h3"}), (wit, {b"k1": b"h1", b"k3": b"h3"})):
        for read in (hashtree.read_witness, hashtree.read_witness_pure):
            got = read(hashtree.to_cbor(tree), b"websocket")
            assert got == hashtree.Witness(hashtree.reconstruct(full), leaves, True)
            assert read(hashtree.to_cbor(tree), b"absent") == hashtree.Witness(hashtree.reconstruct(full), {}, True)
            assert read(hashtree.to_cbor(tree), b"other").leaves == {}  # a leaf, not a forest


def test_read_witness_follows_the_lookup() -> None:
    """The label is found where lookup_subtree finds it: the first match, unless a larger label comes first."""
    first = hashtree.labeled(b"w", hashtree.labeled(b"k", hashtree.leaf(b"1")))
    second = hashtree.labeled(b"w", hashtree.labeled(b"k", hashtree.leaf(b"2")))
    larger = hashtree.labeled(b"z", hashtree.empty())
    for tree, leaves in (
        (hashtree.fork(first, second), {b"k": b"1"}),
        (hashtree.fork(larger, first), {}),
        (hashtree.fork(hashtree.pruned(b"\x01" * 32), first), {b"k": b"1"}),
        (hashtree.labeled(b"top", first), {}),  # not in the root's forest
    ):
        for read in (hashtree.read_witness, hashtree.read_witness_pure):
            assert read(hashtree.to_cbor(tree), b"w").leaves == leaves, tree


def test_read_witness_reports_labels_out_of_order() -> None:
    def forest(*labels: bytes) -> hashtree.Node:
        node = hashtree.labeled(labels[-1], hashtree.leaf(b"v"))
        for label in reversed(labels[:-1]):
            node = hashtree.fork(hashtree.labeled(label, hashtree.leaf(label)), node)
        return hashtree.labeled(b"websocket", node)

    for labels, ordered in (((b"a", b"b", b"c"), True), ((b"a", b"c", b"b"), False), ((b"a", b"a"), False)):
        for read in (hashtree.read_witness, hashtree.read_witness_pure):
            assert read(hashtree.to_cbor(forest(*labels)), b"websocket").ordered is ordered


def test_read_witness_refuses_what_parse_refuses() -> None:
    for data in (b"", b"\x83\x01", cbor.encode([4, b"short"]), _deep_cbor_labeled(257)):
        for read in (hashtree.read_witness, hashtree.read_witness_pure):
            with pytest.raises(HashTreeError):
                read(data, b"websocket")
    assert hashtree.read_witness(_deep_cbor_labeled(256), b"a").root_hash == hashtree.reconstruct(
        hashtree.parse(_deep_cbor_labeled(256))
    )


def _deep_cbor_labeled(levels: int) -> bytes:
    return b"\x83\x02\x41a" * (levels - 1) + b"\x81\x00"
