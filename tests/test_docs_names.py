"""The docs name only what exists: every Python name they mention resolves in the package as it is.

Two rules, so the check reads the docs the way a person does:

* anywhere in ``docs/api.md``, ``docs/contracts.md``, ``docs/architecture.md`` and the user guides
  (``gateway.md``, ``client.md``, ``cdk.md``), a backticked dotted
  name that starts at the package (``icws_fast.gateway.server.Gateway``) or at one of its subpackages
  (``protocol.session.GatewaySession.receive``) must resolve;
* in ``docs/api.md``, under a heading that names a module (``## `icws_fast.ic.cbor` ``), the first
  backticked name of each list item is what the item documents and must resolve in that module; an item
  starting with ``.name`` documents an attribute of the class the previous item resolved to.

A name resolves when importing the module and following the attributes works, or, for an attribute
of a class, when it is a dataclass field or an attribute the class (or a base) assigns in its code.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PACKAGE = DOCS.parent / "icws_fast"
DOC_FILES = ("api.md", "contracts.md", "architecture.md", "gateway.md", "client.md", "cdk.md")
SUBPACKAGES = ("ic", "protocol", "gateway", "client", "cdk", "devnet", "_ext", "errors", "cliconfig")

_SPAN = re.compile(r"`([^`\n]+)`")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ABSOLUTE = re.compile(r"(?:icws_fast|" + "|".join(re.escape(p) for p in SUBPACKAGES) + r")\.[A-Za-z_]")
_MODULE_HEADING = re.compile(r"^#{2,4} .*?`(icws_fast(?:\.[A-Za-z_][A-Za-z0-9_]*)*)`")
_ITEM = re.compile(r"^- `([^`\n]+)")
_CONSTANT = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])`")
_FILE_NAME = re.compile(r"\.(?:md|py|pyi|pyx|pxd|did|wasm|wat|toml|json|mjs)$")
_PREFIXES = ("await ", "async ", "class ", "@")


class _Missing(Exception):
    pass


def _has_attribute(owner: Any, name: str) -> bool:
    if hasattr(owner, name):
        return True
    if not inspect.isclass(owner):
        return False
    for cls in owner.__mro__:
        if dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
            return True
        if name in getattr(cls, "__annotations__", {}):
            return True
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(name)}\s*(?::[^=\n]+)?=[^=]", source):
            return True
    return False


def _resolve(dotted: str) -> Any:
    """The object ``dotted`` (``icws_fast.x.y.Name.attr``) names; raises ``_Missing`` when it does not exist."""
    parts = dotted.split(".")
    if parts[:2] == ["icws_fast", "_ext"] and len(parts) > 2 and parts[2].startswith("_"):
        # A compiled module is importable only after a build: its source must exist, with its typed stub.
        source = PACKAGE / "_ext" / parts[2]
        if not (source.with_suffix(".pyx").is_file() and source.with_suffix(".pyi").is_file()):
            raise _Missing(f"no {parts[2]}.pyx and .pyi in icws_fast/_ext")
        return None
    obj: Any = None
    module_end = 0
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        module_end = end
        break
    if obj is None:
        raise _Missing(f"no module in {dotted}")
    for index in range(module_end, len(parts)):
        name = parts[index]
        if not _has_attribute(obj, name):
            raise _Missing(f"{'.'.join(parts[:index])} has no {name}")
        if not hasattr(obj, name):
            return None  # an instance attribute: nothing further to follow
        obj = getattr(obj, name)
    return obj


def _dotted_head(span: str) -> str | None:
    text = span.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if text.startswith("for "):
        return None  # a loop (`async for value in ws`), not a name
    if _FILE_NAME.search(text):
        return None  # a file (`devnet.md`, `.wasm`), not a name
    match = _DOTTED.match(text)
    return match.group(0) if match else None


def _absolute_names(text: str) -> list[tuple[int, str]]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for span in _SPAN.findall(line):
            head = _dotted_head(span)
            if head is None or not _ABSOLUTE.match(head):
                continue
            found.append((lineno, head if head.startswith("icws_fast.") else "icws_fast." + head))
    return found


def _item_names(text: str) -> list[tuple[int, str]]:
    """(line, dotted name) of what each list item under a module heading documents, resolved as it goes.

    That is the item's first name, every ``.attribute`` in an item about a class, and every UPPER_CASE
    constant in the section: a name of the module, or of the class the item documents (an enum member).
    """
    found: list[tuple[int, str]] = []
    module: str | None = None
    current_class: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        heading = _MODULE_HEADING.match(line)
        if heading:
            module, current_class = heading.group(1), None
            continue
        if line.startswith("#"):
            module = current_class = None
        if module is None or line.startswith("|"):
            continue
        item = _ITEM.match(line)
        if item is not None:
            current_class = _item_name(found, lineno, module, current_class, item.group(1).strip())
        if current_class is not None and (item is not None or line.startswith("  ")):
            # Every `.attribute` of an item about a class (`.tree`, `.root_hash`) is an attribute of that class.
            spans = _SPAN.findall(line)[1 if item is not None else 0 :]
            for span in spans:
                head = _dotted_head(span[1:]) if span.startswith(".") and not _FILE_NAME.search(span) else None
                if head:
                    found.append((lineno, f"{current_class}.{head}"))
        for constant in _CONSTANT.findall(line):
            in_class = current_class is not None and _has_attribute(_safe_resolve(current_class), constant)
            owner = current_class if in_class else module
            found.append((lineno, f"{owner}.{constant}"))
    return found


def _item_name(
    found: list[tuple[int, str]], lineno: int, module: str, current_class: str | None, span: str
) -> str | None:
    """Record the name an item documents; returns the class later ``.attribute`` items belong to."""
    if span.startswith("."):
        head = _dotted_head(span[1:])
        if head:
            found.append((lineno, f"{current_class or module + '.<no class>'}.{head}"))
        return current_class
    head = _dotted_head(span)
    if head is None or head.startswith("icws_fast."):
        return current_class  # not a name, or one the absolute rule checks
    dotted = f"{module}.{head}"
    found.append((lineno, dotted))
    obj = _safe_resolve(dotted)
    if inspect.isclass(obj):
        return dotted
    parent = dotted.rsplit(".", 1)[0]
    return parent if "." in head and inspect.isclass(_safe_resolve(parent)) else None


def _safe_resolve(dotted: str) -> Any:
    try:
        return _resolve(dotted)
    except _Missing:
        return None


def _names() -> list[tuple[str, int, str]]:
    names = []
    for doc in DOC_FILES:
        text = (DOCS / doc).read_text(encoding="utf-8")
        names += [(doc, lineno, dotted) for lineno, dotted in _absolute_names(text)]
        if doc == "api.md":
            names += [(doc, lineno, dotted) for lineno, dotted in _item_names(text)]
    return names


def test_docs_exist() -> None:
    for doc in DOC_FILES:
        assert (DOCS / doc).is_file(), f"docs/{doc} is missing"


def test_the_docs_mention_names() -> None:
    # A broken parser would find nothing and pass everything: make sure it finds what the docs hold.
    names = {dotted for _, _, dotted in _names()}
    assert {doc for doc, _, _ in _names()} == set(DOC_FILES)  # every doc names something the check reads
    assert "icws_fast.gateway.config.flag_table" in names  # from gateway.md
    assert "icws_fast.client.IcWebSocket.connect" in names
    assert "icws_fast.gateway.config.GatewayConfig" in names
    assert "icws_fast.ic.principal.Principal.from_text" in names
    assert len(names) > 200


def test_every_documented_name_exists() -> None:
    missing = []
    for doc, lineno, dotted in _names():
        try:
            _resolve(dotted)
        except _Missing as exc:
            missing.append(f"docs/{doc}:{lineno}: `{dotted}` ({exc})")
    assert not missing, "names in the docs that the code does not have:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("module", "name"), [("icws_fast.gateway.config", "GatewayConfig"), ("icws_fast.devnet.cli", "DevnetConfig")]
)
def test_every_config_field_is_documented(module: str, name: str) -> None:
    config = _resolve(f"{module}.{name}")
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    spans = set(_SPAN.findall(text))
    undocumented = [f.name for f in dataclasses.fields(config) if f.name not in spans]
    assert not undocumented, f"{name} fields missing from docs/api.md: {undocumented}"


def test_resolve_refuses_what_does_not_exist() -> None:
    with pytest.raises(_Missing):
        _resolve("icws_fast.gateway.server.Gateway.no_such_method")
    with pytest.raises(_Missing):
        _resolve("icws_fast.no_such_module")
    assert isinstance(_resolve("icws_fast.ic.cbor"), ModuleType)
