"""What the user guides hold, read the way the tests check them: code blocks, command lines, links, flag tables.

The guides mark what a test does with a block in an HTML comment on the line before its fence (invisible on
GitHub): ``<!-- test: run -->`` runs a Python block against a devnet and a gateway, ``<!-- test: run NAME -->``
against a devnet hosting the canister module ``NAME``, and ``<!-- test: file NAME.py -->`` is that module.
A flag table sits between ``<!-- flag-table: COMMAND -->`` and ``<!-- /flag-table -->``;
``python -m tests.docs.guides`` rewrites every such table from the command's configuration.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from icws_fast.devnet.cli import flag_table as devnet_flags
from icws_fast.gateway.config import flag_table as gateway_flags

REPO: Final = Path(__file__).resolve().parent.parent.parent
GUIDES: Final = tuple(REPO / name for name in ("README.md", "docs/gateway.md", "docs/client.md", "docs/cdk.md"))
# The guides link to these for recipes: their command lines, make targets and links are checked too.
RECIPES: Final = tuple(REPO / name for name in ("docs/operations.md", "docs/deploy.md", "docs/devnet.md"))

_FENCE = re.compile(r"^```(\S*)\s*$")
_TEST_MARK = re.compile(r"^<!-- test: (run|file)(?: (\S+))? -->$")
_TABLE = re.compile(r"(<!-- flag-table: (\S+) -->\n)(.*?)(<!-- /flag-table -->)", re.DOTALL)
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)
# `RUST_LOG_FILE=off cmd`, `PYTHONPATH=. cmd`: environment assignments before a command.
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# A line of an unlabelled block that runs one of our programs (with flags: `icws-gateway ── ...` is a diagram).
_OUR_COMMAND = re.compile(r"^\s*(?:\S*/)?(?:(?:icws-gateway|icws-devnet)(?:\s+-|\s*$)|make\s+[a-z]|docker run\b)")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its guide, first line number (of the fence), info string, test mark and text."""

    guide: Path
    line: int
    info: str
    mark: tuple[str, str | None] | None
    text: str

    def where(self) -> str:
        return f"{self.guide.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Command:
    """One command of a shell block: its environment assignments and its words (``$VAR`` and globs kept)."""

    block: Block
    env: dict[str, str]
    words: list[str]


def blocks(guide: Path) -> list[Block]:
    """The fenced blocks of ``guide``, in order."""
    found = []
    lines = guide.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    info = ""
    for index, line in enumerate(lines):
        fence = _FENCE.match(line.strip())
        if fence is None:
            continue
        if start is None:
            start, info = index, fence.group(1)
            continue
        previous = lines[start - 1].strip() if start > 0 else ""
        mark = _TEST_MARK.match(previous)
        body = "\n".join(lines[start + 1 : index]) + "\n"
        found.append(Block(guide, start + 1, info, (mark.group(1), mark.group(2)) if mark else None, body))
        start = None
    if start is not None:
        raise ValueError(f"{guide.relative_to(REPO)}:{start + 1}: a code block is never closed")
    return found


def commands(block: Block) -> list[Command]:
    """The commands of a shell block: continuation lines joined, comments dropped, split at ``&&``, ``;``, ``&``."""
    if block.info not in ("sh", "shell", "bash", "console", ""):
        return []
    found = []
    for line in block.text.replace("\\\n", " ").splitlines():
        if not block.info and not _OUR_COMMAND.match(line):
            continue  # an unlabelled block may be a diagram: read only the lines that run our programs
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, ";"]:
            if word in ("&&", ";", "&", "||", "|"):
                if current:
                    env = {}
                    while current and _ASSIGNMENT.match(current[0]):
                        name, _, value = current.pop(0).partition("=")
                        env[name] = value
                    if current:
                        found.append(Command(block, env, current))
                current = []
            else:
                current.append(word.removesuffix("&") if word.endswith("&") and len(word) > 1 else word)
    return found


def program(command: Command) -> tuple[str, list[str]] | None:
    """``(name, arguments)`` when the command runs ``icws-gateway`` or ``icws-devnet`` (directly, from a
    virtualenv's ``bin``, or as the image of ``docker run``), else None."""
    words = command.words
    name = Path(words[0]).name
    if name in ("icws-gateway", "icws-devnet"):
        return name, words[1:]
    if words[:2] == ["docker", "run"] and "icws-gateway" in words:
        return "icws-gateway", words[words.index("icws-gateway") + 1 :]
    return None


def make_targets_named(guide: Path) -> list[tuple[Block | None, str]]:
    """Every ``make TARGET`` a guide names: in shell blocks, and inline as `` `make TARGET ...` ``."""
    found: list[tuple[Block | None, str]] = []
    for block in blocks(guide):
        found += [(block, c.words[1]) for c in commands(block) if c.words[0] == "make" and len(c.words) > 1]
    text = guide.read_text(encoding="utf-8")
    found += [(None, target) for target in re.findall(r"`make ([a-z][\w-]*)", text)]
    return found


def makefile_targets() -> set[str]:
    """The targets the Makefile defines."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {name for names in re.findall(r"^([\w .$()-]+?):(?!=)", text, re.MULTILINE) for name in names.split()}


def links(guide: Path) -> list[str]:
    """The relative link targets of ``guide`` (``path``, ``path#anchor`` or ``#anchor``)."""
    return [t for t in _LINK.findall(guide.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", t)]


def anchors(document: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``document`` (code blocks' ``#`` lines are no headings)."""
    text = document.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    slugs = set()
    for heading in _HEADING.findall(text):
        plain = heading.replace("`", "").lower()
        slugs.add(re.sub(r"[^\w\- ]", "", plain).replace(" ", "-"))
    return slugs


def flag_tables() -> dict[str, Callable[[], str]]:
    """The commands whose flags the guides list, and the function that renders each table."""
    return {"icws-gateway": gateway_flags, "icws-devnet": devnet_flags}


def tables_in(guide: Path) -> dict[str, str]:
    """The flag tables in ``guide``, by command."""
    return {match.group(2): match.group(3) for match in _TABLE.finditer(guide.read_text(encoding="utf-8"))}


def rewrite_tables(guide: Path) -> bool:
    """Regenerate the flag tables of ``guide``; True when it changed."""
    renderers = flag_tables()
    text = guide.read_text(encoding="utf-8")

    def render(match: re.Match[str]) -> str:
        if match.group(2) not in renderers:
            raise ValueError(f"{guide.relative_to(REPO)}: no flag table for {match.group(2)!r}")
        return match.group(1) + renderers[match.group(2)]() + match.group(4)

    new = _TABLE.sub(render, text)
    if new != text:
        guide.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    changed = [str(guide.relative_to(REPO)) for guide in GUIDES if rewrite_tables(guide)]
    print("rewrote the flag tables of " + ", ".join(changed) if changed else "the flag tables are up to date")
    sys.exit(0)
