"""Independent check: ic-py (a Python agent written by others, with its own CBOR, request ids and signing)
drives the devnet over HTTP: anonymous and Ed25519 senders, v2 calls with read_state polling, and a
canister reject. (ic-py's secp256k1 signatures are high-S half of the time, which the IC accepts; see
``test_secp256k1_high_s_signature_is_accepted`` in test_devnet_http.py.)

ic-py 1.0.1's ``query_raw`` does not work with the installed cbor2 against any replica (it expects a
``dict`` where cbor2 returns a ``frozendict`` for the self-describing answer), so queries are not used.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processes import DevnetProcess

icpy_agent = pytest.importorskip("ic.agent")
icpy_candid = pytest.importorskip("ic.candid")
icpy_client = pytest.importorskip("ic.client")
icpy_identity = pytest.importorskip("ic.identity")

# ic-py passes raw bytes to httpx the deprecated way.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def counter_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    process = DevnetProcess(
        state_dir=tmp_path_factory.mktemp("icpy-devnet"),
        extra_args=["--canister", "counter=tests.devnet.devnet_canisters:Counter"],
    )
    with process:
        yield process


@pytest.mark.parametrize("kind", ["anonymous", "ed25519"])
def test_icpy_agent_calls_and_queries(counter_devnet: DevnetProcess, kind: str) -> None:
    identity = icpy_identity.Identity(anonymous=True) if kind == "anonymous" else icpy_identity.Identity(type=kind)
    client = icpy_client.Client(counter_devnet.url)
    agent = icpy_agent.Agent(identity, client, root_key=counter_devnet.root_key_der)
    counter = str(counter_devnet.canister_ids["counter"])
    no_args = icpy_candid.encode([])

    before = agent.update_raw(counter, "bump", no_args, delay=0.01, timeout=30)[0]["value"]
    # ic-py sends no nonce: another expiry makes the second call a new request rather than a replay.
    other = icpy_agent.Agent(identity, client, ingress_expiry=200, root_key=counter_devnet.root_key_der)
    after = other.update_raw(counter, "bump", no_args, delay=0.01, timeout=30)[0]["value"]
    assert after == before + 1
    (info,) = agent.update_raw(counter, "info", no_args, delay=0.01, timeout=30)
    assert identity.sender().to_str() in repr(info["value"])

    with pytest.raises(Exception, match=r"Canister called `ic0\.trap` with message: 'from ic-py'"):
        agent.update_raw(
            counter,
            "fail",
            icpy_candid.encode([{"type": icpy_candid.Types.Text, "value": "from ic-py"}]),
            delay=0.01,
            timeout=30,
        )
