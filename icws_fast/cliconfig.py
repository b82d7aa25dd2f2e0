"""Config dataclasses that declare their own command line.

A config is a frozen dataclass. Each field carries its documentation (an attribute docstring)
and, when a flag or an environment variable sets it, a :class:`Flag` in its metadata, declared
with :func:`flag`. From that one declaration come the argument parser (:func:`build_parser`), the
config built from a command line (:func:`config_from_argv`) and the reference table of the
flags (:func:`flag_table`). The dataclass default is the only default: a flag left out is not
passed to the constructor at all.

Values are checked once, by the config's ``__post_init__`` (with the ``check_*`` helpers here),
whether it was built by a command line or by code; a bad value raises :class:`ConfigError`
naming the field, which the command line turns into an error naming the flag and the text given.

Precedence: flag, then environment variable, then the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import icws_fast
from icws_fast.errors import ConfigError

__all__ = [
    "ConfigError",
    "Flag",
    "address_flag",
    "build_parser",
    "check_address",
    "check_at_least",
    "check_http_url",
    "check_port",
    "check_positive",
    "check_readable_file",
    "config_from_argv",
    "flag",
    "flag_table",
    "parse_address",
    "parse_float",
    "parse_int",
    "show_address",
]

C = TypeVar("C")

_METADATA_KEY = "icws_fast.flag"


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a command line sets a config field (see :func:`flag`)."""

    name: str | None
    help: str
    env: str | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] = str
    show: Callable[[Any], str] = str
    choices: tuple[str, ...] | None = None
    switch: bool = False
    collect: Callable[[list[Any]], Any] | None = None
    also: tuple[str, ...] = ()


def flag(
    default: Any,
    name: str | None,
    help: str,
    *,
    env: str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] = str,
    show: Callable[[Any], str] = str,
    choices: tuple[str, ...] | None = None,
    switch: bool = False,
    collect: Callable[[list[Any]], Any] | None = None,
    also: tuple[str, ...] = (),
) -> Any:
    """A dataclass field with ``default``, set by the flag ``name`` (None: only by ``env``).

    ``help`` is the one-line meaning shown by ``--help`` and in the flag table. ``parse`` turns
    the flag's text into the field's value, raising :class:`ValueError` with a message for
    text it cannot read (range and sanity checks belong to the config's ``__post_init__``);
    ``show`` turns a value back into flag text, for the defaults shown. A ``switch`` takes no
    value and sets True. A flag with ``collect`` may be repeated: its parsed values, in order,
    are passed to ``collect``. A flag whose value is several fields (``--gateway-address`` is
    a host and a port) lists the other fields in ``also``; ``parse`` returns a tuple of the
    values of this field and then of ``also``, and ``show`` receives such a tuple.
    """
    spec = Flag(name, help, env, metavar, parse, show, choices, switch, collect, also)
    return dataclasses.field(default=default, metadata={_METADATA_KEY: spec})


def address_flag(default_host: str | None, name: str, help: str, *, port_field: str) -> Any:
    """A host field set, with the field ``port_field`` (declared after it), by a ``HOST:PORT`` flag."""
    return flag(
        default_host, name, help, metavar="HOST:PORT", parse=parse_address, show=show_address, also=(port_field,)
    )


def _flags(config_type: type[Any]) -> Iterator[tuple[dataclasses.Field[Any], Flag]]:
    for field in dataclasses.fields(config_type):
        spec = field.metadata.get(_METADATA_KEY)
        if spec is not None:
            yield field, spec


def _default_text(config_type: type[Any], field: dataclasses.Field[Any], spec: Flag) -> str | None:
    """The default as flag text (None: the flag has no default, e.g. an optional path)."""
    if spec.switch:
        return None
    defaults = {f.name: f.default for f in dataclasses.fields(config_type)}
    if spec.also:
        return spec.show(tuple(defaults[name] for name in (field.name, *spec.also)))
    if field.default is None or (spec.collect is not None and not field.default):
        return None
    return spec.show(field.default)


def _described(config_type: type[Any], field: dataclasses.Field[Any], spec: Flag) -> str:
    """What ``--help`` says of a setting: its meaning, its default and the variable that may set it."""
    text = spec.help
    default = _default_text(config_type, field, spec)
    if default is not None:
        text += f" (default: {default})"
    if spec.env is not None and spec.name is not None:
        text += f" [env: {spec.env}]"
    return text


