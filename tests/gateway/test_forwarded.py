"""The client address behind trusted proxies: X-Forwarded-For is believed only as far as trusted hops wrote it."""

from __future__ import annotations

import pytest

from icws_fast.gateway.forwarded import client_address, parse_networks

PROXIES = parse_networks("10.0.0.0/8,fd00::/8")


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        # The load balancer's own entry is the rightmost: that is the client.
        ("10.0.0.5", ["203.0.113.7"], "203.0.113.7"),
        # Whatever the client wrote itself comes before it and is not believed.
        ("10.0.0.5", ["6.6.6.6, 203.0.113.7"], "203.0.113.7"),
        ("10.0.0.5", ["6.6.6.6", "203.0.113.7"], "203.0.113.7"),  # HAProxy adds a header line of its own
        # A chain of trusted proxies is walked through to the first untrusted hop.
        ("10.0.0.5", ["6.6.6.6, 203.0.113.7, 10.1.1.1"], "203.0.113.7"),
        # An untrusted peer is the client, whatever it claims.
        ("203.0.113.7", ["10.0.0.9"], "203.0.113.7"),
        ("203.0.113.7", ["6.6.6.6"], "203.0.113.7"),
        # A trusted peer without the header (a health check, a direct connection) is itself.
        ("10.0.0.5", [], "10.0.0.5"),
        # Only trusted hops all the way: the first of them.
        ("10.0.0.5", ["10.2.2.2, 10.3.3.3"], "10.2.2.2"),
        # An unreadable entry ends the walk at the hop that wrote it.
        ("10.0.0.5", ["203.0.113.7, unknown"], "10.0.0.5"),
        ("10.0.0.5", ["203.0.113.7, 10.1.1.1:8080"], "10.0.0.5"),
        ("10.0.0.5", ["6.6.6.6, nonsense, 10.1.1.1"], "10.1.1.1"),
        ("10.0.0.5", [""], "10.0.0.5"),
        # IPv6, and IPv4 peers on a dual-stack socket.
        ("fd00::1", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:10.0.0.5", ["203.0.113.7"], "203.0.113.7"),
        # No peer address at all (a UNIX socket): nothing to trust.
        ("", ["203.0.113.7"], ""),
    ],
)
def test_client_address(peer: str, header: list[str], client: str) -> None:
    assert client_address(peer, header, PROXIES) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("10.0.0.5", ["203.0.113.7"], ()) == "10.0.0.5"


def test_parse_networks() -> None:
    assert [str(net) for net in parse_networks(" 127.0.0.1 ,::1,192.168.0.0/16")] == [
        "127.0.0.1/32",
        "::1/128",
        "192.168.0.0/16",
    ]
    for bad in ("", "10.0.0.0/33", "10.0.0.1/8", "example.com"):
        with pytest.raises(ValueError, match="expected CIDR networks separated by commas"):
            parse_networks(bad)
