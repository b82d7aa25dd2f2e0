"""Candid: the IC's interface description language and its binary encoding.

Types come from Candid text (:func:`parse_type`, :func:`parse_args`, :func:`parse_did`);
:func:`encode` and :func:`decode` translate between argument tuples and ``DIDL`` messages;
:func:`parse_value_args` reads an argument tuple written as Candid text (``(1 : nat64, opt "a")``).

Python mapping of values (encode takes it, decode returns it):

* ``null`` and ``reserved`` -> ``None``; ``bool`` -> ``bool``; ``nat``, ``int`` and the fixed-width
  integers -> ``int``; ``float32`` / ``float64`` -> ``float``; ``text`` -> ``str``;
  ``principal`` -> :class:`~icws_fast.ic.principal.Principal`.
* ``opt T`` -> ``None`` or the value. When ``T`` itself admits ``None`` (``T`` is ``null``,
  ``reserved`` or an ``opt``), a present value is wrapped in :class:`Some`, so that ``opt opt nat``
  keeps ``null`` (``None``), ``opt null`` (``Some(None)``) and ``opt opt 5`` (``Some(5)``) apart.
  Encoding requires the same wrapping at exactly the same places.
* ``blob`` / ``vec nat8`` -> ``bytes`` (encode also takes ``bytearray``, ``memoryview`` or a list of
  ints); any other ``vec`` -> ``list`` (encode takes any list or tuple).
* ``record`` -> ``dict`` keyed by field name, or by ``int`` for numeric field ids
  (``record { 5 : nat }`` -> ``{5: ...}``). A tuple record (field ids exactly ``0..n-1`` and no
  names, e.g. ``record { nat; text }``) -> ``tuple`` (encode also takes a list). Encoding lets a
  field of type ``opt``/``null``/``reserved`` be left out of the dict (it encodes as ``null``).
* ``variant`` -> one-key ``dict`` (``{"Ok": None}`` for a tag without payload).
* ``func`` reference -> :class:`FuncRef` ``(principal, method)``; ``service`` reference ->
  :class:`~icws_fast.ic.principal.Principal`.

Decoding follows the Candid specification's coercion rules: extra arguments and record fields are
skipped, missing arguments and record fields of type ``opt``/``null``/``reserved`` read as
``None``, ``nat`` decodes at ``int``, a service reference at ``principal``, and a value that does not
coerce at an ``opt`` type becomes ``None``. A decoder is compiled once per (message type table,
expected types) pair and cached, so steady-state decoding of a stream of same-typed messages does
not interpret types again. Decoding is metered against hostile input: type tables, nesting depth
and the number of decoded elements (including zero-sized ones such as ``vec null``) are bounded,
and every failure raises :class:`~icws_fast.errors.CandidError`.

The package, bottom-up: :mod:`.types` (type objects, :func:`idl_hash`, rendering), :mod:`.lexer`
(Candid text split into tokens), :mod:`.parser` (types written as text), :mod:`.values` (values
written as text), :mod:`.typetable` (a message's type table, written and read), :mod:`.encoder`,
:mod:`.readers` (the decoder's leaf value readers) and :mod:`.decoder`. Import from
``icws_fast.ic.candid``; the submodules are its implementation.
"""

from __future__ import annotations

from icws_fast.ic.candid.decoder import ELEMENT_BUDGET_BASE, ELEMENT_BUDGET_PER_BYTE, MAX_DEPTH, decode
from icws_fast.ic.candid.encoder import encode
from icws_fast.ic.candid.parser import parse_args, parse_did, parse_type
from icws_fast.ic.candid.types import (
    BLOB,
    BOOL,
    EMPTY,
    FLOAT32,
    FLOAT64,
    INT,
    INT8,
    INT16,
    INT32,
    INT64,
    MAX_TYPE_DEPTH,
    NAT,
    NAT8,
    NAT16,
    NAT32,
    NAT64,
    NULL,
    PRINCIPAL,
    RESERVED,
    TEXT,
    DidFile,
    Field,
    FuncRef,
    FuncType,
    FutureType,
    NamedType,
    OptType,
    PrimType,
    RecordType,
    ServiceType,
    Some,
    Type,
    VariantType,
    VecType,
    idl_hash,
)
from icws_fast.ic.candid.typetable import MAGIC, MAX_TYPE_TABLE
from icws_fast.ic.candid.values import parse_value_args

__all__ = [
    "BLOB",
    "BOOL",
    "ELEMENT_BUDGET_BASE",
    "ELEMENT_BUDGET_PER_BYTE",
    "EMPTY",
    "FLOAT32",
    "FLOAT64",
    "INT",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "MAGIC",
    "MAX_DEPTH",
    "MAX_TYPE_DEPTH",
    "MAX_TYPE_TABLE",
    "NAT",
    "NAT8",
    "NAT16",
    "NAT32",
    "NAT64",
    "NULL",
    "PRINCIPAL",
    "RESERVED",
    "TEXT",
    "DidFile",
    "Field",
    "FuncRef",
    "FuncType",
    "FutureType",
    "NamedType",
    "OptType",
    "PrimType",
    "RecordType",
    "ServiceType",
    "Some",
    "Type",
    "VariantType",
    "VecType",
    "decode",
    "encode",
    "idl_hash",
    "parse_args",
    "parse_did",
    "parse_type",
    "parse_value_args",
]
