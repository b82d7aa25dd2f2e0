"""IC hash trees: parsing, reconstruction, lookup, building and pruned witnesses.

Nodes are plain tuples, exactly the CBOR form with tuples for arrays, so a node
encodes with :func:`icws_fast.ic.cbor.encode` as it is::

    (0,)                   Empty
    (1, left, right)       Fork
    (2, label, subtree)    Labeled   (label: bytes)
    (3, value)             Leaf      (value: bytes)
    (4, hash)              Pruned    (hash: 32 bytes)

:func:`reconstruct` computes the root hash with the interface specification's
domain separators; :func:`lookup_path` and :func:`lookup_subtree` follow the
spec's ``lookup_path`` / ``find_label`` algorithm, which relies on the labels of a
forest (the nodes under a chain of forks) being strictly increasing. The IC and
:func:`build` only produce such trees; :func:`parse` checks the shape of every
node but not the label order, so a lookup in an unsorted tree is only as
meaningful as the signer who produced it.

:class:`HashedTree` is a built tree that keeps the hash of every subtree, so its
root hash and any number of witnesses cost no hashing after construction, and a
``HashedTree`` can be reused as a value inside a bigger mapping.

:func:`read_witness` reads what a verifier needs from a witness's CBOR (its root hash and
the leaves below one label) in one pass, without building the node tuples.

``reconstruct``, ``lookup_path``, ``read_witness``, ``leaf_hash``, ``fork_hash`` and
``labeled_hash`` are the Cython twins of ``icws_fast._ext._hashtree`` when they are built
(bound by :func:`icws_fast._ext.twin`); the pure versions are ``<name>_pure``.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeAlias

from icws_fast import _ext
from icws_fast.errors import CborError, HashTreeError
from icws_fast.ic import cbor

Node: TypeAlias = tuple[Any, ...]
Label: TypeAlias = bytes | str
Path: TypeAlias = Sequence[Label]
# Mapping keys are invariant, so bytes-keyed and str-keyed mappings are separate alternatives.
TreeValue: TypeAlias = "bytes | TreeMapping | HashedTree"
TreeMapping: TypeAlias = "Mapping[bytes, TreeValue] | Mapping[str, TreeValue]"

EMPTY: Final = 0
FORK: Final = 1
LABELED: Final = 2
LEAF: Final = 3
PRUNED: Final = 4

# A hostile tree nested deeper than this is rejected instead of exhausting the stack.
# Real IC trees are a few dozen levels deep at most (balanced forks per level).
MAX_DEPTH: Final = 256
# Limit of reconstruct and lookup on trees built by hand (parsed trees are already within MAX_DEPTH):
# both the pure and the compiled versions stop there, the compiled one before the C stack could overflow.
MAX_NODE_DEPTH: Final = 512
_ARITY: Final = (1, 3, 3, 2, 2)

EMPTY_DOMAIN: Final = b"\x11ic-hashtree-empty"
FORK_DOMAIN: Final = b"\x10ic-hashtree-fork"
LABELED_DOMAIN: Final = b"\x13ic-hashtree-labeled"
LEAF_DOMAIN: Final = b"\x10ic-hashtree-leaf"

EMPTY_HASH: Final = hashlib.sha256(EMPTY_DOMAIN).digest()
EMPTY_NODE: Final[Node] = (EMPTY,)

FOUND: Final = "Found"
ABSENT: Final = "Absent"
UNKNOWN: Final = "Unknown"
ERROR: Final = "Error"


class Witness(NamedTuple):
    """What :func:`read_witness` reads from a tree: its root hash and the leaves below one label.

    ``leaves`` maps the label of every Labeled node over a Leaf in the flattened forest of the subtree at the
    label to the leaf's value (empty when the lookup does not find the label); ``ordered`` says whether the
    labels of that forest strictly increase (when they do not, a lookup there is not well defined).
    """

    root_hash: bytes
    leaves: dict[bytes, bytes]
    ordered: bool


class LookupResult(NamedTuple):
    """The answer of a lookup: ``status`` is Found / Absent / Unknown / Error; ``value`` is set when Found.

    ``value`` is the leaf's bytes for :func:`lookup_path` and the node for :func:`lookup_subtree`.
    """

    status: str
    value: Any = None


# ---------------------------------------------------------------------------------------------------------------
# Builders and hash helpers


def empty() -> Node:
    """The Empty node."""
    return EMPTY_NODE


def fork(left: Node, right: Node) -> Node:
    """A Fork of two nodes."""
    return (FORK, left, right)


def labeled(label: Label, subtree: Node) -> Node:
    """A Labeled node (a ``str`` label is UTF-8 encoded)."""
    return (LABELED, _label_bytes(label), subtree)


def leaf(value: bytes) -> Node:
    """A Leaf holding ``value``."""
    return (LEAF, bytes(value))


def pruned(digest: bytes) -> Node:
    """A Pruned node standing for a subtree whose root hash is ``digest`` (32 bytes)."""
    if len(digest) != 32:
        raise HashTreeError(f"a pruned hash is 32 bytes, got {len(digest)}")
    return (PRUNED, bytes(digest))


def leaf_hash_pure(value: bytes | bytearray | memoryview) -> bytes:
    """The hash of a Leaf holding ``value``."""
    h = hashlib.sha256(LEAF_DOMAIN)
    h.update(value)
    return h.digest()


def fork_hash_pure(left_hash: bytes, right_hash: bytes) -> bytes:
    """The hash of a Fork whose children hash to ``left_hash`` and ``right_hash``."""
    h = hashlib.sha256(FORK_DOMAIN)
    h.update(left_hash)
    h.update(right_hash)
    return h.digest()


def labeled_hash_pure(label: Label, subtree_hash: bytes) -> bytes:
    """The hash of a Labeled node whose subtree hashes to ``subtree_hash``."""
    h = hashlib.sha256(LABELED_DOMAIN)
    h.update(_label_bytes(label))
    h.update(subtree_hash)
    return h.digest()


def _label_bytes(label: Label) -> bytes:
    if isinstance(label, str):
        return label.encode("utf-8")
    if isinstance(label, (bytes, bytearray, memoryview)):
        return bytes(label)
    raise TypeError(f"a hash tree label is bytes or str, not {type(label).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Parsing and encoding


def parse(data: Any, *, max_depth: int = MAX_DEPTH) -> Node:
    """The node tuple of a hash tree given as CBOR bytes or as an already decoded CBOR value.

    Every node's shape is checked (tag, arity, byte strings, 32-byte pruned hashes,
    nesting at most ``max_depth``); anything else raises :class:`HashTreeError`.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            # Each tree level is one CBOR array; the margin covers the self-describe tag.
            data = cbor.decode(data, max_depth=max_depth + 2)
        except CborError as exc:
            raise HashTreeError(f"hash tree CBOR: {exc}") from exc
    return _parse(data, max_depth)