def build_parser(config_type: type[Any], *, prog: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of ``config_type``'s flags; ``--help`` shows each default and variable."""
    env_only = [
        f"  {spec.env}: {_described(config_type, field, spec)}"
        for field, spec in _flags(config_type)
        if spec.name is None
    ]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="environment variables:\n" + "\n".join(env_only) if env_only else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Every flag spelled out, as the Rust gateway's parser wants: `--drain 5` must not quietly mean
        # --drain-timeout (and a future flag must not change what an abbreviation meant).
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {icws_fast.__version__}")
    for field, spec in _flags(config_type):
        if spec.name is None:
            continue
        help_text = _described(config_type, field, spec).replace("%", "%%")  # argparse formats help with %
        dest = field.name
        if spec.switch:
            parser.add_argument(spec.name, dest=dest, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(
                spec.name,
                dest=dest,
                action="append" if spec.collect is not None else "store",
                default=None,
                metavar=spec.metavar,
                choices=spec.choices,
                help=help_text,
            )
    return parser


def config_from_argv(
    config_type: type[C],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into ``config_type``.

    ``parser`` comes from :func:`build_parser`. Bad flag text or a value the config refuses exits
    through ``parser.error``: a message naming the flag and the text given, exit status 2, no
    traceback. Environment variables are read from ``environ`` (default: ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # field -> how the user wrote it, for error messages
    for field, spec in _flags(config_type):
        raw = getattr(args, field.name, None)
        if raw is not None:
            source = spec.name
        elif spec.env is not None and environ.get(spec.env):
            raw, source = environ[spec.env], spec.env
        else:
            continue
        assert source is not None
        if spec.switch:
            values[field.name] = True
            continue
        texts = raw if isinstance(raw, list) else [raw]
        parsed = [_parse(parser, spec, _given(source, text), text) for text in texts]
        value = spec.collect(parsed) if spec.collect is not None else parsed[0]
        shown = _given(source, " ".join(texts))
        for name, part in zip((field.name, *spec.also), value if spec.also else (value,), strict=True):
            values[name] = part
            given[name] = shown
    try:
        config = config_type(**values)
    except ConfigError as exc:
        where = given.get(exc.field, exc.field)
        parser.error(f"{where}: {exc.problem}")
    return config


def _given(source: str, text: str) -> str:
    """How the user set a value: ``--flag TEXT`` or ``VARIABLE=TEXT``."""
    return f"{source} {text}" if source.startswith("-") else f"{source}={text}"


def _parse(parser: argparse.ArgumentParser, spec: Flag, given: str, text: str) -> Any:
    try:
        return spec.parse(text)
    except ValueError as exc:
        parser.error(f"{given}: {exc}")


def flag_table(config_type: type[Any]) -> str:
    """The flags of ``config_type`` as a Markdown table: flag, environment variable, default, meaning."""
    rows = ["| Flag | Env | Default | Meaning |", "| --- | --- | --- | --- |"]
    for field, spec in _flags(config_type):
        default = _default_text(config_type, field, spec)
        metavar = spec.metavar or ("{" + ",".join(spec.choices) + "}" if spec.choices else None)
        usage = " ".join(part for part in (spec.name, metavar) if part)
        cells = [
            f"`{usage}`" if usage else "",
            f"`{spec.env}`" if spec.env else "",
            f"`{default}`" if default is not None else "",
            spec.help,
        ]
        # A `|` splits a Markdown table cell even inside backticks (`NAME=MODULE:CLASS|NAME=PATH.wasm`).
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


# -- flag text readers and writers --------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets; an empty host is every interface) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_int(text: str) -> int:
    """A whole number, in decimal."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def parse_float(text: str) -> float:
    """A number, possibly with a fraction."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def show_address(address: tuple[str, int]) -> str:
    """The text :func:`parse_address` reads back into ``address``."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- checks for __post_init__ ---------------------------------------------------------------------


def check_port(field: str, port: int, *, lowest: int = 0) -> None:
    """A TCP port from ``lowest`` (0: the system picks a free one; 1 where a port must be named) to 65535."""
    if not lowest <= port <= 65535:
        raise ConfigError(field, f"port {port} is out of range ({lowest}-65535)")


def check_address(field: str, address: str) -> None:
    """A ``HOST:PORT`` listen address (port 0: any free port)."""
    try:
        _, port = parse_address(address)
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None
    check_port(field, port)


def check_positive(field: str, value: float, what: str = "value") -> None:
    """A size, count or duration that must be above zero."""
    if not value > 0:  # also refuses NaN
        raise ConfigError(field, f"{what} must be positive, got {value}")


def check_at_least(field: str, value: float, lowest: float, what: str = "value") -> None:
    """A value that may be ``lowest`` (typically 0: "never" or "at once") or more."""
    if not value >= lowest:
        raise ConfigError(field, f"{what} must be at least {lowest}, got {value}")


def check_http_url(field: str, url: str) -> None:
    """An ``http://`` or ``https://`` URL with a host (and a port from 1 to 65535, when given)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # e.g. a port that is not a number, or out of range
        raise ConfigError(field, f"malformed URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(field, f"expected an http:// or https:// URL with a host, got {url!r}")
    if port == 0:
        raise ConfigError(field, f"port 0 is out of range (1-65535) in {url!r}")


def check_readable_file(field: str, path: Path) -> None:
    """A file the process can open for reading (the check is opening it, as the use will)."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(field, f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
