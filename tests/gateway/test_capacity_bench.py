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

from benchmarks.e2e.bench_capacity import Records, Run, _added_latency, _by_certificate, parse_args
from benchmarks.e2e.capacity_clients import CapacityListener, Recorder
from benchmarks.e2e.synthetic_replica import Stream, SyntheticReplica
from icws_fast.gateway.fanout import batch_suffix, encode_frames
from icws_fast.ic.envelope import build_envelope, call_content
from icws_fast.ic.identity import Ed25519Identity, Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import (
    ClientKey,
    WebsocketMessage,
    encode_get_messages_args,
    encode_websocket_message,
    message_key,
)
from tests.processes import REPO

GATEWAY_IDENTITY = Ed25519Identity.from_seed(b"\x01" * 32)
GATEWAY = GATEWAY_IDENTITY.sender
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


def poll(identity: Identity, nonce: int, method: str = "ws_get_messages") -> bytes:
    """A signed ``ws_get_messages`` query envelope, as the gateway's agent posts it."""
    canister = Principal.from_text("rwlgt-iiaaa-aaaaa-aaaaa-cai")
    content = call_content(identity.sender, canister, method, encode_get_messages_args(nonce), request_type="query")
    return build_envelope(identity, content)


def stream(
    rate: float = 0.0, gateway: Principal = GATEWAY, replies: tuple[bytes, ...] = (b"r0", b"r1", b"r2")
) -> Stream:
    """Precomputed replies of 50 messages from nonce 100 of ``gateway``'s queue, not released yet."""
    return Stream(gateway.bytes, 100, 50, b"empty", bodies=list(replies), counts=[50] * len(replies), rate=rate)


def streams(*queues: Stream) -> dict[bytes, Stream]:
    """The replica's streams: by gateway principal."""
    return {queue.gateway: queue for queue in queues}


def test_replica_fast_path_answers_the_gateways_polls_on_the_grid_once_released() -> None:
    released = stream()

    def answer(queue: Stream, body: bytes) -> bytes | None:
        return SyntheticReplica._stream_answer(streams(queue), body)

    assert answer(released, poll(GATEWAY_IDENTITY, 150)) == b"empty"  # before go
    released.go = time.monotonic()
    assert [answer(released, poll(GATEWAY_IDENTITY, n)) for n in (100, 150, 200, 250)] == [
        b"r0",
        b"r1",
        b"r2",
        b"empty",
    ]
    assert [index for index, _ in released.writes] == [0, 1, 2]
    # Anything else is the devnet's to answer: nonces off the grid or before the stream, other senders, methods.
    assert answer(released, poll(GATEWAY_IDENTITY, 120)) is None
    assert answer(released, poll(GATEWAY_IDENTITY, 50)) is None
    assert answer(released, poll(Ed25519Identity.generate(), 100)) is None
    assert answer(released, poll(GATEWAY_IDENTITY, 100, method="other")) is None
    paced = stream(rate=1.0)  # one message a second: the second reply is due 50 s after go
    paced.go = time.monotonic()
    assert [answer(paced, poll(GATEWAY_IDENTITY, n)) for n in (100, 150)] == [b"r0", b"empty"]


def test_replica_fast_path_answers_each_gateway_from_its_own_queue() -> None:
    other_identity = Ed25519Identity.from_seed(b"\x02" * 32)
    mine, other = stream(), stream(gateway=other_identity.sender, replies=(b"o0",))
    queues = streams(mine, other)
    mine.go = other.go = time.monotonic()
    assert SyntheticReplica._stream_answer(queues, poll(GATEWAY_IDENTITY, 150)) == b"r1"
    assert SyntheticReplica._stream_answer(queues, poll(other_identity, 100)) == b"o0"
    assert SyntheticReplica._stream_answer(queues, poll(other_identity, 150)) == b"empty"  # past its queue's end
    assert [index for index, _ in mine.writes] == [1]
    assert [index for index, _ in other.writes] == [0]


@pytest.mark.parametrize("body", [b"", b"\xff", b"\xd9\xd9\xf7\xa1\x67content\x01", b"\x9f" * 10_000, b"\xa0"])
def test_replica_fast_path_leaves_malformed_queries_to_the_devnet(body: bytes) -> None:
    released = stream()
    released.go = time.monotonic()
    assert SyntheticReplica._stream_answer(streams(released), body) is None


