"""Rounds, timers, the request-status lifecycle, the state tree, persistence and the CLI process."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from icws_fast.devnet import Devnet
from icws_fast.devnet.replica import DONE_RETENTION_NS, Keys, Replica
from icws_fast.devnet.tree import LabeledMap
from icws_fast.ic import bls, candid, cbor, hashtree
from icws_fast.ic.agent import Agent
from icws_fast.ic.certificate import Certificate
from icws_fast.ic.envelope import build_envelope, call_content
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import request_id
from tests.devnet.devnet_canisters import SECOND_NS, Counter, Ticker
from tests.processes import Child, DevnetProcess

NOARGS = candid.encode("()", [])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * SECOND_NS

    def __call__(self) -> int:
        return self.now


def _replica(clock: FakeClock, **kw: object) -> Replica:
    keys = Keys(root_secret_key=bls.generate_secret_key(b"test root"), node_seed=b"\x07" * 32)
    return Replica({"counter": Counter, "ticker": Ticker}, keys, clock=clock, **kw)  # type: ignore[arg-type]


def _ticks(replica: Replica) -> dict[str, int]:
    ticker = replica.canister_ids["ticker"]
    reply = replica.query(ticker, "ticks", NOARGS, Principal.anonymous())
    (ticks,) = candid.decode(reply, "(record { once : nat; every : nat; canceled : nat })")
    return dict(ticks)


def _certified(replica: Replica, path: list[bytes]) -> hashtree.LookupResult:
    cert = Certificate.from_cbor(replica.read_state_certificate([path], "flat"))
    cert.verify(replica.root_key_der, now_ns=replica.time_ns)
    return cert.lookup(path)


def test_timers_follow_devnet_time() -> None:
    clock = FakeClock()
    replica = _replica(clock)
    assert _ticks(replica) == {"once": 0, "every": 0, "canceled": 0}
    clock.now += SECOND_NS
    replica.run_round()
    assert _ticks(replica) == {"once": 1, "every": 0, "canceled": 0}
    for _ in range(6):  # 6 more seconds: the 2-second interval fires at 2, 4 (traps), 6
        clock.now += SECOND_NS
        replica.run_round()
    assert _ticks(replica) == {"once": 1, "every": 3, "canceled": 0}


def test_request_status_lifecycle_and_pruning() -> None:
    clock = FakeClock()
    replica = _replica(clock)
    counter = replica.canister_ids["counter"]
    sender = Ed25519Identity.generate().sender
    rid = os.urandom(32)
    expiry = clock.now + 60 * SECOND_NS
    replica.submit(rid, sender=sender, canister_id=counter, method="increment", arg=NOARGS, expiry_ns=expiry)
    assert _certified(replica, [b"request_status", rid, b"status"]).status == "Absent"
    clock.now += 1
    replica.run_round()
    assert _certified(replica, [b"request_status", rid, b"status"]).value == b"replied"
    assert candid.decode(_certified(replica, [b"request_status", rid, b"reply"]).value, "(nat64)") == [1]
    # A replay of the same request id while it is known is not executed again.
    replica.submit(rid, sender=sender, canister_id=counter, method="increment", arg=NOARGS, expiry_ns=expiry)
    replica.run_round()
    assert candid.decode(replica.query(counter, "get", NOARGS, sender), "(nat64)") == [1]
    # Past its expiry the reply is dropped: "done".
    clock.now = expiry + 1
    replica.run_round()
    assert _certified(replica, [b"request_status", rid, b"status"]).value == b"done"
    assert _certified(replica, [b"request_status", rid, b"reply"]).status == "Absent"
    # Later the request is forgotten entirely.
    clock.now = expiry + DONE_RETENTION_NS + 1
    replica.run_round()
    assert _certified(replica, [b"request_status", rid, b"status"]).status == "Absent"
    assert rid not in replica.ingress


def test_trap_rolls_back_certified_data() -> None:
    clock = FakeClock()
    replica = _replica(clock)
    counter = replica.canister_ids["counter"]
    sender = Principal.anonymous()
    ok, bad = os.urandom(32), os.urandom(32)
    expiry = clock.now + 60 * SECOND_NS
    replica.submit(
        ok, sender=sender, canister_id=counter, method="set_data", arg=candid.encode("(blob)", [b"a"]), expiry_ns=expiry
    )
    replica.submit(
        bad,
        sender=sender,
        canister_id=counter,
        method="set_data",
        arg=candid.encode("(blob)", [b"b" * 33]),
        expiry_ns=expiry,
    )
    replica.run_round()
    assert replica.ingress[bad].status == "rejected"
    assert _certified(replica, [b"canister", counter.bytes, b"certified_data"]).value == b"a"


def test_certificates_of_a_round_share_one_signature() -> None:
    clock = FakeClock()
    replica = _replica(clock)
    first = Certificate.from_cbor(replica.read_state_certificate([[b"time"]], "flat"))
    second = Certificate.from_cbor(replica.read_state_certificate([[b"subnet"]], "flat"))
    assert first.signature == second.signature and first.root_hash == second.root_hash
    clock.now += 1
    replica.run_round()
    third = Certificate.from_cbor(replica.read_state_certificate([[b"time"]], "flat"))
    assert third.signature != first.signature
    assert third.time_ns == replica.time_ns >= clock.now


# -- the incremental state tree -----------------------------------------------------------------------------


def _labels(node: tuple, out: list[bytes]) -> list[bytes]:  # type: ignore[type-arg]
    if node[0] == 1:
        _labels(node[1], out)
        _labels(node[2], out)
    elif node[0] == 2:
        out.append(node[1])
    return out


def test_labeled_map_is_a_valid_incrementally_hashed_tree() -> None:
    rng = random.Random(7)
    entries = LabeledMap()
    reference: dict[bytes, bytes] = {}
    for _ in range(400):
        label = rng.randbytes(rng.choice([1, 2, 32]))
        value = rng.randbytes(5)
        entries.set(label, LabeledMap({b"status": b"replied", b"reply": value}))
        reference[label] = value
        if rng.random() < 0.2:  # hash in between, so later changes must update cached hashes
            entries.root_hash()
    for label in list(reference)[:100]:
        entries.delete(label)
        del reference[label]
    root = LabeledMap({b"time": b"\x01", b"request_status": entries, b"empty": LabeledMap()})
    full = root.full()
    assert hashtree.reconstruct(full) == root.root_hash()
    assert _labels(hashtree.lookup_subtree(full, [b"request_status"]).value, []) == sorted(reference)
    for label, value in list(reference.items())[:50]:
        witness = root.witness([[b"time"], [b"request_status", label, b"reply"]])
        assert hashtree.reconstruct(witness) == root.root_hash()
        assert hashtree.lookup_path(witness, [b"request_status", label, b"reply"]).value == value
        assert hashtree.lookup_path(witness, [b"request_status", label, b"status"]).status == "Unknown"
    for _ in range(200):
        label = rng.randbytes(rng.choice([1, 2, 32]))
        if label in reference:
            continue
        witness = root.witness([[b"request_status", label, b"status"]])
        assert hashtree.reconstruct(witness) == root.root_hash()
        assert hashtree.lookup_path(witness, [b"request_status", label, b"status"]).status == "Absent"
    assert hashtree.lookup_path(root.witness([[b"empty", b"x"]]), [b"empty", b"x"]).status == "Absent"
    assert hashtree.lookup_path(root.witness([[b"nope"]]), [b"nope"]).status == "Absent"
    # A witness must encode as the IC's CBOR hash tree.
    assert hashtree.parse(cbor.decode(cbor.encode(full))) == full


# -- persistence, restart, CLI ------------------------------------------------------------------------------


async def test_state_dir_keeps_ids_root_key_and_state(tmp_path: object) -> None:
    state_dir = f"{tmp_path}/state"
    canisters = {"counter": Counter, "ticker": Ticker}
    async with Devnet("127.0.0.1:0", canisters, round_ms=5, state_dir=state_dir) as first:
        async with Agent(first.url, root_key=first.root_key_der) as agent:
            await agent.call(first.canister_ids["counter"], "increment", NOARGS)
            await agent.call(first.canister_ids["counter"], "increment", NOARGS)
        root_key, ids = first.root_key_der, first.canister_ids
    # A new canister is added before the others in the dict: the old ones keep their ids.
    async with Devnet("127.0.0.1:0", {"new": Counter, **canisters}, round_ms=5, state_dir=state_dir) as second:
        assert second.root_key_der == root_key
        assert {k: v for k, v in second.canister_ids.items() if k != "new"} == ids
        assert second.canister_ids["new"] == Principal(bytes.fromhex("00000000000000020101"))
        async with Agent(second.url, root_key=root_key, verify_query_signatures=True) as agent:
            counter = second.canister_ids["counter"]
            assert candid.decode(await agent.query(counter, "get", NOARGS), "(nat64)") == [2]
            cert_bytes = candid.decode(await agent.query(counter, "certificate", NOARGS), "(opt blob)")[0]
            cert = Certificate.from_cbor(cert_bytes)
            cert.verify(root_key, counter)
            assert cert.lookup_value([b"canister", counter.bytes, b"certified_data"]) == (2).to_bytes(8, "big")


def _root_key_of(secret_key_file: Path) -> bytes:
    return bls.der_encode_public_key(bls.public_key(bytes.fromhex(secret_key_file.read_text())))


async def test_root_key_file_is_created_then_reused(tmp_path: object) -> None:
    key_file = f"{tmp_path}/root.key"
    async with Devnet("127.0.0.1:0", {}, root_key_file=key_file) as first:
        root_key = first.root_key_der
    async with Devnet("127.0.0.1:0", {}, root_key_file=key_file) as second:
        assert second.root_key_der == root_key
    assert _root_key_of(Path(key_file)) == root_key


async def test_restart_reuses_the_port_and_keeps_state() -> None:
    async with Devnet("127.0.0.1:0", {"counter": Counter}, round_ms=5, subnet_delegation=True) as dn:
        url = dn.url
        counter = dn.canister_ids["counter"]
        async with Agent(url, root_key=dn.root_key_der) as agent:
            await agent.call(counter, "increment", NOARGS)
            await dn.stop()
            with pytest.raises(aiohttp.ClientError):
                async with aiohttp.ClientSession() as http, http.get(url + "/api/v2/status"):
                    pass
            await dn.start()
            assert dn.url == url
            assert candid.decode(await agent.call(counter, "increment", NOARGS), "(nat64)") == [2]


@pytest.mark.slow
def test_cli_prints_its_info_and_persists_across_restarts(devnet_process: DevnetProcess) -> None:
    info = dict(devnet_process.info)
    assert set(info) == {"canisters", "root_key", "url"}

    async def status() -> dict[str, object]:
        async with aiohttp.ClientSession() as http:
            async with http.get(devnet_process.url + "/api/v2/status") as resp:
                answer: dict[str, object] = cbor.decode(await resp.read())
            async with http.get(devnet_process.url + "/_devnet/canisters") as resp:
                assert await resp.json() == info
        return answer

    assert asyncio.run(status())["root_key"] == devnet_process.root_key_der
    assert devnet_process.stop() == 0
    devnet_process.start()
    assert devnet_process.info == info


@pytest.mark.slow
def test_cli_hosts_the_canisters_it_is_told_to(tmp_path: Path) -> None:
    process = DevnetProcess(
        state_dir=tmp_path / "state",
        extra_args=["--canister", "counter=tests.devnet.devnet_canisters:Counter", "--subnet-delegation"],
    )

    async def increment() -> int:
        async with Agent(process.url, root_key=process.root_key_der) as agent:
            counter = process.canister_ids["counter"]
            (count,) = candid.decode(await agent.call(counter, "increment", NOARGS), "(nat64)")
            return int(count)

    with process:
        assert process.info["canisters"] == {"counter": "rwlgt-iiaaa-aaaaa-aaaaa-cai"}
        assert asyncio.run(increment()) == 1
        process.restart()
        assert asyncio.run(increment()) == 2  # the state survived the restart

    module = "tests.devnet.devnet_canisters"
    for bad in ("counter", f"counter={module}", "x=no_such_module:X", f"x={module}:SECOND_NS"):
        broken = DevnetProcess(address="127.0.0.1:0", state_dir=tmp_path / "bad", extra_args=["--canister", bad])
        with Child("icws-devnet", broken.command()) as child:
            assert child.wait(60) == 2 and "--canister" in child.output, (bad, child.output)


async def test_slow_certification_turns_a_synchronous_call_into_polling() -> None:
    # Rounds far slower than the call timeout: the v3 call answers 202 and the outcome must be polled.
    identity = Ed25519Identity.generate()
    async with (
        Devnet("127.0.0.1:0", {"counter": Counter}, round_ms=300, sync_call_timeout_s=0.01) as dn,
        aiohttp.ClientSession() as http,
        Agent(dn.url, identity, root_key=dn.root_key_der) as agent,
    ):
        counter = dn.canister_ids["counter"]
        content = call_content(identity.sender, counter, "increment", NOARGS)
        async with http.post(
            f"{dn.url}/api/v3/canister/{counter}/call",
            data=build_envelope(identity, content),
            headers={"Content-Type": "application/cbor"},
        ) as resp:
            assert resp.status == 202
            assert await resp.text() == (
                "Message did not complete execution and certification within the replica defined timeout."
            )
        rid = request_id(content)
        for _ in range(200):
            cert = await agent.read_state(counter, [[b"request_status", rid]])
            if cert.lookup([b"request_status", rid, b"status"]).status == "Found":
                break
            await asyncio.sleep(0.01)
        assert candid.decode(cert.lookup_value([b"request_status", rid, b"reply"]), "(nat64)") == [1]


async def test_between_the_steps_of_a_round_the_certified_state_is_served() -> None:
    clock = FakeClock()
    replica = _replica(clock)
    counter, ticker = replica.canister_ids["counter"], replica.canister_ids["ticker"]
    sender = Principal.anonymous()
    first, second = os.urandom(32), os.urandom(32)
    expiry = clock.now + 60 * SECOND_NS
    for rid in (first, second):
        replica.submit(rid, sender=sender, canister_id=counter, method="increment", arg=NOARGS, expiry_ns=expiry)
    before = (replica.round, replica.time_ns)
    clock.now += 1
    steps = replica.round_steps()
    next(steps)  # the first increment executed; the round is not certified
    assert replica.executing == {counter}
    # Another canister still answers from its certified state; the executed one waits for the certification.
    assert replica.settled(ticker) is None
    assert _ticks(replica) == {"once": 0, "every": 0, "canceled": 0}
    waiting = replica.settled(counter)
    assert waiting is not None and not waiting.done()
    # read_state still certifies the previous round's tree (the certificate verifies), and a replay of a message
    # that already executed is not queued again.
    assert (replica.round, replica.time_ns) == before
    assert _certified(replica, [b"request_status", first, b"status"]).status == "Absent"
    assert _certified(replica, [b"canister", counter.bytes, b"certified_data"]).value == b""
    assert replica.known_request(first)
    replica.submit(first, sender=sender, canister_id=counter, method="increment", arg=NOARGS, expiry_ns=expiry)
    assert replica.queue_length == 0
    for _ in steps:
        pass
    assert waiting.done() and not replica.executing
    assert replica.round == before[0] + 1
    assert _certified(replica, [b"request_status", first, b"status"]).value == b"replied"
    assert _certified(replica, [b"canister", counter.bytes, b"certified_data"]).value == (2).to_bytes(8, "big")
    assert candid.decode(replica.query(counter, "get", NOARGS, sender), "(nat64)") == [2]


async def test_a_round_cancelled_between_its_steps_is_finished() -> None:
    async with Devnet("127.0.0.1:0", {"counter": Counter}, round_ms=10) as dn:
        replica, rounds = dn.replica, dn._rounds
        assert rounds is not None
        run_steps = replica.round_steps

        def cancelled_at_each_step() -> Iterator[None]:
            for step in run_steps():
                rounds.cancel()  # as Devnet.stop() would, between two executions
                yield step

        replica.round_steps = cancelled_at_each_step  # type: ignore[method-assign]
        counter, sender = dn.canister_ids["counter"], Principal.anonymous()
        rids = [os.urandom(32) for _ in range(3)]
        for rid in rids:
            replica.submit(
                rid,
                sender=sender,
                canister_id=counter,
                method="increment",
                arg=NOARGS,
                expiry_ns=replica.clock() + 10**11,
            )
        with pytest.raises(asyncio.CancelledError):
            await rounds
        assert [replica.ingress[rid].status for rid in rids] == ["replied"] * 3
        assert not replica.executing
        assert candid.decode(replica.query(counter, "get", NOARGS, sender), "(nat64)") == [3]
