"""``echo``: a small canister for the @dfinity/agent check and the devnet benchmark, with replies a test can predict.

Both run it on ``icws-devnet`` in its own process (:func:`echo_devnet`), so that the devnet has an interpreter
(and a core) of its own while the load runs elsewhere. Its methods: update ``shout(text) -> (text)`` (upper
case), update ``whoami() -> (principal)`` (the caller), query ``echo(text) -> (text)``.
"""

from __future__ import annotations

from icws_fast.cdk.api import Canister, caller, query, update
from icws_fast.devnet.server import DEFAULT_ROUND_MS
from icws_fast.ic.principal import Principal
from tests.processes import DevnetProcess


class Echo(Canister):
    """Stateless methods with replies a test can predict."""

    CANDID = ""

    @update("(text) -> (text)")
    def shout(self, text: str) -> str:
        return text.upper()

    @update("() -> (principal)")
    def whoami(self) -> Principal:
        return caller()

    @query("(text) -> (text)")
    def echo(self, text: str) -> str:
        return text


def echo_devnet(*, subnet_delegation: bool = False) -> DevnetProcess:
    """An ``icws-devnet`` hosting only ``echo``, with the default round length (start it: ``with echo_devnet()``)."""
    args = ["--canister", f"echo={__name__}:Echo", *(["--subnet-delegation"] if subnet_delegation else [])]
    return DevnetProcess(extra_args=args, round_ms=DEFAULT_ROUND_MS)
