"""API key format and the outbound address policy, as tables."""

import ipaddress

import pytest

from asyncqueue import keys
from asyncqueue.destinations import blocked_reason, parse_ip_literal


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
]


@pytest.mark.parametrize("address, closed, closed_when_private_allowed", POLICY)
def test_address_policy(address, closed, closed_when_private_allowed):
    ip = ipaddress.ip_address(address)
    assert (blocked_reason(ip, allow_private=False) is not None) == closed
    assert (blocked_reason(ip, allow_private=True) is not None) == closed_when_private_allowed


@pytest.mark.parametrize(
    "host, address",
    [
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