def _parse(obj: Any, depth: int) -> Node:
    if depth <= 0:
        raise HashTreeError("hash tree nested too deeply")
    # Exact types: cbor.Tag is a tuple too, and a tagged item (e.g. tag 4 around 32 bytes) is no tree node.
    if (type(obj) is not list and type(obj) is not tuple) or not obj:
        raise HashTreeError(f"a hash tree node is a non-empty array, got {type(obj).__name__}")
    tag = obj[0]
    n = len(obj)
    if type(tag) is not int:  # bool is an int subclass and not a valid tag
        raise HashTreeError("a hash tree node tag is an integer")
    if tag == FORK and n == 3:
        return (FORK, _parse(obj[1], depth - 1), _parse(obj[2], depth - 1))
    if tag == LABELED and n == 3 and isinstance(obj[1], bytes):
        return (LABELED, obj[1], _parse(obj[2], depth - 1))
    if tag == LEAF and n == 2 and isinstance(obj[1], bytes):
        return (LEAF, obj[1])
    if tag == PRUNED and n == 2 and isinstance(obj[1], bytes) and len(obj[1]) == 32:
        return (PRUNED, obj[1])
    if tag == EMPTY and n == 1:
        return EMPTY_NODE
    raise HashTreeError(f"malformed hash tree node (tag {tag}, {n} elements)")


