"""Which addresses the worker may call (SSRF policy): pure functions, no I/O.

Loopback and private ranges are opened only by ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS (local
development and tests); link-local, cloud metadata, multicast, reserved and unspecified
addresses stay closed always. IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4)
are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv6Address, ip_network

IPAddress = IPv4Address | IPv6Address

# Opened by ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS=true.
PRIVATE_NETWORKS = {
    ip_network("127.0.0.0/8"): "loopback",
    ip_network("::1/128"): "loopback",
    ip_network("10.0.0.0/8"): "private",
    ip_network("172.16.0.0/12"): "private",
    ip_network("192.168.0.0/16"): "private",
    ip_network("100.64.0.0/10"): "carrier-grade NAT",
    ip_network("fc00::/7"): "unique-local",
}

# Closed always, whatever the setting; checked before PRIVATE_NETWORKS so that, for instance,
# the AWS IPv6 metadata address stays closed although it lies in fc00::/7.
ALWAYS_BLOCKED_NETWORKS = {
    ip_network("169.254.169.254/32"): "cloud metadata",
    ip_network("fd00:ec2::254/128"): "cloud metadata",
    ip_network("100.100.100.200/32"): "cloud metadata",
    ip_network("169.254.0.0/16"): "link-local",
    ip_network("fe80::/10"): "link-local",
    ip_network("0.0.0.0/8"): "unspecified",
    ip_network("::/128"): "unspecified",
    ip_network("224.0.0.0/4"): "multicast",
    ip_network("ff00::/8"): "multicast",
    ip_network("240.0.0.0/4"): "reserved",
    ip_network("64:ff9b:1::/48"): "local-use NAT64",
    ip_network("2001::/32"): "Teredo tunnel",
}

NAT64 = ip_network("64:ff9b::/96")
SIX_TO_FOUR = ip_network("2002::/16")
IPV4_COMPATIBLE = ip_network("::/96")  # deprecated; checked after ::1 has been judged loopback


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    return None


def blocked_reason(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why the worker must not connect to `ip`, or None when it may."""
    if isinstance(ip, IPv6Address):
        if ip.scope_id:
            return f"{ip} is link-local (scoped)"
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = blocked_reason(inner, allow_private=allow_private)
            return f"{reason} (carried in {ip})" if reason else None
    for network, kind in ALWAYS_BLOCKED_NETWORKS.items():
        if ip.version == network.version and ip in network:
            return f"{ip} is {kind}"
    for network, kind in PRIVATE_NETWORKS.items():
        if ip.version == network.version and ip in network:
            return None if allow_private else f"{ip} is {kind}"
    if not ip.is_global or (ip.version == 6 and ip in IPV4_COMPATIBLE):
        return f"{ip} is reserved"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` denotes if it is a literal, in any form a resolver would accept.

    Besides dotted quads and IPv6 this catches the numeric tricks that inet_aton takes:
    `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1` and `0`.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None
