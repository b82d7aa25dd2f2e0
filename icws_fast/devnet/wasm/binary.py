"""Reading (and lightly rewriting) a WebAssembly binary: custom sections and the canister's globals.

Only what the host needs, parsed from the module bytes themselves (wasmtime does not expose either):

- the ``icp:public``/``icp:private`` custom sections, which hold a canister's metadata such as
  ``candid:service``;
- its state: a trap must roll back the mutable globals (a Rust canister's stack pointer, Motoko's
  heap pointer), callbacks are entries of table 0 and the System API reads memory 0, but the
  embedding API reaches only exported items, so :func:`export_internals` adds an export for each
  global the module defines, for table 0 and for memory 0. The module's code is unchanged.
"""

from __future__ import annotations

from typing import Final

from icws_fast.errors import DecodeError, IcwsError
from icws_fast.ic.leb128 import decode_leb128, leb128

WASM_MAGIC: Final = b"\0asm"
_CUSTOM, _IMPORT, _GLOBAL, _EXPORT = 0, 2, 6, 7
_FUNCTION_KIND, _TABLE_KIND, _MEMORY_KIND, _GLOBAL_KIND = 0, 1, 2, 3
_START: Final = 8
#: Sections that define tables, memories and globals, by the import kind they add to.
_DEFINING: Final = {4: _TABLE_KIND, 5: _MEMORY_KIND, 6: _GLOBAL_KIND}
#: Sections that come after the export section: start, element, data count, code, data.
_AFTER_EXPORT: Final = frozenset({8, 9, 10, 11, 12})
#: Prefix of the export names :func:`export_internals` adds for globals (``__icws_global_<index>``).
GLOBAL_EXPORT_PREFIX: Final = "__icws_global_"
#: The export names :func:`export_internals` gives table 0 (callbacks) and memory 0.
TABLE_EXPORT: Final = "__icws_table"
MEMORY_EXPORT: Final = "__icws_memory"
#: The export name :func:`export_internals` gives the start function (which no longer starts by itself).
START_EXPORT: Final = "__icws_start"


class WasmModuleError(IcwsError):
    """A canister module that is not a WebAssembly binary the devnet can host."""


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return decode_leb128(data, pos)
    except DecodeError as exc:
        raise WasmModuleError(f"bad LEB128 integer in the WebAssembly module: {exc}") from None