def to_cbor(node: Node) -> bytes:
    """The CBOR encoding of ``node``, with the self-describe tag (as ic-websocket and agents send trees)."""
    return cbor.encode(node)


# ---------------------------------------------------------------------------------------------------------------
# Reconstruction and lookup (pure versions; see the module docstring for the compiled twins)


def _tag(node: Any) -> int:
    """The tag of ``node`` after checking that it is a tuple of the right arity with an int tag."""
    if type(node) is not tuple or not node:
        raise HashTreeError("a hash tree node is a non-empty tuple")
    tag = node[0]
    if type(tag) is not int or not EMPTY <= tag <= PRUNED or len(node) != _ARITY[tag]:
        raise HashTreeError(f"malformed hash tree node (tag {tag!r}, {len(node)} elements)")
    return tag


def _bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise HashTreeError(f"expected bytes in a hash tree node, got {type(value).__name__}")
    return value


def reconstruct_pure(node: Node) -> bytes:
    """The root hash of ``node`` (the interface specification's ``reconstruct``).

    Raises HashTreeError for a node that is not well formed (wrong tag, arity or
    field types, a pruned hash that is not 32 bytes, nesting over ``MAX_NODE_DEPTH``).
    """
    return _reconstruct(node, MAX_NODE_DEPTH)


def _reconstruct(node: Node, depth: int) -> bytes:
    if depth <= 0:
        raise HashTreeError("hash tree nested too deeply")
    tag = _tag(node)
    if tag == FORK:
        h = hashlib.sha256(FORK_DOMAIN)
        h.update(_reconstruct(node[1], depth - 1))
        h.update(_reconstruct(node[2], depth - 1))
        return h.digest()
    if tag == LABELED:
        h = hashlib.sha256(LABELED_DOMAIN)
        h.update(_bytes(node[1]))
        h.update(_reconstruct(node[2], depth - 1))
        return h.digest()
    if tag == LEAF:
        h = hashlib.sha256(LEAF_DOMAIN)
        h.update(_bytes(node[1]))
        return h.digest()
    if tag == PRUNED:
        digest = _bytes(node[1])
        if len(digest) != 32:
            raise HashTreeError(f"a pruned hash is 32 bytes, got {len(digest)}")
        return digest
    return EMPTY_HASH


def _find_label(label: bytes, tree: Node) -> LookupResult:
    """The spec's ``find_label(label, flatten_forks(tree))``, walking the forest left to right.

    Labels of a forest are strictly increasing, so the walk stops at the first label
    above ``label``: the answer is Absent when that label is the first element or
    directly follows another labeled node, Unknown when something hides what lies
    in between (a pruned node, or a leaf mixed into the forest).
    """
    stack = [tree]
    count = 0
    prev_tag = -1  # tag of the previous element of the flattened forest (-1: none yet)
    while stack:
        node = stack.pop()
        tag = _tag(node)
        if tag == FORK:
            if len(stack) >= MAX_NODE_DEPTH:
                raise HashTreeError("hash tree nested too deeply")
            stack.append(node[2])
            stack.append(node[1])
            continue
        if tag == EMPTY:
            continue
        if tag == LABELED:
            node_label = _bytes(node[1])
            if node_label == label:
                return LookupResult(FOUND, node[2])
            if node_label > label:
                return LookupResult(ABSENT if prev_tag in (-1, LABELED) else UNKNOWN)
        count += 1
        prev_tag = tag
    if count == 0 or prev_tag == LABELED or (count == 1 and prev_tag == LEAF):
        return LookupResult(ABSENT)
    return LookupResult(UNKNOWN)


