"""The certified map of the IC WebSocket CDK: message key -> sha256(content), updated in O(log n) hashes.

The Rust CDK keeps the map in an RB tree and certifies ``labeled_hash("websocket", root)``. A client only checks
that the witness it gets reconstructs to the certified data and that ``lookup(["websocket", key])`` finds the
hash of the message content, so any valid hash tree with the labels in order works. This one exploits the
structure of the keys, ``"<gateway>_<nonce, 20 digits>"`` with consecutive nonces per gateway, appended at the end
and deleted from the front:

- per gateway, the entries sit at their nonce in an implicit binary trie over the nonce space; a trie node
  with one non-empty child *is* that child (no fork is emitted for it), so the tree is a plain fork tree over the
  entries in nonce order;
- the gateways' subtrees are joined by a balanced fork tree in key order (the keys of one gateway are contiguous in
  the global order because they share the prefix ``"<gateway>_"``), a :class:`~icws_fast.ic.hashtree.BalancedForks`
  with every range hash cached, so updating one gateway costs log2(number of gateways) forks and only adding or
  dropping a gateway rebuilds that level.

Hashing is lazy: an insert or delete hashes only the entry's leaf and notes what changed; the ancestors are
rehashed when the root or a witness is asked for, each changed node once. A canister certifies the map once per
execution (:func:`~icws_fast.cdk.api.certified_data_set_deferred`), so a timer that queues n consecutive messages
rehashes about n forks in all, where rehashing after every message cost n * log2(queue length).

A witness for a range of one gateway's nonces keeps the labeled leaves of the range and prunes everything else, so
its size is O(messages returned + log n).
"""

from __future__ import annotations

import bisect
import hashlib

from icws_fast.ic.hashtree import (
    EMPTY_HASH,
    FORK,
    LABELED,
    LEAF,
    PRUNED,
    BalancedForks,
    Node,
    fork_hash,
    labeled_hash,
    leaf_hash,
)
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import LABEL_WEBSOCKET

__all__ = ["CertifiedMessageMap"]


class _NonceTrie:
    """The entries of one gateway, keyed by nonce (see the module docstring)."""

    __slots__ = ("_changed", "_labels", "_levels", "_values")

    def __init__(self) -> None:
        # _labels[nonce] and _values[nonce]: the entry's label and leaf value (two dicts of bytes rather than one
        # of tuples: such dicts are not tracked by the garbage collector, however large they grow);
        # _levels[l][i] = hash of the trie node covering the nonces
        # [i << l, (i + 1) << l), present only when that range holds an entry. The trie is only as tall as the
        # largest nonce needs (every nonce < 2 ** height), so its top level holds at most the node 0: the root.
        # Level 0 is always current; the levels above are current once the nonces in _changed are rehashed.
        self._labels: dict[int, bytes] = {}
        self._values: dict[int, bytes] = {}
        self._levels: list[dict[int, bytes]] = [{}]
        self._changed: list[int] = []

    def __len__(self) -> int:
        return len(self._values)

    @property
    def root_hash(self) -> bytes:
        self._rehash()
        return self._levels[-1].get(0, EMPTY_HASH)

    def insert(self, nonce: int, label: bytes, value: bytes) -> None:
        while nonce >> (len(self._levels) - 1):
            # One level taller: the new root's only child is the old root. A stale root is fine here, since
            # rehashing the changed nonces recomputes their ancestors on every level, the new ones included.
            top = self._levels[-1]
            self._levels.append({0: top[0]} if 0 in top else {})
        self._labels[nonce] = label
        self._values[nonce] = value
        self._levels[0][nonce] = labeled_hash(label, leaf_hash(value))
        self._changed.append(nonce)

    def delete(self, nonce: int) -> None:
        if self._values.pop(nonce, None) is not None:
            del self._labels[nonce]
            del self._levels[0][nonce]
            self._changed.append(nonce)

    def _rehash(self) -> None:
        """Recompute the ancestors of the changed nonces, level by level, each one once."""
        if not self._changed:
            return
        indices = set(self._changed)
        self._changed = []
        below = self._levels[0]
        for level in range(1, len(self._levels)):
            here = self._levels[level]
            indices = {index >> 1 for index in indices}
            for index in indices:
                left = below.get(2 * index)
                right = below.get(2 * index + 1)
                if left is not None:
                    # A node with one child is that child.
                    here[index] = left if right is None else fork_hash(left, right)
                elif right is not None:
                    here[index] = right
                else:
                    here.pop(index, None)
            below = here

    def witness(self, first: int, last: int) -> Node:
        """The subtree with the entries of nonces ``first..last`` revealed and everything else pruned.

        Only for a non-empty trie (the map drops a gateway's trie when it empties).
        """
        self._rehash()
        return self._emit(len(self._levels) - 1, 0, first, last)

    def _emit(self, level: int, index: int, first: int, last: int) -> Node:
        # Walk down the chain of one-child nodes until a fork, a leaf or a range outside [first, last].
        while True:
            start = index << level
            if start > last or ((index + 1) << level) - 1 < first:
                return (PRUNED, self._levels[level][index])
            if level == 0:
                return (LABELED, self._labels[index], (LEAF, self._values[index]))
            below = self._levels[level - 1]
            has_left = 2 * index in below
            has_right = 2 * index + 1 in below
            level -= 1
            if has_left and has_right:
                return (
                    FORK,
                    self._emit(level, 2 * index, first, last),
                    self._emit(level, 2 * index + 1, first, last),
                )
            index = 2 * index if has_left else 2 * index + 1


