"""The worker's outbound guard: blocked targets, by literal and by name, directly and through
redirects, with a connect guard proving that no connection is even attempted. Only loopback is
ever connected to."""

import ipaddress
import socket
from urllib.parse import quote

import pytest

from asyncqueue.outbound import destinations
from asyncqueue.worker import http_client
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import perform_attempt
from tests.support import Receiver, report

BLOCKED_ADDRESSES = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::1",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.254",
    "100.64.0.1",
    "100.127.255.254",
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "fe80::abcd:1",
    "fc00::1",
    "fd00::1",
    "fd00:ec2::254",
    "100.100.100.200",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.0.1",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "198.18.0.1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b:1::1",
    "2002:7f00:1::1",
    "2002:a00:1::1",
    "::7f00:1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]
NUMERIC_TRICKS = [
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "0",
    "10.1",
    "0xa9fea9fe",
    "017700000001",
]


def literal_url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:8080/x"


LITERAL_TARGETS = [literal_url(a) for a in BLOCKED_ADDRESSES] + [
    f"http://{t}:8080/x" for t in NUMERIC_TRICKS
]
NAME_TARGETS = {f"host{i}.blocked.test": a for i, a in enumerate(BLOCKED_ADDRESSES)}
NAME_TARGETS["mixed.blocked.test"] = "10.0.0.1,169.254.169.254,::1"
REDIRECT_TARGETS = LITERAL_TARGETS[::3] + [f"http://{h}:8080/x" for h in sorted(NAME_TARGETS)[::3]]


# Every connect the guards saw, over the module's tests: (address, allowed by the test?).
GUARD_SAW: list[tuple[tuple, bool]] = []
GUARDED_TESTS: list[str] = []


@pytest.fixture
def connect_guard(monkeypatch, request):
    """Record every connect; refuse (without connecting) anything but the test's own server."""
    attempts, allowed = [], set()
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo
    GUARDED_TESTS.append(request.node.name)

    def guarded_connect(self, address):
        attempts.append(address[:2])
        GUARD_SAW.append((address[:2], address[:2] in allowed))
        if address[:2] not in allowed:
            raise ConnectionRefusedError("connect guard: not the test server")
        return real_connect(self, address)

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host in NAME_TARGETS:
            out = []
            for a in NAME_TARGETS[host].split(","):
                family = socket.AF_INET6 if ":" in a else socket.AF_INET
                sockaddr = (a, port, 0, 0) if family == socket.AF_INET6 else (a, port)
                out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return out
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return attempts, allowed


def attempt(url: str, allow_private: bool = False):
    session = http_client.make_session(allow_private=allow_private)
    try:
        return perform_attempt(session, CallSpec("GET", url, {}, None), Deadline.after(5), 1024)
    finally:
        session.close()


def test_there_are_at_least_sixty_targets():
    assert len(LITERAL_TARGETS) + len(NAME_TARGETS) >= 60


@pytest.mark.parametrize("url", LITERAL_TARGETS)
def test_literal_targets_are_blocked_without_connecting(connect_guard, url):
    attempts, _ = connect_guard
    result = attempt(url)
    assert result.blocked and result.error.startswith("blocked destination: ")
    assert attempts == []


@pytest.mark.parametrize("host", sorted(NAME_TARGETS))
def test_names_resolving_to_blocked_addresses_are_blocked(connect_guard, host):
    attempts, _ = connect_guard
    result = attempt(f"http://{host}:8080/x")
    assert result.blocked, result
    assert result.error.startswith(f"blocked destination: {host}: ")
    assert attempts == []


REDIRECTOR_HOST = "127.0.0.77"


@pytest.fixture
def redirector(monkeypatch, connect_guard):
    """A receiver on 127.0.0.77 that the policy treats as public, so that it can redirect.
    (No target below is 127.0.0.77, so every target stays blocked.)"""
    receiver = Receiver(host=REDIRECTOR_HOST).start()
    _, allowed = connect_guard
    allowed.add((REDIRECTOR_HOST, receiver.port))
    real = destinations.blocked_reason

    def policy(ip, *, allow_private):
        if ip == ipaddress.ip_address(REDIRECTOR_HOST):
            return None
        return real(ip, allow_private=False)

    monkeypatch.setattr(http_client, "blocked_reason", policy)
    yield receiver
    receiver.stop()


@pytest.mark.parametrize("target", REDIRECT_TARGETS)
def test_redirects_toward_blocked_targets_are_blocked(redirector, connect_guard, target):
    attempts, _ = connect_guard
    result = attempt(redirector.url(f"/goto/302?{quote(target, safe='')}"))
    assert result.blocked, result
    assert set(attempts) == {(REDIRECTOR_HOST, redirector.port)}


def test_redirect_chain_ends_blocked_after_several_hops(redirector, connect_guard):
    attempts, _ = connect_guard
    url = literal_url("169.254.169.254")
    for _ in range(3):
        url = redirector.url(f"/goto/307?{quote(url, safe='')}")
    result = attempt(url)
    assert result.blocked
    assert set(attempts) == {(REDIRECTOR_HOST, redirector.port)}


def test_too_many_redirects_end_with_the_last_redirect_as_the_result(redirector):
    """3xx responses complete the task: no retry."""
    url = redirector.url("/ok")
    for _ in range(7):
        url = redirector.url(f"/goto/302?{quote(url, safe='')}")
    result = attempt(url)
    assert result.status_code == 302 and result.error is None, result
    assert "location" in result.headers


def test_loopback_allowed_when_private_networks_are_allowed():
    receiver = Receiver().start()
    try:
        result = attempt(receiver.url("/ok"), allow_private=True)
        assert result.status_code == 200
        assert attempt(receiver.url("/ok")).blocked
    finally:
        receiver.stop()


def test_endless_response_is_cut_at_the_cap_without_reading_it_all():
    receiver = Receiver().start()
    try:
        session = http_client.make_session(allow_private=True)
        result = perform_attempt(
            session,
            CallSpec("GET", receiver.url("/endless"), {}, None),
            Deadline.after(10),
            100_000,
        )
        assert result.status_code == 200 and result.body_truncated
        assert len(result.body) == 100_000
        assert result.duration_ms < 5000
    finally:
        receiver.stop()


def test_the_connect_guards_saw_no_connect_toward_a_blocked_target():
    """Runs last: the tally of what the connect guards of this module's tests observed."""
    toward_blocked = [address for address, allowed in GUARD_SAW if not allowed]
    to_redirector = len(GUARD_SAW) - len(toward_blocked)
    report(
        f"ssrf: {len(LITERAL_TARGETS)} literal and {len(NAME_TARGETS)} named blocked targets, "
        f"{len(REDIRECT_TARGETS) + 1} redirect chains toward them; over {len(GUARDED_TESTS)} "
        f"guarded tests the connect guard observed {len(GUARD_SAW)} connect attempts: "
        f"{to_redirector} to the test's own redirector, {len(toward_blocked)} toward a blocked "
        "target"
    )
    assert toward_blocked == []
    if len(GUARDED_TESTS) >= len(LITERAL_TARGETS) + len(NAME_TARGETS):  # the whole module ran
        # The guard does see connects: every redirect chain made at least one, to the redirector.
        assert to_redirector >= len(REDIRECT_TARGETS) + 1
