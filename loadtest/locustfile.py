"""Locust campaign against an IC WebSocket gateway, with the verifying blocking client (``SyncIcWebSocket``).

    ICWS_GATEWAY_URL=ws://127.0.0.1:8080 ICWS_IC_URL=http://127.0.0.1:4943 \\
        locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 1m

Scenarios (``icws_load.users``): ``EchoUser``, ``ChurnUser``, ``IdleUser`` (the ``test`` canister), ``ChatUser``
(``chat``) and ``FirehoseUser`` (``firehose``); all of them, weighted, unless some are named on the command line
or picked with ``--tags``/``--class-picker``. Targets come from ``ICWS_GATEWAY_URL``, ``ICWS_IC_URL``,
``ICWS_CANISTER_ID`` (and ``ICWS_CHAT_CANISTER_ID``, ``ICWS_FIREHOSE_CANISTER_ID``, ``ICWS_IDENTITY_PEM``): see
``icws_load.targets``. Thresholds (``--max-error-rate``, ``--max-p99``) set the exit code: ``icws_load.thresholds``.

Locust monkey-patches the standard library with gevent before this file is imported, and the blocking client
uses only a socket, ``select``, a reader thread and ``threading`` locks: all cooperative under gevent, so
thousands of verifying connections share one process.
"""

from __future__ import annotations

import logging
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.user.task import filter_tasks_by_tags

from icws_load import targets, thresholds
from icws_load.users import ChatUser, ChurnUser, EchoUser, FirehoseUser, IdleUser

__all__ = ["ChatUser", "ChurnUser", "EchoUser", "FirehoseUser", "IdleUser", "thresholds"]

log = logging.getLogger("icws_load")

TAGS = "echo, churn, idle, stream (chat and firehose), chat, firehose"


@events.init.add_listener
def _check_targets(environment: Environment, **_: Any) -> None:
    # Without this every user would fail on its own, in a wall of tracebacks, before the summary says why.
    if isinstance(environment.runner, WorkerRunner):
        return
    down = targets.unreachable()
    if down:
        raise SystemExit(
            f"nothing accepts connections at the {' nor the '.join(down)}: is the stack running? Locally, start it "
            "with `make run` in another terminal (same GATEWAY_ADDRESS and DEVNET_ADDRESS); otherwise check "
            "ICWS_GATEWAY_URL and ICWS_IC_URL."
        )


def _tag_set(given: list[str] | None, option: list[str] | None) -> set[str] | None:
    """Tags as Locust reads them: the environment's own, else the command line's; None: no filter."""
    if given is not None:
        return set(given)
    return set(option) if option else None


@events.init.add_listener
def _drop_untagged_users(environment: Environment, **_: Any) -> None:
    # --tags filters tasks, not users: a scenario left without a task would fail at every spawn, so it goes.
    # Locust filters just before the test starts, after a master has planned its dispatch: filter now, with
    # the function Locust filters with (its second pass changes nothing). Not with Environment's own
    # (private) method: it marks the environment filtered, so a worker, whose command line has no --tags,
    # would never apply the tags its master sends at the start.
    options = environment.parsed_options
    tags = _tag_set(environment.tags, getattr(options, "tags", None))
    exclude_tags = _tag_set(environment.exclude_tags, getattr(options, "exclude_tags", None))
    for user in environment.user_classes:
        filter_tasks_by_tags(user, tags, exclude_tags)
    environment.user_classes[:] = [user for user in environment.user_classes if user.tasks]
    if not environment.user_classes:
        raise SystemExit(f"no scenario has a task with the tags given; the scenarios' tags: {TAGS}")


def _drives_firehose(environment: Environment) -> bool:
    # Only one process sets the rate: the master, the --processes parent, or a local run.
    return (
        targets.FIREHOSE_CONFIGURE
        and not isinstance(environment.runner, WorkerRunner)
        and FirehoseUser in environment.user_classes
    )


@events.test_start.add_listener
def _start_firehose(environment: Environment, **_: Any) -> None:
    if _drives_firehose(environment):
        targets.configure_firehose(targets.FIREHOSE_MESSAGES_PER_ROUND)
        log.info(
            "firehose: %d messages every %d ms to each subscriber",
            targets.FIREHOSE_MESSAGES_PER_ROUND,
            targets.FIREHOSE_INTERVAL_MS,
        )


@events.test_stop.add_listener
def _stop_firehose(environment: Environment, **_: Any) -> None:
    if _drives_firehose(environment):
        targets.configure_firehose(0)
