"""The capacity benchmark (``benchmarks/e2e/bench_capacity.py``) as a check: what it counts, and a short run.

The clients' byte scan must count every gap, duplicate and misrouted message (the benchmark fails a run on
them); a short ``--quick`` run must deliver the synthetic replica's certified stream through a real gateway and
the bare server's copy of it to every client, in order, each message once and to its own client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.e2e.capacity_clients import CapacityListener, Recorder
from icws_fast.gateway.fanout import batch_suffix, encode_frames
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.protocol.types import ClientKey, WebsocketMessage, encode_websocket_message, message_key
from tests.processes import REPO

GATEWAY = Ed25519Identity.from_seed(b"\x01" * 32).sender
MINE = ClientKey(Ed25519Identity.from_seed(b"\x02" * 32).sender, 7)
OTHER = ClientKey(Ed25519Identity.from_seed(b"\x03" * 32).sender, 7)


def relayed(key: ClientKey, nonce: int, seq: int) -> bytes:
    """The payload of the frame the gateway writes for canister message ``nonce`` (sequence ``seq``) to ``key``."""
    content = encode_websocket_message(WebsocketMessage(key, seq, 1, False, b"payload"))
    frame = encode_frames([message_key(GATEWAY, nonce).encode()], [content], batch_suffix(b"cert", b"tree"))
    return frame[4:]  # past the WebSocket header (2 bytes + a 16-bit length)


def listener_reading(frames: list[bytes]) -> Recorder:
    recorder = Recorder()
    recorder.clients = 1
    listener = CapacityListener()
    listener.record_into(recorder, MINE, expected=len(frames))
    for frame in frames:
        listener._record(recorder, frame, time.monotonic())
    return recorder


def test_scan_reads_nonces_of_an_orderly_stream() -> None:
    recorder = listener_reading([relayed(MINE, 10 + i, 2 + i) for i in range(5)])
    assert list(recorder.nonces) == [10, 11, 12, 13, 14]
    assert (recorder.gaps, recorder.duplicates, recorder.misroutes, recorder.unreadable) == (0, 0, 0, 0)
    assert recorder.done.is_set()


def test_scan_counts_gaps_duplicates_misroutes_and_garbage() -> None:
    recorder = listener_reading(
        [
            relayed(MINE, 10, 2),
            relayed(MINE, 13, 5),  # sequence numbers 3 and 4 lost: two gaps
            relayed(MINE, 13, 5),  # the same message again
            relayed(OTHER, 14, 6),  # another client's message
            b"\xa4\x63key garbage",
        ]
    )
    assert (recorder.gaps, recorder.duplicates, recorder.misroutes, recorder.unreadable) == (2, 1, 1, 1)
    assert list(recorder.nonces) == [10, 13]
    assert not recorder.done.is_set()


@pytest.mark.slow
def test_quick_run_delivers_every_message_once_to_its_client(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    command = [sys.executable, "-m", "benchmarks.e2e.bench_capacity", "--quick", "--json", str(out)]
    command += ["--seconds", "1", "--warmup", "0.5", "--messages", "20000", "--bare-passes", "2"]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    (point,) = json.loads(out.read_text())["points"]
    legs = {leg["name"]: leg for leg in point["legs"]}
    assert set(legs) == {"gateway", "bare server"}
    for leg in legs.values():
        assert leg["messages"] > 0, leg
        assert leg["cpu_us_per_msg"] > 0, leg
        assert {name: value for name, value in leg["faults"].items() if value} == {}, leg
    assert legs["gateway"]["latency_ms"]["p50"] > 0
    assert point["ratios"]["gateway"]["cpu_per_msg"] > 0
