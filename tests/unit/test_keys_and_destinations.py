"""API key format and the outbound address policy, as tables."""

import ipaddress

import pytest

from asyncqueue import keys
from asyncqueue.outbound.destinations import LOOPBACK_ONLY, blocked_reason, parse_ip_literal


def test_generated_keys_are_well_formed_and_distinct():
    made = {keys.generate_key() for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert key.startswith("aq_") and len(key) == keys.KEY_LENGTH
        assert keys.is_well_formed(key)
        assert keys.display_prefix(key) == key[:11]
        assert len(keys.hash_key(key)) == 32


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1],  # truncated
        lambda k: k + "x",
        lambda k: k[:10] + ("A" if k[10] != "A" else "B") + k[11:],  # one character changed
        lambda k: "xx_" + k[3:],
        lambda k: k.replace(k[5], "!"),
        lambda k: "",
    ],
)
def test_malformed_keys_are_caught_without_a_lookup(mangle):
    assert not keys.is_well_formed(mangle(keys.generate_key()))


# (address or host, blocked without the setting, blocked with ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS)
POLICY = [
    ("93.184.215.14", False, False),
    ("2606:2800:220:1:248:1893:25c8:1946", False, False),
    ("127.0.0.1", True, False),
    ("127.255.0.1", True, False),
    ("::1", True, False),
    ("10.0.0.1", True, False),
    ("172.16.5.4", True, False),
    ("172.31.255.255", True, False),
    ("192.168.1.1", True, False),
    ("100.64.0.1", True, False),
    ("fc00::1", True, False),
    ("fd12:3456::1", True, False),
    ("169.254.169.254", True, True),
    ("169.254.1.1", True, True),
    ("fe80::1", True, True),
    ("fd00:ec2::254", True, True),
    ("0.0.0.0", True, True),
    ("::", True, True),
    ("224.0.0.1", True, True),
    ("ff02::1", True, True),
    ("240.0.0.1", True, True),
    ("255.255.255.255", True, True),
    ("192.0.2.1", True, True),
    ("198.18.0.1", True, True),
    ("2001:db8::1", True, True),
    ("::ffff:127.0.0.1", True, False),
    ("::ffff:169.254.169.254", True, True),
    ("::ffff:8.8.8.8", False, False),
    ("64:ff9b::10.0.0.1", True, False),
    ("64:ff9b::8.8.8.8", False, False),
    ("64:ff9b:1::1", True, True),
    ("2002:0a00:0001::1", True, False),
    ("2002:0808:0808::1", False, False),
    ("::10.0.0.1", True, True),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True, True),
    # The same answers on every Python (3.11 and 3.12 allowed 192.0.0.192), and the
    # cloud endpoints and IPv6 forms the interpreter's tables missed.
    ("192.0.0.192", True, True),
    ("192.0.0.8", True, True),
    ("168.63.129.16", True, True),
    ("169.254.170.2", True, True),
    ("100.100.100.200", True, True),
    ("fd00:ec2::253", True, True),
    ("fd20:ce::254", True, True),
    ("::ffff:0:169.254.169.254", True, True),
    ("::ffff:0:10.0.0.1", True, False),
    ("::ffff:0:8.8.8.8", False, False),
    ("192.88.99.1", True, True),
    ("198.19.255.255", True, True),
    ("198.20.0.0", False, False),
    ("203.0.113.9", True, True),
    ("100::1", True, True),
    ("2001:2::1", True, True),
    ("2001:10::1", True, True),
    ("2001:4:112::1", False, False),
    ("2001:20::1", False, False),
    ("3fff::1", True, True),
    ("5f00::1", True, True),
    ("fec0::1", True, True),
    ("4000::1", True, True),
    ("2002:c000:2c0::1", True, True),
    ("64:ff9b::c000:2c0", True, True),
    ("1.1.1.1", False, False),
    ("223.255.255.255", False, False),
]


@pytest.mark.parametrize("address, closed, closed_when_private_allowed", POLICY)
def test_address_policy(address, closed, closed_when_private_allowed):
    ip = ipaddress.ip_address(address)
    assert (blocked_reason(ip, allow_private=False) is not None) == closed
    assert (blocked_reason(ip, allow_private=True) is not None) == closed_when_private_allowed


# ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS=loopback (bin/dev's default): this machine only.
LOOPBACK_POLICY = [
    ("127.0.0.1", False),
    ("127.255.0.1", False),
    ("::1", False),
    ("::ffff:127.0.0.1", False),  # IPv4-mapped: delivered by this machine
    ("::ffff:7f00:1", False),
    # IPv6 forms that carry 127.x but are routed to a gateway on the network: not loopback.
    ("64:ff9b::7f00:1", True),
    ("2002:7f00:1::", True),
    ("::ffff:0:127.0.0.1", True),
    ("93.184.215.14", False),
    ("10.0.0.1", True),
    ("172.16.5.4", True),
    ("192.168.1.1", True),
    ("100.64.0.1", True),
    ("fc00::1", True),
    ("64:ff9b::10.0.0.1", True),
    ("::ffff:0:10.0.0.1", True),
    ("169.254.169.254", True),
    ("100.100.100.200", True),
    ("0.0.0.0", True),
]