def test_added_latency_is_read_minus_the_last_write_of_its_reply_split_by_certificate() -> None:
    # Two rounds of two 50-message replies from nonce 100: replies 0 and 2 carry a new certificate.
    replica = {"first_nonce": 100, "batch": 50, "rounds": [0, 2], "writes": [[0, 1.0], [1, 2.0], [2, 3.0], [1, 4.0]]}
    records = Records(nonces=[100, 149, 150, 210, 260], times=[1.001, 1.003, 4.002, 3.004, 9.0], sizes=[1] * 5)
    latencies, new_certificate = _added_latency(records, 0, 4, replica)
    # Reply 1 was written twice (a repeated poll): the write before the read counts.
    assert [round(ms, 6) for ms in latencies] == [1.0, 3.0, 2.0, 4.0]
    assert new_certificate == [True, True, False, True]
    split_ = _by_certificate(latencies, new_certificate)
    assert split_["new"]["share"] == 0.75
    assert split_["same"] == pytest.approx({"share": 0.25, "p50": 2.0, "p99": 2.0, "p999": 2.0})


def test_half_load_rounds_follow_the_ic_pace_unless_asked_for_message_counts(tmp_path: Path) -> None:
    run = Run(parse_args(["--round-messages", "2000"]), point=None, workdir=tmp_path)  # type: ignore[arg-type]
    assert run._round_messages(0.0) == 2000  # the saturated legs: --round-messages
    assert run._round_messages(12_345.0) == 12_300  # a second of the paced stream, in whole replies
    assert run._round_messages(10.0) == 50  # at least one reply a round
    run.args = parse_args(["--round-messages", "2000", "--round-seconds", "0"])
    assert run._round_messages(12_345.0) == 2000


@pytest.mark.slow
def test_quick_run_delivers_every_message_once_to_its_client(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    command = [sys.executable, "-m", "benchmarks.e2e.bench_capacity", "--quick", "--json", str(out)]
    # --quick's 250 000 messages outlast the warm-up and this window at full speed (flags given beside --quick count).
    command += ["--seconds", "1", "--warmup", "0.5", "--bare-passes", "2"]
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
    # A new certificate every 2 000 messages of 50-message replies: one reply in 40 carries one.
    by_certificate = legs["gateway"]["latency_by_certificate"]
    assert 0.01 < by_certificate["new"]["share"] < 0.05, by_certificate
    assert by_certificate["new"]["share"] + by_certificate["same"]["share"] == pytest.approx(1)
    assert point["ratios"]["gateway"]["cpu_per_msg"] > 0


@pytest.mark.slow
def test_run_with_two_workers_delivers_every_message_once_to_its_client(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    command = [sys.executable, "-m", "benchmarks.e2e.bench_capacity", "--json", str(out), "--workers", "2"]
    command += ["--clients", "40", "--payload", "100", "--pattern", "round-robin", "--seconds", "1", "--warmup", "0.2"]
    command += ["--messages", "100000", "--bare-memory-mb", "20", "--bare-passes", "2"]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (point,) = json.loads(out.read_text())["points"]
    legs = {leg["name"]: leg for leg in point["legs"]}
    assert set(legs) == {"gateway, --workers 2", "bare server"}
    gateway = legs["gateway, --workers 2"]
    for leg in legs.values():
        assert leg["messages"] > 0, leg
        assert {name: value for name, value in leg["faults"].items() if value} == {}, leg
    # Both workers held sessions and both polled their own queue: the stream reached the clients of each.
    assert set(gateway["sessions_by_worker"]) == {"0", "1"}, gateway
    assert sum(gateway["sessions_by_worker"].values()) == 40, gateway
    assert all(gateway["sessions_by_worker"].values()), gateway
    # The workers' CPU is a part of the total (the supervisor's share may be zero in a 1 s window, and the two sums
    # add the same numbers in different orders: allow for rounding).
    assert 0 < gateway["workers_cpu_us_per_msg"] <= gateway["cpu_us_per_msg"] * (1 + 1e-9), gateway
