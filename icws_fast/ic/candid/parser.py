"""Candid text: type expressions, argument tuples and ``.did`` files parsed into :mod:`.types`.

The parser takes untrusted text: nesting is bounded (``MAX_TYPE_DEPTH``), every name must be defined,
no alias chain may loop without a type constructor, and every failure raises
:class:`~icws_fast.errors.CandidError` with the offset of the offending token.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from icws_fast.errors import CandidError
from icws_fast.ic.candid.lexer import TokenCursor, integer
from icws_fast.ic.candid.types import (
    BLOB,
    KEYWORDS,
    MAX_FIELD_ID,
    MAX_TYPE_DEPTH,
    MODE_CODES,
    NULL,
    PRIM_BY_NAME,
    DidFile,
    Field,
    FuncType,
    NamedType,
    OptType,
    RecordType,
    ServiceType,
    Type,
    VariantType,
    VecType,
    idl_hash,
    resolve,
)

__all__ = ["as_types", "parse_args", "parse_did", "parse_type"]


class _Env:
    """Type definitions being parsed: one :class:`NamedType` per name, defined or not yet."""

    def __init__(self, base: _Env | None = None) -> None:
        self.names: dict[str, NamedType] = dict(base.names) if base else {}

    def ref(self, name: str) -> NamedType:
        named = self.names.get(name)
        if named is None:
            named = self.names[name] = NamedType(name)
        return named

    def check(self) -> None:
        """Every referenced name is defined, and no alias chain loops without a constructor."""
        for name, named in self.names.items():
            if named._definition is None:
                raise CandidError(f"type {name!r} is not defined")
        for named in self.names.values():
            seen: set[int] = set()
            t: Type = named
            while isinstance(t, NamedType):
                if id(t) in seen:
                    raise CandidError(f"type {named.name!r} is defined as itself")
                seen.add(id(t))
                t = t.definition


class _Parser(TokenCursor):
    def __init__(self, text: str, env: _Env) -> None:
        super().__init__(text)
        self.env = env

    def name(self) -> str:
        """A field, tag, method or argument name: an identifier other than a keyword, or a quoted text."""
        tok = self.next()
        if tok.kind not in ("id", "text"):
            self.unread(tok)
            self.fail("expected a name")
        if tok.kind == "id" and tok.value in KEYWORDS:
            self.unread(tok)
            self.fail(f'a keyword cannot be a name; quote it as "{tok.value}"')
        return self.text(tok) if tok.kind == "text" else tok.value

    def nat(self) -> int:
        tok = self.next()
        value = integer(tok.value) if tok.kind == "num" and tok.value[0] not in "+-" else None
        if value is None:
            self.unread(tok)
            self.fail("expected a natural number")
        return value

    # -- grammar -------------------------------------------------------------------------
    def datatype(self, depth: int = 0) -> Type:
        if depth > MAX_TYPE_DEPTH:
            self.fail("type nested too deeply")
        d = depth + 1
        tok = self.next()
        if tok.kind != "id":
            self.unread(tok)
            self.fail("expected a type")
        word = tok.value
        prim = PRIM_BY_NAME.get(word)
        if prim is not None:
            return prim
        if word == "opt":
            return OptType(self.datatype(d))
        if word == "vec":
            return VecType(self.datatype(d))
        if word == "blob":
            return BLOB
        if word == "record":
            return self.record(d)
        if word == "variant":
            return self.variant(d)
        if word == "func":
            return self.functype(d)
        if word == "service":
            return self.actortype(d)
        if word in KEYWORDS:
            self.i -= 1
            self.fail("expected a type")
        return self.env.ref(word)

    def field_label(self) -> tuple[int, str | int] | None:
        """``name :`` or ``nat :`` ahead: consume it and return (id, key); else None."""
        tok = self.peek()
        if not self.at(":", 1):
            return None
        if tok.kind == "num":
            field_id = self.nat()
            if field_id > MAX_FIELD_ID:
                self.fail("field id larger than 2**32-1")
            self.next()
            return field_id, field_id
        if tok.kind in ("id", "text"):
            name = self.name()
            self.next()
            return idl_hash(name), name
        return None

    def record(self, depth: int) -> RecordType:
        self.expect("{")
        fields: list[Field] = []
        next_id = 0
        while not self.accept("}"):
            label = self.field_label()
            if label is None:
                if next_id > MAX_FIELD_ID:
                    self.fail("field id larger than 2**32-1")
                fid: int = next_id
                key: str | int = next_id
            else:
                fid, key = label
            fields.append(Field(fid, key, self.datatype(depth)))
            next_id = fid + 1
            if not self.accept(";"):
                self.expect("}")
                break
        return RecordType(_unique_fields(self, fields))

    def variant(self, depth: int) -> VariantType:
        self.expect("{")
        fields: list[Field] = []
        while not self.accept("}"):
            label = self.field_label()
            if label is not None:
                fields.append(Field(label[0], label[1], self.datatype(depth)))
            elif self.peek().kind == "num":
                fid = self.nat()
                if fid > MAX_FIELD_ID:
                    self.fail("field id larger than 2**32-1")
                fields.append(Field(fid, fid, NULL))
            else:
                tag = self.name()
                fields.append(Field(idl_hash(tag), tag, NULL))
            if not self.accept(";"):
                self.expect("}")
                break
        return VariantType(_unique_fields(self, fields))

    def tuple(self, depth: int) -> list[Type]:
        """``( argtype, ... )`` where an argument may carry a name (``(to : principal)``)."""
        self.expect("(")
        types: list[Type] = []
        while not self.accept(")"):
            if self.peek().kind in ("id", "text") and self.at(":", 1):
                self.name()
                self.next()
            types.append(self.datatype(depth))
            if not self.accept(","):
                self.expect(")")
                break
        return types

    def functype(self, depth: int) -> FuncType:
        args = self.tuple(depth)
        self.expect("->")
        rets = self.tuple(depth)
        modes: list[str] = []
        while self.peek().kind == "id" and self.peek().value in MODE_CODES:
            modes.append(self.next().value)
        if len(modes) > 1:
            self.fail("a function takes at most one of query, composite_query, oneway")
        if "oneway" in modes and rets:
            self.fail("a oneway function has no results")
        return FuncType(args, rets, modes)

    def actortype(self, depth: int) -> ServiceType:
        self.expect("{")
        methods: dict[str, Type] = {}
        while not self.accept("}"):
            name = self.name()
            self.expect(":")
            if name in methods:
                self.fail(f"duplicate method {name!r}")
            methods[name] = self.functype(depth) if self.at("(") else self.datatype(depth)
            if not self.accept(";"):
                self.expect("}")
                break
        return ServiceType(methods)

    def definitions(self) -> DidFile:
        """A whole .did source: ``type`` definitions, then optionally the service."""
        service: Type | None = None
        init: list[Type] | None = None
        while self.peek().kind != "eof":
            if self.accept("type"):
                tok = self.next()
                if tok.kind != "id" or tok.value in KEYWORDS or tok.value in PRIM_BY_NAME:
                    self.unread(tok)
                    self.fail("expected a type name")
                named = self.env.ref(tok.value)
                if named._definition is not None:
                    self.fail(f"type {tok.value!r} defined twice")
                self.expect("=")
                named._definition = self.datatype()
            elif self.accept("import"):
                self.fail("imports are not supported")
            elif self.accept("service"):
                if service is not None:
                    self.fail("more than one service")
                if self.peek().kind == "id" and not self.at(":"):
                    self.next()
                self.expect(":")
                if self.at("("):
                    init = self.tuple(0)
                    self.expect("->")
                service = self.actortype(0) if self.at("{") else self.datatype()
            else:
                self.fail("expected 'type' or 'service'")
            if not self.accept(";") and self.peek().kind != "eof":
                self.fail("expected ';'")
        self.env.check()
        resolved: ServiceType | None = None
        if service is not None:
            target = resolve(service)
            if not isinstance(target, ServiceType):
                raise CandidError("the service of a .did file must have a service type")
            for name, method in target.methods.items():
                if not isinstance(resolve(method), FuncType):
                    raise CandidError(f"method {name!r} does not have a function type")
            resolved = target
        types: dict[str, Type] = dict(self.env.names)
        return DidFile(types, resolved, tuple(init) if init is not None else None)


def _unique_fields(parser: _Parser, fields: list[Field]) -> list[Field]:
    ids = [f.id for f in fields]
    if len(set(ids)) != len(ids):
        parser.fail("duplicate field id (or field names whose hashes collide)")
    return fields


@functools.lru_cache(maxsize=64)
def _parse_defs(defs: str | None) -> _Env:
    env = _Env()
    if defs is not None:
        _Parser(defs, env).definitions()
    return env


@functools.lru_cache(maxsize=512)
def _parse_type_cached(text: str, defs: str | None) -> Type:
    env = _Env(_parse_defs(defs))
    parser = _Parser(text, env)
    t = parser.datatype()
    parser.end()
    env.check()
    return t


@functools.lru_cache(maxsize=512)
def _parse_args_cached(text: str, defs: str | None) -> tuple[Type, ...]:
    env = _Env(_parse_defs(defs))
    parser = _Parser(text, env)
    types = parser.tuple(0)
    parser.end()
    env.check()
    return tuple(types)


def parse_type(text: str, defs: str | None = None) -> Type:
    """Parse one Candid type, e.g. ``"record { text : text; timestamp : nat64 }"``.

    ``defs`` is .did text whose ``type X = ...;`` definitions the expression may name. Results are
    cached: the same ``(text, defs)`` gives the same :class:`Type` object (and so hits the
    encoder/decoder caches).
    """
    return _parse_type_cached(text, defs)


def parse_args(text: str, defs: str | None = None) -> list[Type]:
    """Parse an argument tuple type such as ``"(nat, opt text)"`` (arguments may be named)."""
    return list(_parse_args_cached(text, defs))


def parse_did(text: str) -> DidFile:
    """Parse a .did source: type definitions and an optional service (with method annotations)."""
    return _Parser(text, _Env()).definitions()


def as_types(types: Sequence[Type] | str) -> tuple[Type, ...]:
    if isinstance(types, str):
        return _parse_args_cached(types, None)
    result = tuple(types)
    for t in result:
        if not isinstance(t, Type):
            raise TypeError(f"expected Candid types, got {type(t).__name__}")
    return result