@pytest.mark.parametrize("address, closed", LOOPBACK_POLICY)
def test_loopback_only_opens_this_machine_and_nothing_around_it(address, closed):
    ip = ipaddress.ip_address(address)
    assert (blocked_reason(ip, allow_private=LOOPBACK_ONLY) is not None) == closed


@pytest.mark.parametrize("address, closed, closed_when_private_allowed", POLICY)
def test_address_policy_does_not_ask_the_interpreter(
    monkeypatch, address, closed, closed_when_private_allowed
):
    """The interpreter's is_global / is_reserved / is_private differ between Python versions,
    so the policy must not consult them: with them made to fail, every answer is the same."""

    def refuse(self):
        raise AssertionError("the policy consulted the interpreter's address tables")

    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for name in ("is_global", "is_reserved", "is_private", "is_link_local", "is_loopback"):
            monkeypatch.setattr(cls, name, property(refuse))
    ip = ipaddress.ip_address(address)
    assert (blocked_reason(ip, allow_private=False) is not None) == closed
    assert (blocked_reason(ip, allow_private=True) is not None) == closed_when_private_allowed


@pytest.mark.parametrize(
    "address, reason",
    [
        ("192.0.0.192", "192.0.0.192 is cloud metadata (Oracle Cloud)"),
        ("192.0.2.1", "192.0.2.1 is documentation"),
        ("198.18.0.1", "198.18.0.1 is benchmarking"),
        ("255.255.255.255", "255.255.255.255 is reserved"),
        ("2001:db8::1", "2001:db8::1 is documentation"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254 is cloud metadata (carried in 64:ff9b::a9fe:a9fe)"),
        ("::7f00:1", "::7f00:1 is reserved (deprecated IPv4-compatible)"),
    ],
)
def test_refusals_say_why(address, reason):
    assert blocked_reason(ipaddress.ip_address(address), allow_private=True) == reason


@pytest.mark.parametrize(
    "host, address",
    [
        ("127.0.0.1.", "127.0.0.1"),
        ("0x7f000001.", "127.0.0.1"),
        ("127\u30020\u30020\u30021", "127.0.0.1"),
        ("\uff11\uff12\uff17.0.0.1", "127.0.0.1"),
        ("\u2460\u2461\u2466.0.0.1", "127.0.0.1"),
        ("0x", "0.0.0.0"),
        ("::1", "::1"),
        ("[v1.x]", None),
        ("1.2.3.4.5", None),
        ("example.com.", None),
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("10.1", "10.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
        ("example.com", None),
        ("1e100.net", None),
        ("deadbeef", None),
    ],
)
def test_numeric_tricks_are_read_as_addresses(host, address):
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed else None) == (
        str(ipaddress.ip_address(address)) if address else None
    )


def test_the_deny_cache_is_never_keyed_by_the_address_object():
    # An address hashes as its integer (not randomised), so IPv6 addresses 2**61 - 1 apart all
    # share one hash, and a cache keyed by them would make every lookup walk thousands of
    # entries. An address whose hash cannot be taken shows the cache keys on something else.
    class Unhashable(ipaddress.IPv6Address):
        def __hash__(self):
            raise AssertionError("the address object was hashed")

    base = int(ipaddress.IPv6Address("fc00::"))
    for k in range(3):
        ip = Unhashable(base + 12345 + k * (2**61 - 1))
        assert blocked_reason(ip, allow_private=False) == f"{ip} is unique-local"
    assert blocked_reason(Unhashable("fe80::1%eth0"), allow_private=True).endswith("(scoped)")


def test_the_deny_cache_tells_true_from_one():
    # allow_private=1 is not True (the policy opens private networks for True only); a cache
    # keyed without types would answer for one what it had worked out for the other.
    ip = ipaddress.ip_address("10.0.0.1")
    assert blocked_reason(ip, allow_private=1) == "10.0.0.1 is private"
    assert blocked_reason(ip, allow_private=True) is None
    assert blocked_reason(ip, allow_private=1) == "10.0.0.1 is private"


@pytest.mark.parametrize(
    "url, sent",
    [
        ("http://１２７。0。0。1:8080/ok?x=1", "http://127.0.0.1:8080/ok?x=1"),
        ("http://ｅｘａｍｐｌｅ.com/a", "http://example.com/a"),
        ("https://例え.jp/p", "https://xn--r8jz45g.jp/p"),
        ("http://user@①②⑦.0.0.1/", "http://user@127.0.0.1/"),
        # ASCII hosts are sent as written (a root dot, case, a numeric form included).
        ("http://Example.COM./x", "http://Example.COM./x"),
        ("http://127.1/", "http://127.1/"),
        ("http://[::1]:80/", "http://[::1]:80/"),
    ],
)
def test_a_host_not_in_ascii_is_sent_as_the_host_it_denotes(url, sent):
    from asyncqueue.outbound.hosts import with_ascii_host

    assert with_ascii_host(url) == sent