def _name(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _uleb(data, pos)
    if pos + size > len(data):
        raise WasmModuleError("truncated name in the WebAssembly module")
    try:
        return data[pos : pos + size].decode(), pos + size
    except UnicodeDecodeError:
        raise WasmModuleError("a name in the WebAssembly module is not UTF-8") from None


def sections(module: bytes) -> list[tuple[int, int, int, int]]:
    """``(id, header, start, end)`` of every section (header: its first byte; start..end: its content)."""
    if module[:4] != WASM_MAGIC or len(module) < 8:
        raise WasmModuleError("not a WebAssembly binary module (bad magic number)")
    if module[4:8] != b"\1\0\0\0":
        raise WasmModuleError(f"unsupported WebAssembly binary version {module[4:8].hex()}")
    found = []
    pos = 8
    while pos < len(module):
        section_id = module[pos]
        size, start = _uleb(module, pos + 1)
        end = start + size
        if end > len(module):
            raise WasmModuleError(f"section {section_id} runs past the end of the module")
        found.append((section_id, pos, start, end))
        pos = end
    return found


def custom_sections(module: bytes) -> dict[str, bytes]:
    """The custom sections by name (the last one wins when a name repeats)."""
    found = {}
    for section_id, _, start, end in sections(module):
        if section_id == _CUSTOM:
            name, pos = _name(module, start)
            found[name] = module[pos:end]
    return found


def canister_metadata(module: bytes, name: str) -> bytes | None:
    """A canister metadata entry (``icp:public <name>`` or ``icp:private <name>``), if present."""
    custom = custom_sections(module)
    for visibility in ("icp:public", "icp:private"):
        value = custom.get(f"{visibility} {name}")
        if value is not None:
            return value
    return None


def _skip_limits(data: bytes, pos: int) -> int:
    flags = data[pos]
    pos += 1
    _, pos = _uleb(data, pos)  # minimum
    if flags & 0x01:
        _, pos = _uleb(data, pos)  # maximum
    if flags & 0x08:
        _, pos = _uleb(data, pos)  # custom page size (log2)
    return pos


def _skip_reftype(data: bytes, pos: int) -> int:
    if data[pos] in (0x63, 0x64):  # (ref null? heaptype): the heap type is an s33
        return _uleb(data, pos + 1)[1]
    return pos + 1


def _import_counts(data: bytes, start: int) -> dict[int, int]:
    """How many functions, tables, memories, globals... the module imports, by import kind."""
    count, pos = _uleb(data, start)
    counts = dict.fromkeys(range(5), 0)
    for _ in range(count):
        _, pos = _name(data, pos)
        _, pos = _name(data, pos)
        kind = data[pos]
        pos += 1
        counts[kind] = counts.get(kind, 0) + 1
        if kind in (0x00, 0x04):  # function: type index; tag: attribute byte + type index
            pos = _uleb(data, pos + (kind == 0x04))[1]
        elif kind == 0x01:  # table: reference type + limits
            pos = _skip_limits(data, _skip_reftype(data, pos))
        elif kind == 0x02:  # memory: limits
            pos = _skip_limits(data, pos)
        elif kind == _GLOBAL_KIND:  # global: value type + mutability
            pos = _skip_reftype(data, pos) + 1
        else:
            raise WasmModuleError(f"unknown import kind {kind:#x} in the WebAssembly module")
    return counts


def export_internals(module: bytes) -> bytes:
    """``module`` with exports for its state and its start function.

    Adds ``__icws_global_<index>`` for every global it defines, :data:`TABLE_EXPORT` for table 0
    and :data:`MEMORY_EXPORT` for memory 0 when it has them; the start function, if any, is no
    longer run on instantiation but exported as :data:`START_EXPORT`, so that the host runs it when
    the IC would: on installation and upgrade, after an upgraded canister got its memory back.
    """
    found = sections(module)
    imported = dict.fromkeys(range(5), 0)
    defined = dict.fromkeys(range(5), 0)
    start_function: int | None = None
    for section_id, _, start, end in found:
        if section_id == _IMPORT:
            try:
                imported = _import_counts(module[:end], start)
            except IndexError:
                raise WasmModuleError("truncated import section in the WebAssembly module") from None
        elif section_id in _DEFINING:
            defined[_DEFINING[section_id]] = _uleb(module, start)[0]
        elif section_id == _START:
            start_function = _uleb(module, start)[0]
    first_global = imported[_GLOBAL_KIND]
    entries = [
        (f"{GLOBAL_EXPORT_PREFIX}{index}", _GLOBAL_KIND, index)
        for index in range(first_global, first_global + defined[_GLOBAL_KIND])
    ]
    for name, kind in ((TABLE_EXPORT, _TABLE_KIND), (MEMORY_EXPORT, _MEMORY_KIND)):
        if imported[kind] + defined[kind]:
            entries.append((name, kind, 0))
    if start_function is not None:
        entries.append((START_EXPORT, _FUNCTION_KIND, start_function))
    if not entries:
        return module
    extra = b"".join(leb128(len(name)) + name.encode() + bytes([kind]) + leb128(index) for name, kind, index in entries)
    exports = next((section for section in found if section[0] == _EXPORT), None)
    if exports is None:
        new_exports = _section(_EXPORT, leb128(len(entries)) + extra)
    else:
        count, body = _uleb(module, exports[2])
        new_exports = _section(_EXPORT, leb128(count + len(entries)) + module[body : exports[3]] + extra)
    out = [module[:8]]
    placed = False
    for section_id, header, _, end in found:
        if not placed and (section_id == _EXPORT or section_id in _AFTER_EXPORT):
            out.append(new_exports)
            placed = True
        if section_id not in (_EXPORT, _START):
            out.append(module[header:end])
    if not placed:
        out.append(new_exports)
    return b"".join(out)


def _section(section_id: int, content: bytes) -> bytes:
    return bytes([section_id]) + leb128(len(content)) + content