def lookup_path_pure(tree: Node, path: Path) -> LookupResult:
    """The spec's ``lookup_path``: Found(leaf bytes), Absent, Unknown, or Error (the path ends at a fork/label).

    Raises HashTreeError when a node it visits is not well formed.
    """
    found = lookup_subtree(tree, path)
    if found.status != FOUND:
        return found
    node = found.value
    tag = _tag(node)
    if tag == LEAF:
        return LookupResult(FOUND, _bytes(node[1]))
    if tag == EMPTY:
        return LookupResult(ABSENT)
    if tag == PRUNED:
        return LookupResult(UNKNOWN)
    return LookupResult(ERROR)


def lookup_subtree(tree: Node, path: Path) -> LookupResult:
    """The node at ``path``: Found(node), or Absent / Unknown as :func:`lookup_path` decides them."""
    node = tree
    for label in path:
        found = _find_label(_label_bytes(label), node)
        if found.status != FOUND:
            return found
        node = found.value
    return LookupResult(FOUND, node)


def read_witness_pure(data: bytes | bytearray | memoryview, label: bytes) -> Witness:
    """The :class:`Witness` of the CBOR tree ``data`` at ``label``: what ``reconstruct(parse(data))``,
    ``lookup_subtree(tree, [label])`` and ``flatten_forks`` of the subtree found tell, in one reading.

    Accepts and refuses exactly what :func:`parse` does (HashTreeError).
    """
    tree = parse(data)
    found = lookup_subtree(tree, [label])
    leaves: dict[bytes, bytes] = {}
    ordered = True
    if found.status == FOUND:
        previous: bytes | None = None
        for node in flatten_forks(found.value):
            if node[0] != LABELED:
                continue
            if previous is not None and node[1] <= previous:
                ordered = False
            previous = node[1]
            if node[2][0] == LEAF:
                leaves[node[1]] = node[2][1]
    return Witness(reconstruct_pure(tree), leaves, ordered)


def flatten_forks(tree: Node) -> list[Node]:
    """The flattened forest of ``tree`` (spec ``flatten_forks``): its non-fork, non-empty nodes, in order."""
    out: list[Node] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        tag = _tag(node)
        if tag == FORK:
            stack.append(node[2])
            stack.append(node[1])
        elif tag != EMPTY:
            out.append(node)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Building trees and witnesses


