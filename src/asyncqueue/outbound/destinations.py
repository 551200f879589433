"""Which addresses the worker may call (SSRF policy): pure functions, no I/O.

The policy is our own tables, not the interpreter's `is_global`/`is_reserved`, whose answers
change between Python versions (192.0.0.192, Oracle Cloud's metadata address, is "global" on
3.11 and 3.12 and not on 3.13). The tables follow the IANA IPv4 and IPv6 Special-Purpose Address
Registries plus the cloud providers' metadata and host endpoints, and every refusal says why.

Loopback and private ranges are opened only by ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS (local
development and tests): `true` opens them all, `loopback` only 127.0.0.0/8 and ::1 (what bin/dev
sets: callbacks to the developer's own machine, not to the networks around it); everything else
refused stays closed always. IPv6 forms that carry an
IPv4 address (IPv4-mapped, IPv4-translated, NAT64, 6to4) are judged by the IPv4 address they
carry; Teredo is refused whole. IPv6 outside 2000::/3, the only range IANA allocates for global
unicast, is refused as reserved.
"""

from __future__ import annotations

import functools
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from asyncqueue.outbound.hosts import parse_host

IPAddress = IPv4Address | IPv6Address

# ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS=loopback: the `allow_private` value that opens loopback only
# (True opens every range of PRIVATE_NETWORKS, False none).
LOOPBACK_ONLY = "loopback"


def _table(rows: dict[str, str]) -> list:
    return [(ip_network(net), reason) for net, reason in rows.items()]


# Closed always, whatever the setting. Checked first, so that the specific reason is the one
# shown, and so that cloud endpoints inside private ranges (fd00:ec2::254 lies in fc00::/7,
# 100.100.100.200 in 100.64/10) stay closed when private networks are opened.
CLOUD_ENDPOINTS = _table(
    {
        "169.254.169.254/32": "cloud metadata",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2/32": "cloud metadata (AWS ECS task metadata)",
        "fd00:ec2::/32": "cloud metadata (AWS instance services)",  # ::254 metadata, ::253 DNS
        "fd20:ce::254/128": "cloud metadata (Google Cloud)",
        "100.100.100.200/32": "cloud metadata",  # Alibaba Cloud
        "192.0.0.192/32": "cloud metadata (Oracle Cloud)",
        "168.63.129.16/32": "a cloud host endpoint (Azure WireServer)",
    }
)

# Opened by ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS=true ("loopback" ones also by =loopback).
PRIVATE_NETWORKS = _table(
    {
        "127.0.0.0/8": "loopback",
        "::1/128": "loopback",
        "10.0.0.0/8": "private",
        "172.16.0.0/12": "private",
        "192.168.0.0/16": "private",
        "100.64.0.0/10": "carrier-grade NAT",
        "fc00::/7": "unique-local",
    }
)

# IANA IPv4 Special-Purpose Address Registry (entries not globally reachable), multicast and
# the limited broadcast address. 192.0.0.0/24 is refused whole, including the two anycast
# addresses in it that are globally reachable (PCP, TURN): no callback lives there.
REFUSED_IPV4 = _table(
    {
        "0.0.0.0/8": "unspecified",  # "this network"
        "169.254.0.0/16": "link-local",
        "192.0.0.0/24": "reserved (IETF protocol assignments)",
        "192.0.2.0/24": "documentation",
        "192.88.99.0/24": "reserved (deprecated 6to4 relay anycast)",
        "198.18.0.0/15": "benchmarking",
        "198.51.100.0/24": "documentation",
        "203.0.113.0/24": "documentation",
        "224.0.0.0/4": "multicast",
        "240.0.0.0/4": "reserved",  # includes 255.255.255.255, limited broadcast
    }
)

# IANA IPv6 Special-Purpose Address Registry (entries not globally reachable), multicast and
# link-local; checked before the 2000::/3 rule because some of these lie inside it.
REFUSED_IPV6 = _table(
    {
        "::/128": "unspecified",
        "64:ff9b:1::/48": "local-use NAT64",
        "100::/64": "reserved (discard-only)",
        "100:0:0:1::/64": "reserved (dummy prefix)",
        "2001::/32": "Teredo tunnel",
        "2001:2::/48": "benchmarking",
        "2001:db8::/32": "documentation",
        "3fff::/20": "documentation",
        "5f00::/16": "reserved (segment routing)",
        "fe80::/10": "link-local",
        "fec0::/10": "reserved (deprecated site-local)",
        "ff00::/8": "multicast",
    }
)
# 2001::/23 (IETF protocol assignments) is not globally reachable except these ranges in it.
IETF_ASSIGNMENTS = ip_network("2001::/23")
IETF_GLOBAL = [
    ip_network(n)
    for n in ("2001:1::1/128", "2001:1::2/128", "2001:1::3/128", "2001:3::/32", "2001:4:112::/48")
    + ("2001:20::/28", "2001:30::/28")
]
GLOBAL_UNICAST = ip_network("2000::/3")

