"""The client address behind trusted proxies: ``X-Forwarded-For`` read right to left, as far as the proxies go.

A load balancer in front of the gateway (HAProxy's ``option forwardfor``) appends the address it received a
connection from to the upgrade request's ``X-Forwarded-For``. Whatever the client wrote there itself comes
before that, and anyone can write anything: so the header is read from its right end, and only while the hop
that wrote an entry is a trusted proxy. The first entry written by a trusted proxy about an address it does not
trust is the client. A peer that is not a trusted proxy is the client itself, whatever its header says.

Every entry is a bare IPv4 or IPv6 address (what HAProxy, nginx and the cloud load balancers write). An entry
that is not one ends the walk at the hop that wrote it: its writer is the last address known for sure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TypeAlias

__all__ = ["Network", "client_address", "parse_networks"]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """``CIDR,CIDR,...`` (a bare address is a /32 or /128) → networks; :class:`ValueError` naming a bad one."""
    networks = []
    for part in text.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip()))
        except ValueError as exc:
            # ip_network refuses "10.0.0.1/8" (host bits set) and non-addresses with a message saying which.
            raise ValueError(f"expected CIDR networks separated by commas: {exc}") from None
    return tuple(networks)


def _address(text: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: match them against IPv4 networks.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence[Network]) -> str:
    """The address the connection from ``peer`` is for (see the module docstring).

    ``forwarded_for`` are the ``X-Forwarded-For`` header lines in the order received (each a comma-separated
    list); ``trusted`` the proxies' networks. Without trusted proxies, or from an untrusted peer, it is ``peer``.
    """
    hop = _address(peer)
    if not trusted or hop is None or not any(hop in net for net in trusted):
        return peer
    entries = [entry for line in forwarded_for for entry in line.split(",")]
    client = str(hop)
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            break  # unreadable: the proxy that wrote it is the last hop known
        client = str(address)
        if not any(address in net for net in trusted):
            break
    return client