class BalancedForks:
    """A balanced binary tree of forks over a sequence of node hashes, with the hash of every range cached.

    The range ``[lo, hi)`` splits at ``(lo + hi + 1) // 2``. The root hash and any pruned witness then cost no
    hashing, replacing one node's hash rehashes only the forks above it, and inserting or deleting a node rebuilds
    the forks. Used by :class:`HashedTree` for each level of labels and by certified maps that keep their nodes'
    hashes current themselves.
    """

    __slots__ = ("_forks", "_hashes")

    def __init__(self, hashes: Iterable[bytes] = ()) -> None:
        self._hashes: list[bytes] = list(hashes)
        self._forks: dict[tuple[int, int], bytes] = {}
        self._fill(0, len(self._hashes))

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def root_hash(self) -> bytes:
        """The hash of the whole fork tree (``EMPTY_HASH`` when there are no nodes)."""
        return self.range_hash(0, len(self._hashes))

    def range_hash(self, lo: int, hi: int) -> bytes:
        """The hash of the subtree over the nodes ``[lo, hi)`` (a range of the balanced structure)."""
        if hi - lo == 0:
            return EMPTY_HASH
        if hi - lo == 1:
            return self._hashes[lo]
        return self._forks[(lo, hi)]

    def _fill(self, lo: int, hi: int) -> bytes:
        if hi - lo <= 1:
            return self.range_hash(lo, hi)
        mid = (lo + hi + 1) // 2
        # A single node is read in place rather than by a call: the devnet rebuilds its forks every round.
        left = self._hashes[lo] if mid - lo == 1 else self._fill(lo, mid)
        right = self._hashes[mid] if hi - mid == 1 else self._fill(mid, hi)
        digest = fork_hash(left, right)
        self._forks[(lo, hi)] = digest
        return digest

    def update(self, index: int, digest: bytes) -> None:
        """Replace the hash of node ``index``; rehashes the ~log2(n) forks above it."""
        self._hashes[index] = digest
        path: list[tuple[int, int]] = []
        lo, hi = 0, len(self._hashes)
        while hi - lo > 1:
            path.append((lo, hi))
            mid = (lo + hi + 1) // 2
            lo, hi = (lo, mid) if index < mid else (mid, hi)
        for lo, hi in reversed(path):
            mid = (lo + hi + 1) // 2
            self._forks[(lo, hi)] = fork_hash(self.range_hash(lo, mid), self.range_hash(mid, hi))

    def insert(self, index: int, digest: bytes) -> None:
        """Insert a node before ``index``; the ranges shift, so every fork is rehashed."""
        self._hashes.insert(index, digest)
        self._rebuild()

    def delete(self, index: int) -> None:
        """Remove node ``index``; every fork is rehashed."""
        del self._hashes[index]
        self._rebuild()

    def _rebuild(self) -> None:
        self._forks.clear()
        self._fill(0, len(self._hashes))

    def tree(self, node: Callable[[int], Node]) -> Node:
        """The whole fork tree, with ``node(i)`` standing for node ``i``: nothing is pruned."""
        return self._whole(node, 0, len(self._hashes))

    def _whole(self, node: Callable[[int], Node], lo: int, hi: int) -> Node:
        if hi - lo == 0:
            return EMPTY_NODE
        if hi - lo == 1:
            return node(lo)
        mid = (lo + hi + 1) // 2
        return (FORK, self._whole(node, lo, mid), self._whole(node, mid, hi))

    def witness(self, kept: Mapping[int, Node]) -> Node:
        """The fork tree with ``kept[i]`` standing for node ``i``; every range without a kept node is Pruned."""
        return self._assemble(kept, sorted(kept), 0, len(self._hashes))

    def _assemble(self, kept: Mapping[int, Node], order: list[int], lo: int, hi: int) -> Node:
        if hi - lo == 0:
            return EMPTY_NODE
        first = bisect.bisect_left(order, lo)
        if first == len(order) or order[first] >= hi:
            return (PRUNED, self.range_hash(lo, hi))
        if hi - lo == 1:
            return kept[lo]
        mid = (lo + hi + 1) // 2
        return (FORK, self._assemble(kept, order, lo, mid), self._assemble(kept, order, mid, hi))


class HashedTree:
    """A tree built from a mapping, with the hash of every subtree computed once.

    The mapping's keys are labels (bytes, or str encoded as UTF-8); its values are
    bytes (a leaf), a nested mapping, or another :class:`HashedTree` (reused as is,
    so an unchanged subtree is never hashed again). The labels of each level are
    sorted and joined by a balanced binary tree of forks (:class:`BalancedForks`).
    """

    __slots__ = ("_forks", "_labels", "_values", "root_hash")

    def __init__(self, mapping: TreeMapping) -> None:
        items: dict[bytes, bytes | HashedTree] = {}
        for key, value in mapping.items():
            label = _label_bytes(key)
            if label in items:
                raise HashTreeError(f"duplicate label {label!r}")
            if isinstance(value, HashedTree):
                items[label] = value
            elif isinstance(value, (bytes, bytearray, memoryview)):
                items[label] = bytes(value)
            elif isinstance(value, Mapping):
                items[label] = HashedTree(value)
            else:
                raise TypeError(f"a tree value is bytes, a mapping or a HashedTree, not {type(value).__name__}")
        self._labels: list[bytes] = sorted(items)
        self._values: list[bytes | HashedTree] = [items[label] for label in self._labels]
        # The Labeled nodes of this level, in label order, under balanced forks.
        self._forks = BalancedForks(
            labeled_hash(label, value.root_hash if isinstance(value, HashedTree) else leaf_hash(value))
            for label, value in zip(self._labels, self._values, strict=True)
        )
        self.root_hash: bytes = self._forks.root_hash

    def __len__(self) -> int:
        return len(self._labels)

    def _child(self, index: int) -> Node:
        value = self._values[index]
        sub = value.tree() if isinstance(value, HashedTree) else (LEAF, value)
        return (LABELED, self._labels[index], sub)

    def _pruned_child(self, index: int) -> Node:
        # A label whose subtree is hidden: enough for find_label to prove a neighbour's absence.
        value = self._values[index]
        sub_hash = value.root_hash if isinstance(value, HashedTree) else leaf_hash(value)
        return (LABELED, self._labels[index], (PRUNED, sub_hash))

    def tree(self) -> Node:
        """The full tree, without pruning."""
        return self._forks.tree(self._child)

    def witness(self, paths: Iterable[Path]) -> Node:
        """A tree with the root hash of :meth:`tree` that reveals only what ``paths`` need.

        The subtree at the end of each path is kept whole. A path that runs past a
        leaf keeps the leaf. For a label that is missing, its neighbours are kept as
        labels over pruned subtrees, so that a lookup of the path answers Absent
        rather than Unknown. Everything else becomes Pruned nodes.
        """
        by_label: dict[bytes, list[Sequence[Label]]] = {}
        for path in paths:
            if not path:
                return self.tree()
            by_label.setdefault(_label_bytes(path[0]), []).append(path[1:])
        kept: dict[int, Node] = {}
        n = len(self._labels)
        for label, rests in by_label.items():
            index = bisect.bisect_left(self._labels, label)
            if index < n and self._labels[index] == label:
                value = self._values[index]
                if isinstance(value, HashedTree) and all(rests):
                    kept[index] = (LABELED, label, value.witness(rests))
                else:
                    kept[index] = self._child(index)
            else:
                for neighbour in (index - 1, index):
                    if 0 <= neighbour < n and neighbour not in kept:
                        kept[neighbour] = self._pruned_child(neighbour)
        return self._forks.witness(kept)