IPV4_MAPPED = ip_network("::ffff:0:0/96")
IPV4_TRANSLATED = ip_network("::ffff:0:0:0/96")  # SIIT, RFC 2765
NAT64 = ip_network("64:ff9b::/96")
SIX_TO_FOUR = ip_network("2002::/16")
IPV4_COMPATIBLE = ip_network("::/96")  # deprecated; :: and ::1 are judged before it


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, translated, NAT64, 6to4), if any."""
    if ip in IPV4_MAPPED or ip in IPV4_TRANSLATED or ip in NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    return None


def _lookup(ip: IPAddress, table: list) -> str | None:
    for network, reason in table:
        if ip.version == network.version and ip in network:
            return reason
    return None


def blocked_reason(ip: IPAddress, *, allow_private: bool | str) -> str | None:
    """Why the worker must not connect to `ip` ("<ip> is <reason>"), or None when it may.
    `allow_private`: True opens PRIVATE_NETWORKS, LOOPBACK_ONLY its loopback ranges only.

    Cached: it is asked about the same few addresses over and over (each create with a literal
    host, each connection the worker makes), each a walk through the tables. The cache is
    keyed by the address's bytes, never by the address object: an address hashes as its integer,
    which is not randomised, so anyone could send thousands of IPv6 addresses sharing one hash
    and make every lookup walk them all; a bytes hash is randomised per process."""
    return _blocked_reason_of(ip.packed, getattr(ip, "scope_id", None), allow_private)


# typed: allow_private=True and =1 are equal as keys but not to the `is True` test in _judge.
@functools.lru_cache(maxsize=4096, typed=True)
def _blocked_reason_of(packed: bytes, scope_id: str | None, allow_private: bool | str):
    ip = ip_address(packed)
    if scope_id:
        ip = IPv6Address(f"{ip}%{scope_id}")
    return _judge(ip, allow_private=allow_private)


def _judge(ip: IPAddress, *, allow_private: bool | str) -> str | None:
    if isinstance(ip, IPv6Address):
        if ip.scope_id:
            return f"{ip} is link-local (scoped)"
        inner = embedded_ipv4(ip)
        if inner is not None:
            # Loopback only means this machine: an IPv4-mapped address is delivered locally,
            # but NAT64, 6to4 and IPv4-translated forms go to a gateway on the network, whatever
            # address they carry, so for them the private ranges stay closed.
            opened = allow_private
            if allow_private == LOOPBACK_ONLY and ip not in IPV4_MAPPED:
                opened = False
            reason = _judge(inner, allow_private=opened)
            return f"{reason} (carried in {ip})" if reason else None
    reason = _lookup(ip, CLOUD_ENDPOINTS)
    if reason:
        return f"{ip} is {reason}"
    reason = _lookup(ip, PRIVATE_NETWORKS)
    if reason:
        opened = allow_private is True or (allow_private == LOOPBACK_ONLY and reason == "loopback")
        return None if opened else f"{ip} is {reason}"
    if isinstance(ip, IPv4Address):
        reason = _lookup(ip, REFUSED_IPV4)
    else:
        reason = _lookup(ip, REFUSED_IPV6)
        if reason is None and ip in IETF_ASSIGNMENTS and not any(ip in n for n in IETF_GLOBAL):
            reason = "reserved (IETF protocol assignments)"
        if reason is None and ip in IPV4_COMPATIBLE:
            reason = "reserved (deprecated IPv4-compatible)"
        if reason is None and ip not in GLOBAL_UNICAST:
            reason = "reserved"
    return f"{ip} is {reason}" if reason else None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` denotes if it is a literal, in any form a browser or resolver reads
    as one: dotted quads, bracketed IPv6, the numeric forms `2130706433`, `0x7f000001`,
    `0177.0.0.1`, `127.1`, `0`, a root dot (`127.0.0.1.`) and UTS-46 mapped digits and dots
    (`１２７。0。0。1`)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address, as the worker's resolver returns them
    parsed = parse_host(host)
    return None if parsed is None or isinstance(parsed, str) else parsed
