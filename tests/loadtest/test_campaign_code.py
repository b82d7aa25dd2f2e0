"""Pieces of the Locust campaign on their own: how a close the user did not ask for is named
(``icws_load.reports.violation_name``), and how ``--tags`` drops the scenarios it leaves without a task.

Importing Locust monkey-patches the standard library with gevent, so each runs in a child Python with
``loadtest/`` on its path, as Locust runs the locustfile; the child prints its findings as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.processes import REPO, child_env

# Each case: an error the client reported, the close reason, and the violation the campaign must count.
_CLASSIFY = """
import json
from icws_fast.errors import CertificateError, ProtocolError, SequenceError
from icws_fast.protocol.client import REASON_ACK_TIMEOUT, REASON_RECEIVE_ERROR
from icws_load.reports import violation_name

cases = [
    (SequenceError(2, 4), REASON_RECEIVE_ERROR),
    (SequenceError(3, 2), REASON_RECEIVE_ERROR),
    # The ack timeout's text names sequence numbers too: it is no gap.
    (ProtocolError("no ack from the canister for sequence numbers [3, 4]"), REASON_ACK_TIMEOUT),
    (ProtocolError("the canister acknowledged sequence number 9, beyond the last one sent (4)"), REASON_RECEIVE_ERROR),
    (CertificateError("invalid signature"), REASON_RECEIVE_ERROR),
    (None, "gateway shutting down"),
]
print(json.dumps([violation_name(error, reason) for error, reason in cases]))
"""


def in_locust(code: str) -> Any:
    """What ``code``, run by a child Python in ``loadtest/``, prints last (JSON)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO / "loadtest",
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_violations_are_named_by_the_error_type_not_its_text() -> None:
    assert in_locust(_CLASSIFY) == [
        "sequence gap",
        "sequence gap",
        "ack timeout",
        "connection lost",
        "verification failure",
        "connection lost",
    ]


# Two scenarios: one with a tagged and an untagged task, one with another tag. Each case: the tags of the
# command line, then (for a worker) those its master sends at the start, when Locust filters the tasks itself.
_TAGS = """
import argparse, json
from locust import User, tag, task
from locust.env import Environment
import locustfile

def scenarios():
    class Mixed(User):
        @tag("a")
        @task
        def tagged(self): pass

        @task
        def untagged(self): pass

    class Other(User):
        @tag("b")
        @task
        def other(self): pass

    return [Mixed, Other]

def run(tags, exclude_tags, from_master=None):
    env = Environment(user_classes=scenarios(), parsed_options=argparse.Namespace(tags=tags, exclude_tags=exclude_tags))
    locustfile._drop_untagged_users(env)
    if from_master is not None:
        env.parsed_options.tags = from_master
        env._filter_tasks_by_tags()
    return {user.__name__: [t.__name__ for t in user.tasks] for user in env.user_classes}

print(json.dumps([run(None, None), run(["a"], None), run(None, ["a"]), run(None, None, from_master=["a"])]))
"""


def test_tags_drop_the_scenarios_left_without_a_task_and_leave_workers_to_locust() -> None:
    everything, tagged, excluded, worker = in_locust(_TAGS)
    assert everything == {"Mixed": ["tagged", "untagged"], "Other": ["other"]}
    assert tagged == {"Mixed": ["tagged"]}
    assert excluded == {"Mixed": ["untagged"], "Other": ["other"]}
    # A worker started without --tags keeps every scenario at init (its master picked them), and applies the
    # master's tags when Locust filters at the start.
    assert worker == {"Mixed": ["tagged"], "Other": []}
