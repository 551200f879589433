"""A URL's host read as a browser's URL parser reads it (the WHATWG URL standard): pure, no I/O.

The API judges a callback's host before storing the task, so it must see the host the HTTP
client will use, not the text as written: `127。0。0。1` and `１２７.0.0.1` are 127.0.0.1 after
UTS-46 mapping, `127.0.0.1.` is 127.0.0.1 with the root dot, `0x7f000001` is 127.0.0.1 as an
IPv4 number, and a host whose last label is a number must be an IPv4 address or nothing.
"""

from __future__ import annotations

import functools
import string
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import urlsplit, urlunsplit

import idna

IPAddress = IPv4Address | IPv6Address

# Stricter than WHATWG's "forbidden domain code points": DNS names, plus "_" (used in SRV-style
# and some internal names).
HOSTNAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "-_")
HEX_DIGITS = frozenset(string.hexdigits)
OCTAL_DIGITS = frozenset(string.octdigits)


def raw_host(netloc: str) -> str:
    """The host part of a URL's authority as written: no user info, no port, brackets kept."""
    host_port = netloc.rpartition("@")[2]
    if host_port.startswith("["):
        end = host_port.find("]")
        return host_port if end < 0 else host_port[: end + 1]
    return host_port.partition(":")[0]


def with_ascii_host(url: str) -> str:
    """`url` with a host written other than in ASCII (`１２７。0。0。1`, `例え.jp`) replaced by
    the host it denotes (`127.0.0.1`, `xn--r8jz45g.jp`), as a browser sends it; the HTTP client
    cannot encode the other form. An ASCII host, or one that is no host, is left as written."""
    parts = urlsplit(url)
    userinfo, at, host_port = parts.netloc.rpartition("@")
    raw = raw_host(host_port)
    if raw.isascii():
        return url
    host = parse_host(raw)
    if host is None:
        return url
    text = f"[{host}]" if isinstance(host, IPv6Address) else str(host)
    netloc = f"{userinfo}{at}{text}{host_port[len(raw) :]}"
    return urlunsplit(parts._replace(netloc=netloc))


MAX_CACHED_HOST = 253  # (a DNS name's longest; longer hosts are read anew each time)


def parse_host(raw: str) -> IPAddress | str | None:
    """The address, or the lower-case ASCII domain name (without a root dot), that `raw` denotes;
    None when it cannot be a valid host."""
    if len(raw) <= MAX_CACHED_HOST:
        return _parse_host_cached(raw)
    return _parse_host(raw)


# Cached: a service's callbacks go to few hosts, and each create reads its URL's host twice
# (the field, then the destination rules). The answers are immutable; the cache holds at most
# 1,024 hosts of at most 253 characters.
@functools.lru_cache(maxsize=1024)
def _parse_host_cached(raw: str) -> IPAddress | str | None:
    return _parse_host(raw)


def _parse_host(raw: str) -> IPAddress | str | None:
    if raw.startswith("["):
        return _bracketed_ipv6(raw)
    if not raw:
        return None
    if raw.isascii():
        host = raw.lower()
    else:
        try:
            host = idna.encode(raw, uts46=True).decode("ascii")
        except (UnicodeError, ValueError):  # idna.IDNAError is a UnicodeError
            return None
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # the root dot: "example.com." is "example.com"
    if _ends_in_number(labels[-1]):
        return _ipv4(labels)
    # No DNS length limits (63 per label, 253 in all): a browser does not apply them either,
    # and such a name simply fails to resolve, as any unknown name does.
    for label in labels:
        if not label or not set(label) <= HOSTNAME_CHARS:
            return None
    return ".".join(labels)


def _bracketed_ipv6(raw: str) -> IPv6Address | None:
    # Only IPv6 goes in brackets: no IPvFuture ("[v1.x]"), no zone ("[fe80::1%25eth0]").
    if not raw.endswith("]") or "%" in raw:
        return None
    try:
        return IPv6Address(raw[1:-1])
    except ValueError:
        return None


def _ends_in_number(label: str) -> bool:
    if label.isdigit() and label.isascii():
        return True
    return label[:2] in ("0x", "0X") and set(label[2:]) <= HEX_DIGITS


def _ipv4_number(part: str) -> int | None:
    """One dotted part: decimal, 0x-hex (may be empty after 0x) or 0-octal, as inet_aton reads."""
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        if not set(digits) <= HEX_DIGITS:
            return None
        return int(digits, 16) if digits else 0
    if not (part.isascii() and part.isdigit()):
        return None
    if len(part) > 1 and part[0] == "0":
        if not set(part) <= OCTAL_DIGITS:
            return None
        return int(part, 8)
    return int(part)


def _ipv4(labels: list[str]) -> IPv4Address | None:
    if len(labels) > 4 or any(len(label) > 40 for label in labels):
        return None  # (40: no int() of a huge digit string; no valid part is that long)
    numbers = [_ipv4_number(label) if label else None for label in labels]
    if any(n is None for n in numbers):
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return IPv4Address(value)