class CertifiedMessageMap:
    """Message key -> sha256(content) for every queued message of every gateway; the hashes above the leaves are
    brought up to date when the root or a witness is asked for.

    ``certified_data`` is what the canister certifies, ``witness(gateway, first, last)`` the tree
    ``ws_get_messages`` returns for the nonces ``first..last`` of ``gateway``.
    """

    __slots__ = ("_changed", "_gateways", "_prefixes", "_tries")

    def __init__(self) -> None:
        self._tries: dict[Principal, _NonceTrie] = {}
        # The non-empty gateways in key order (by "<text>_" prefix) and the balanced forks joining their tries, as
        # of the last refresh; the gateways changed since then.
        self._prefixes: list[bytes] = []
        self._gateways = BalancedForks()
        self._changed: set[Principal] = set()

    def __len__(self) -> int:
        return sum(len(trie) for trie in self._tries.values())

    def insert(self, gateway: Principal, nonce: int, key: str, content: bytes) -> None:
        """Add the message ``key`` (whose nonce for ``gateway`` is ``nonce``) certifying ``sha256(content)``."""
        trie = self._tries.get(gateway)
        if trie is None:
            trie = self._tries[gateway] = _NonceTrie()
        trie.insert(nonce, key.encode(), hashlib.sha256(content).digest())
        self._changed.add(gateway)

    def delete(self, gateway: Principal, nonces: list[int]) -> None:
        """Remove the messages of ``gateway`` with these nonces (unknown ones are ignored)."""
        trie = self._tries.get(gateway)
        if trie is None or not nonces:
            return
        for nonce in nonces:
            trie.delete(nonce)
        self._changed.add(gateway)

    def remove_gateway(self, gateway: Principal) -> None:
        """Remove every message of ``gateway``."""
        if self._tries.pop(gateway, None) is not None:
            self._changed.add(gateway)

    @property
    def root_hash(self) -> bytes:
        """The root hash of the map (the subtree under the ``websocket`` label)."""
        self._refresh()
        return self._gateways.root_hash

    @property
    def certified_data(self) -> bytes:
        """``labeled_hash("websocket", root_hash)``: the 32 bytes the canister certifies."""
        return labeled_hash(LABEL_WEBSOCKET, self.root_hash)

    def witness(self, gateway: Principal, first: int, last: int) -> Node:
        """``labeled("websocket", ...)`` revealing the messages of nonces ``first..last`` of ``gateway``."""
        self._refresh()
        trie = self._tries.get(gateway)
        position = self._position(gateway)
        if trie is None or position is None:
            return (LABELED, LABEL_WEBSOCKET, (PRUNED, self.root_hash))
        return (LABELED, LABEL_WEBSOCKET, self._gateways.witness({position: trie.witness(first, last)}))

    @staticmethod
    def _prefix(gateway: Principal) -> bytes:
        return gateway.to_text().encode() + b"_"

    def _position(self, gateway: Principal) -> int | None:
        prefix = self._prefix(gateway)
        i = bisect.bisect_left(self._prefixes, prefix)
        return i if i < len(self._prefixes) and self._prefixes[i] == prefix else None

    def _refresh(self) -> None:
        """Bring the gateway level up to date: updating a gateway rehashes log2(gateways) forks, adding or
        dropping one rebuilds the level."""
        for gateway in self._changed:
            trie = self._tries.get(gateway)
            position = self._position(gateway)
            if trie is None or not trie:
                self._tries.pop(gateway, None)
                if position is not None:
                    del self._prefixes[position]
                    self._gateways.delete(position)
            elif position is None:
                prefix = self._prefix(gateway)
                i = bisect.bisect_left(self._prefixes, prefix)
                self._prefixes.insert(i, prefix)
                self._gateways.insert(i, trie.root_hash)
            else:
                self._gateways.update(position, trie.root_hash)
        self._changed.clear()
