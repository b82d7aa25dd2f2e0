"""How the campaign names a close the user did not ask for (``icws_load.reports.violation_name``).

Importing Locust monkey-patches the standard library with gevent, so the classification runs in a child
Python with ``loadtest/`` on its path, as Locust runs the locustfile.
"""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_violations_are_named_by_the_error_type_not_its_text() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CLASSIFY],
        cwd=REPO / "loadtest",
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout.splitlines()[-1])
    assert names == [
        "sequence gap",
        "sequence gap",
        "ack timeout",
        "connection lost",
        "verification failure",
        "connection lost",
    ]
