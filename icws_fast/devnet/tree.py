"""The devnet's certified state tree, kept with cached hashes so that certifying a round is cheap.

The IC certifies its whole state tree every round and answers each ``read_state`` with a witness
(the tree with everything the request did not ask for replaced by ``Pruned`` hashes). Rebuilding
and rehashing the whole tree for every round and every witness would make the devnet the
bottleneck of a gateway benchmark (the ingress history alone holds every request of the last
minutes), so :class:`LabeledMap` caches, per entry, the hash of its labeled node and, per block of
entries, the hashes of the balanced forks above them:

- entries are grouped into chunks by the first byte of their label (request ids are uniformly
  distributed, so a round that touches ``k`` entries rehashes about ``k`` chunks, not the whole map);
- each chunk is a balanced binary tree of forks over its sorted entries, and the map is a balanced
  binary tree of forks over its sorted chunks (both :class:`~icws_fast.ic.hashtree.BalancedForks`).
  Any fork shape is a valid hash tree as long as an in-order walk meets the labels sorted, which
  chunking by the first byte preserves.

Nodes use the tuple form of :mod:`icws_fast.ic.hashtree` (``(0,)`` Empty, ``(1, l, r)`` Fork,
``(2, label, t)`` Labeled, ``(3, v)`` Leaf, ``(4, h)`` Pruned); they encode to CBOR directly.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Union

from icws_fast.ic.hashtree import EMPTY_NODE, BalancedForks, HashedTree, Node, labeled_hash, leaf_hash, reconstruct

Value = Union[bytes, "LabeledMap", "FrozenLeaves"]
Path = Sequence[bytes]


def _chunk_key(label: bytes) -> int:
    return label[0] if label else -1


def prune_path(node: Node, path: Path) -> Node:
    """``node`` with the subtree at ``path`` (if revealed) replaced by its Pruned hash; same root hash."""
    kind = node[0]
    if kind == 1:
        return (1, prune_path(node[1], path), prune_path(node[2], path))
    if kind == 2 and path and node[1] == path[0]:
        if len(path) == 1:
            return (2, node[1], (4, reconstruct(node[2])))
        return (2, node[1], prune_path(node[2], path[1:]))
    return node


class FrozenLeaves:
    """An immutable small map ``label -> bytes`` (a request status): compact, hashed once.

    The ingress history holds one such subtree per request for minutes; a :class:`LabeledMap` per
    entry would cost kilobytes each. Witnesses are rebuilt on demand, which is cheap for a handful
    of leaves.
    """

    __slots__ = ("_hash", "items")

    def __init__(self, items: dict[bytes, bytes]) -> None:
        self.items = items
        self._hash = HashedTree(items).root_hash

    def root_hash(self) -> bytes:
        return self._hash

    def witness(self, paths: Sequence[Path]) -> Node:
        return HashedTree(self.items).witness(paths)


class _Chunk:
    """The entries of a map whose labels share a first byte."""

    __slots__ = ("entry_hashes", "forks", "labels")

    def __init__(self) -> None:
        self.labels: list[bytes] = []
        self.entry_hashes: dict[bytes, bytes] = {}
        self.forks: BalancedForks | None = None


class LabeledMap:
    """A mutable map ``label -> bytes leaf | LabeledMap`` that hashes like the IC's labeled forest.

    Mutate it with :meth:`set` / :meth:`delete` (a nested map changed in place must be ``set`` again
    so its parent rehashes it). :meth:`root_hash` recomputes only what changed since the last call.
    """

    __slots__ = ("_children", "_chunk_keys", "_chunks", "_dirty", "_top")

    def __init__(self, items: dict[bytes, Value] | None = None) -> None:
        self._children: dict[bytes, Value] = {}
        self._chunks: dict[int, _Chunk] = {}
        self._chunk_keys: list[int] = []
        self._dirty: set[int] = set()
        self._top: BalancedForks | None = None
        for label, value in (items or {}).items():
            self.set(label, value)

    def set(self, label: bytes, value: Value) -> None:
        """Insert or replace the entry ``label``."""
        key = _chunk_key(label)
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._chunks[key] = _Chunk()
            bisect.insort(self._chunk_keys, key)
        if label not in self._children:
            bisect.insort(chunk.labels, label)
        self._children[label] = value
        chunk.entry_hashes.pop(label, None)
        self._dirty.add(key)

    def delete(self, label: bytes) -> None:
        """Remove the entry ``label`` if present."""
        if self._children.pop(label, None) is None:
            return
        key = _chunk_key(label)
        chunk = self._chunks[key]
        del chunk.labels[bisect.bisect_left(chunk.labels, label)]
        chunk.entry_hashes.pop(label, None)
        if chunk.labels:
            self._dirty.add(key)
        else:
            del self._chunks[key]
            del self._chunk_keys[bisect.bisect_left(self._chunk_keys, key)]
            self._dirty.discard(key)
            self._top = None

    @staticmethod
    def _value_hash(value: Value) -> bytes:
        return leaf_hash(value) if isinstance(value, bytes) else value.root_hash()

    def root_hash(self) -> bytes:
        """The hash of the forest (``reconstruct`` of :meth:`full`)."""
        if self._dirty or self._top is None:
            for key in self._dirty:
                chunk = self._chunks[key]
                hashes = chunk.entry_hashes
                for label in chunk.labels:
                    if label not in hashes:
                        hashes[label] = labeled_hash(label, self._value_hash(self._children[label]))
                chunk.forks = BalancedForks([hashes[label] for label in chunk.labels])
            self._dirty.clear()
            self._top = BalancedForks([self._chunk_forks(key).root_hash for key in self._chunk_keys])
        return self._top.root_hash

    def _chunk_forks(self, key: int) -> BalancedForks:
        forks = self._chunks[key].forks
        assert forks is not None  # set by root_hash before any reader gets here
        return forks

    def full(self) -> Node:
        """The whole subtree, nothing pruned."""
        return self.witness([()])

    def witness(self, paths: Sequence[Path]) -> Node:
        """The subtree revealing every path in ``paths`` (relative to this map), the rest pruned.

        A path that ends inside this map reveals the whole subtree at its end. A label that is
        absent is proven absent by revealing the labels next to it (with pruned subtrees), as a
        verifier needs to answer ``Absent`` rather than ``Unknown``. A path that continues below a
        leaf reveals the leaf.
        """
        self.root_hash()
        if any(len(path) == 0 for path in paths):
            wanted_all: dict[bytes, list[Path]] = {label: [()] for label in self._children}
            return self._witness(wanted_all, set())
        wanted: dict[bytes, list[Path]] = {}
        neighbours: set[bytes] = set()
        for path in paths:
            label = path[0]
            if label in self._children:
                wanted.setdefault(label, []).append(path[1:])
            else:
                neighbours.update(self._neighbours(label))
        return self._witness(wanted, neighbours - wanted.keys())

    def _neighbours(self, label: bytes) -> list[bytes]:
        """The labels right before and after an absent ``label`` (across chunks)."""
        key = _chunk_key(label)
        found: list[bytes] = []
        i = bisect.bisect_left(self._chunk_keys, key)
        chunk = self._chunks.get(key)
        if chunk is not None:
            j = bisect.bisect_left(chunk.labels, label)
            if j > 0:
                found.append(chunk.labels[j - 1])
            elif i > 0:
                found.append(self._chunks[self._chunk_keys[i - 1]].labels[-1])
            if j < len(chunk.labels):
                found.append(chunk.labels[j])
            elif i + 1 < len(self._chunk_keys):
                found.append(self._chunks[self._chunk_keys[i + 1]].labels[0])
        else:
            if i > 0:
                found.append(self._chunks[self._chunk_keys[i - 1]].labels[-1])
            if i < len(self._chunk_keys):
                found.append(self._chunks[self._chunk_keys[i]].labels[0])
        return found

    def _entry(self, label: bytes, rests: list[Path] | None) -> Node:
        value = self._children[label]
        if rests is None:
            return (2, label, (4, self._value_hash(value)))
        if isinstance(value, bytes):
            return (2, label, (3, value))
        return (2, label, value.witness(rests))

    def _witness(self, wanted: dict[bytes, list[Path]], neighbours: AbstractSet[bytes]) -> Node:
        if self._top is None or not self._chunk_keys:
            return EMPTY_NODE
        by_chunk: dict[int, dict[int, Node]] = {}
        for label in (*wanted, *neighbours):
            key = _chunk_key(label)
            index = bisect.bisect_left(self._chunks[key].labels, label)
            by_chunk.setdefault(key, {})[index] = self._entry(label, wanted.get(label))
        top_kept = {
            bisect.bisect_left(self._chunk_keys, key): self._chunk_forks(key).witness(kept)
            for key, kept in by_chunk.items()
        }
        return self._top.witness(top_kept)