def build(mapping: TreeMapping | HashedTree) -> Node:
    """The full tree of ``mapping`` (see :class:`HashedTree` for the accepted values)."""
    hashed = mapping if isinstance(mapping, HashedTree) else HashedTree(mapping)
    return hashed.tree()


def witness(mapping: TreeMapping | HashedTree, paths: Iterable[Path]) -> Node:
    """The pruned witness of ``mapping`` for ``paths``; its root hash equals ``reconstruct(build(mapping))``."""
    hashed = mapping if isinstance(mapping, HashedTree) else HashedTree(mapping)
    return hashed.witness(paths)


class HashTree:
    """A parsed hash tree as an object: ``HashTree.from_cbor(data).reconstruct()`` / ``.lookup(path)``.

    A thin wrapper over the node functions for callers that prefer methods; it keeps the root
    hash once computed (a tree is immutable).
    """

    __slots__ = ("_root_hash", "root")

    def __init__(self, root: Node) -> None:
        self.root = root
        self._root_hash: bytes | None = None

    @classmethod
    def from_cbor(cls, data: bytes | bytearray | memoryview) -> HashTree:
        """Parse and validate the CBOR encoding of a tree (HashTreeError / CborError when malformed)."""
        return cls(parse(data))

    def reconstruct(self) -> bytes:
        """The root hash, with the spec's domain separators."""
        if self._root_hash is None:
            self._root_hash = reconstruct(self.root)
        return self._root_hash

    def lookup(self, path: Path) -> LookupResult:
        """The spec's ``lookup_path``: Found(value) / Absent / Unknown / Error."""
        return lookup_path(self.root, path)

    def lookup_subtree(self, path: Path) -> LookupResult:
        """The node at ``path`` (Found), or Absent / Unknown."""
        return lookup_subtree(self.root, path)

    def to_cbor(self) -> bytes:
        return to_cbor(self.root)


# The compiled twins (icws_fast/_ext/_hashtree.pyx) take over unless ICWS_FAST_PURE=1.
reconstruct = _ext.twin("_hashtree", reconstruct_pure)
lookup_path = _ext.twin("_hashtree", lookup_path_pure)
read_witness = _ext.twin("_hashtree", read_witness_pure)
leaf_hash = _ext.twin("_hashtree", leaf_hash_pure)
fork_hash = _ext.twin("_hashtree", fork_hash_pure)
labeled_hash = _ext.twin("_hashtree", labeled_hash_pure)
