"""Hash-tree parse and lookup (``icws_fast.ic.hashtree``), reconstruct, lookup_path and read_witness on both twins.

Input: the tree's CBOR (read_witness reads it itself, before parse). The paths looked up come from
the tree itself (every labeled node's path, and near misses: a label just before or after it, one
level too deep, the labels as text), so lookups end Found, Absent, Unknown and Error alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fuzz import fixtures
from fuzz.harness import Violation, twins
from icws_fast import _ext
from icws_fast.ic import hashtree

PREFIX = 0
_COMPILED = _ext.compiled("_hashtree")
_RECONSTRUCT = _COMPILED.reconstruct if _COMPILED else None
_LOOKUP_PATH = _COMPILED.lookup_path if _COMPILED else None
_READ_WITNESS = _COMPILED.read_witness if _COMPILED else None
_MAX_PATHS = 48


def _paths(tree: hashtree.Node) -> list[list[hashtree.Label]]:
    """Paths into ``tree``: those of its labeled nodes, and near misses of each."""
    paths: list[list[hashtree.Label]] = [[], [b""], [b"\xff" * 8]]
    stack: list[tuple[hashtree.Node, list[hashtree.Label]]] = [(tree, [])]
    while stack and len(paths) < _MAX_PATHS:
        node, prefix = stack.pop()
        if node[0] == hashtree.FORK:
            stack += [(node[2], prefix), (node[1], prefix)]
        elif node[0] == hashtree.LABELED:
            label: bytes = node[1]
            path = [*prefix, label]
            paths += [path, [*prefix, label + b"\x00"], [*prefix, label[:-1]], [*path, b"websocket"]]
            with contextlib.suppress(UnicodeDecodeError):
                paths.append([lab.decode() if isinstance(lab, bytes) else lab for lab in path])
            stack.append((node[2], path))
    return paths


def one_input(data: bytes) -> None:
    twins("read_witness", hashtree.read_witness_pure, _READ_WITNESS, data, b"websocket")
    tree = hashtree.parse(data)
    twins("reconstruct", hashtree.reconstruct_pure, _RECONSTRUCT, tree)
    if hashtree.parse(hashtree.to_cbor(tree)) != tree:
        raise Violation("parse(to_cbor(tree)) != tree")
    hashtree.flatten_forks(tree)
    for path in _paths(tree):
        twins("lookup_path", hashtree.lookup_path_pure, _LOOKUP_PATH, tree, path)
        hashtree.lookup_subtree(tree, path)
        if len(path) == 1 and isinstance(path[0], bytes):
            twins("read_witness", hashtree.read_witness_pure, _READ_WITNESS, data, path[0])


def seeds() -> Iterator[bytes]:
    for record in fixtures.records("hash_trees"):
        yield bytes.fromhex(record["cbor_hex"])
    for record in fixtures.records("certificates"):
        for message in record.get("ws_messages") or ([record["ws_message"]] if record.get("ws_message") else []):
            yield bytes.fromhex(message["tree_cbor_hex"])
    yield fixtures.certify_message("gateway_00000000000000000001", b"content")[1]
