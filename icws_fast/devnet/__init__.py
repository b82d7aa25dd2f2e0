"""A local IC replica speaking the IC HTTP interface and hosting Python canisters (``icws-devnet``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icws_fast.devnet.server import Devnet

__all__ = ["Devnet"]


def __getattr__(name: str) -> Any:
    # Lazy: importing a submodule (the demo canisters, the launcher) must not start loading the server.
    if name == "Devnet":
        from icws_fast.devnet.server import Devnet  # noqa: PLC0415

        return Devnet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
