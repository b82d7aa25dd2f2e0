"""The scenarios: one Locust ``User`` class each, with its weight in the mix and its tag.

Run them all (the mix, users spread by weight), or pick some by class name (``locust -f loadtest/locustfile.py
EchoUser ChurnUser``), by tag (``--tags stream``), or in the web UI with ``--class-picker``.

Every user talks through the blocking client, which verifies every message (certificate, tree, content,
sequence number) and answers the canister's acks, as a real client does; see :mod:`.reports` for the samples.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import ClassVar, Final

from locust import User, between, constant, tag, task

from icws_load import reports
from icws_load.reports import Session

#: How long a stream subscriber reads per task before Locust may stop or reschedule it.
STREAM_WINDOW_S: Final = 1.0
#: Seconds between two checks of an idle session (no application traffic in between).
IDLE_CHECK_S: Final = float(os.environ.get("ICWS_IDLE_CHECK_S", "5"))


class _SessionUser(User):
    """A user with one connection to ``canister``, opened on start, reopened when it was lost, closed on stop."""

    abstract = True
    canister: ClassVar[str]
    #: False for a user whose task opens the connection itself.
    open_on_start: ClassVar[bool] = True

    def on_start(self) -> None:
        self.session = Session(self.environment, self.canister)
        self._counter = itertools.count()
        if self.open_on_start:
            self.ensure_open()

    def on_stop(self) -> None:
        self.session.close()

    def ensure_open(self) -> bool:
        """Open the connection if it is not (a real client reconnects); whether it is open now."""
        if self.session.is_open:
            return True
        self.session.close()
        if not self.session.open():
            return False
        return self.greeted()

    def greeted(self) -> bool:
        """Consume what the canister sends every new client; False when that failed."""
        return True

    def next_text(self) -> str:
        """A text no other message of this run carries (the client's principal and a counter)."""
        ws = self.session.ws
        return f"{ws.principal if ws else '?'} #{next(self._counter)}"


class _EchoSession(_SessionUser):
    """A connection to the ``test`` canister, which greets every client with ``ping`` and answers ``text + ' ping'``."""

    abstract = True
    canister = "test"

    def greeted(self) -> bool:
        return self.session.recv("greeting") is not None

    def echo(self) -> None:
        """Send one message and wait for its verified answer: the ``echo`` operation."""
        text = self.next_text()
        start = time.perf_counter()
        if not self.session.send(text):
            return
        answer = self.session.recv("echo")
        if answer is None:
            return
        expected = text + " ping"
        error = None if answer["text"] == expected else AssertionError(f"expected {expected!r}, got {answer!r}")
        reports.report(self.environment, reports.OPERATION, "echo", reports.elapsed_ms(start), exception=error)


class EchoUser(_EchoSession):
    """Round trips: send a message, wait for the canister's answer, about once a second."""

    weight = 4
    wait_time = between(0.5, 1.5)

    @tag("echo")
    @task
    def round_trip(self) -> None:
        if self.ensure_open():
            self.echo()


class ChurnUser(_EchoSession):
    """Connection churn: open, one round trip, close, again and again."""

    weight = 1
    wait_time = between(0.5, 1.5)
    open_on_start = False

    @tag("churn")
    @task
    def cycle(self) -> None:
        if self.ensure_open():
            self.echo()
        self.session.close()


class IdleUser(_EchoSession):
    """A long-lived session that sends nothing: every ``ICWS_IDLE_CHECK_S`` it checks the connection is still open."""

    weight = 1
    wait_time = constant(IDLE_CHECK_S)

    @tag("idle")
    @task
    def check(self) -> None:
        if self.session.is_open:
            reports.report(self.environment, reports.OPERATION, "idle", 0.0)
        else:
            # Its close was reported as a violation; come back as a real client would.
            self.ensure_open()


class ChatUser(_SessionUser):
    """A chat member: posts a message, then reads the broadcasts (everyone's) for a second.

    ``chat`` times a post until its own broadcast comes back; every broadcast read is a ``latency`` sample.
    """

    weight = 2
    wait_time = between(0.5, 1.5)
    canister = "chat"

    @tag("stream", "chat")
    @task
    def post_and_read(self) -> None:
        if not self.ensure_open():
            return
        text = self.next_text()
        start = time.perf_counter()
        if not self.session.send(text):
            return
        while (message := self.session.recv("chat")) is not None:
            if message["text"] == text:
                reports.report(self.environment, reports.OPERATION, "chat", reports.elapsed_ms(start))
                break
        else:
            return
        # Then the others' posts, for the rest of the window: nothing more may come, and that is no failure.
        deadline = time.monotonic() + STREAM_WINDOW_S
        while (remaining := deadline - time.monotonic()) > 0:
            if self.session.recv("chat", remaining, expected=False) is None:
                return


class FirehoseUser(_SessionUser):
    """A subscriber to the ``firehose`` canister's stream: reads everything it sends, a second per task.

    Each message is a ``latency`` sample (``firehose``); a wait longer than ``ICWS_RECV_TIMEOUT_S`` is a failed
    ``firehose`` operation. The campaign sets the firehose's rate while it runs (see :mod:`.targets`).
    """

    weight = 2
    wait_time = constant(0)
    canister = "firehose"

    @tag("stream", "firehose")
    @task
    def read(self) -> None:
        if not self.ensure_open():
            time.sleep(1)  # do not hammer a gateway that refuses
            return
        deadline = time.monotonic() + STREAM_WINDOW_S
        while time.monotonic() < deadline and self.session.recv("firehose") is not None:
            pass
