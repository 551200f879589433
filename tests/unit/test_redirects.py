"""Redirect rules (method, body, origin, headers) and the order addresses are tried in, as
tables."""

import socket

import pytest

from asyncqueue.worker.http_client import interleave_families
from asyncqueue.worker.redirects import (
    RedirectRefused,
    hop_headers,
    is_redirect,
    next_hop,
    same_origin,
)


@pytest.mark.parametrize(
    "status, location, followed",
    [
        (301, "/a", True),
        (302, "/a", True),
        (303, "/a", True),
        (307, "/a", True),
        (308, "/a", True),
        (300, "/a", False),
        (304, "/a", False),
        (302, None, False),
        (302, "", False),
        (200, "/a", False),
    ],
)
def test_which_responses_are_followed(status, location, followed):
    assert is_redirect(status, location) == followed


@pytest.mark.parametrize(
    "status, method, new_method, keeps_body",
    [
        (301, "POST", "GET", False),
        (301, "PUT", "PUT", False),
        (301, "GET", "GET", False),
        (302, "POST", "GET", False),
        (302, "PUT", "GET", False),
        (302, "HEAD", "HEAD", False),
        (303, "POST", "GET", False),
        (303, "DELETE", "GET", False),
        (303, "HEAD", "HEAD", False),
        (307, "POST", "POST", True),
        (307, "PATCH", "PATCH", True),
        (308, "PUT", "PUT", True),
        (308, "DELETE", "DELETE", True),
    ],
)
def test_method_and_body_per_status(status, method, new_method, keeps_body):
    hop = next_hop(status, method, "http://a.test/x", "/y")
    assert (hop.method, hop.keeps_body) == (new_method, keeps_body)


@pytest.mark.parametrize(
    "url, location, target",
    [
        ("http://a.test/x/y", "/z", "http://a.test/z"),
        ("http://a.test/x/y", "z", "http://a.test/x/z"),
        ("http://a.test/x", "//b.test/z", "http://b.test/z"),
        ("https://a.test/x", "http://b.test:8080/z?q=1", "http://b.test:8080/z?q=1"),
        # A UTF-8 Location, as http.client hands it over (its bytes read as Latin-1).
        ("http://a.test/", "/caf\u00c3\u00a9", "http://a.test/café"),
    ],
)
def test_location_is_resolved_against_the_current_url(url, location, target):
    assert next_hop(302, "GET", url, location).url == target


@pytest.mark.parametrize(
    "location, message, blocked",
    [
        ("ftp://b.test/x", "redirect to a non-HTTP URL (ftp scheme)", False),
        ("file:///etc/passwd", "redirect to a non-HTTP URL (file scheme)", False),
        ("http://user:pw@b.test/", "redirect to a URL with a user name or password", True),
        ("https:///nohost", "redirect to a URL without a host", False),
        # Unparseable: refused, never a ValueError ("internal error").
        ("http://127.0.0.1:99999/", "redirect to an invalid URL", False),
        ("http://b.test:abc/", "redirect to an invalid URL", False),
        ("http://[::1", "redirect to an invalid URL", False),
        ("http://[zz::1]/", "redirect to an invalid URL", False),
    ],
)
def test_locations_that_are_refused(location, message, blocked):
    with pytest.raises(RedirectRefused) as refused:
        next_hop(302, "GET", "http://a.test/", location)
    assert str(refused.value).startswith(message) and refused.value.blocked == blocked


@pytest.mark.parametrize(
    "first, url, same",
    [
        ("http://a.test/x", "http://a.test/y", True),
        ("http://a.test/x", "http://A.TEST:80/y", True),
        ("http://a.test/x", "https://a.test/y", True),  # the upgrade to https
        ("http://a.test:8080/x", "https://a.test/y", False),
        ("https://a.test/x", "http://a.test/y", False),  # a downgrade is another origin
        ("http://a.test/x", "http://a.test:8080/y", False),
        ("http://a.test/x", "http://b.a.test/y", False),
        ("http://a.test/x", "http://127.0.0.1/y", False),
    ],
)
def test_what_counts_as_the_tasks_own_origin(first, url, same):
    assert same_origin(first, url) == same


DEFAULTS = {"User-Agent": "AsyncQueue/1.0", "Accept": "*/*"}
TASK = {
    "User-Agent": "mine/2",
    "Accept": "*/*",
    "Authorization": "Bearer s",
    "Content-Type": "application/json",
    "X-AsyncQueue-Task-Id": "t",
    "X-AsyncQueue-Retry-Count": "1",
}


@pytest.mark.parametrize(
    "own_origin, keeps_body, expected",
    [
        (True, True, TASK),
        (True, False, {k: v for k, v in TASK.items() if k != "Content-Type"}),
        (
            False,
            True,
            {
                "User-Agent": "AsyncQueue/1.0",
                "Accept": "*/*",
                "Content-Type": "application/json",
                "X-AsyncQueue-Task-Id": "t",
                "X-AsyncQueue-Retry-Count": "1",
            },
        ),
        (
            False,
            False,
            {
                "User-Agent": "AsyncQueue/1.0",
                "Accept": "*/*",
                "X-AsyncQueue-Task-Id": "t",
                "X-AsyncQueue-Retry-Count": "1",
            },
        ),
    ],
)
def test_headers_per_hop(own_origin, keeps_body, expected):
    assert hop_headers(TASK, DEFAULTS, own_origin=own_origin, keeps_body=keeps_body) == expected


V4, V6 = socket.AF_INET, socket.AF_INET6


def a4(ip):
    return (V4, (ip, 80))


def a6(ip):
    return (V6, (ip, 80, 0, 0))


@pytest.mark.parametrize(
    "given, ordered",
    [
        ([a4("1.1.1.1")], [a4("1.1.1.1")]),
        (
            [a6("::1"), a6("::2"), a4("1.1.1.1"), a4("1.1.1.2")],
            [a6("::1"), a4("1.1.1.1"), a6("::2"), a4("1.1.1.2")],
        ),
        (
            [a4("1.1.1.1"), a4("1.1.1.2"), a4("1.1.1.3"), a6("::1")],
            [a4("1.1.1.1"), a6("::1"), a4("1.1.1.2"), a4("1.1.1.3")],
        ),
        ([a4("1.1.1.1"), a4("1.1.1.1"), a4("1.1.1.2")], [a4("1.1.1.1"), a4("1.1.1.2")]),
    ],
)
def test_addresses_are_tried_families_interleaved(given, ordered):
    assert interleave_families(given) == ordered


@pytest.mark.parametrize(
    "host, family, address",
    [
        ("127.0.0.1", V4, "127.0.0.1"),
        ("127.0.0.1.", V4, "127.0.0.1"),  # a root dot: the creation check read it as 127.0.0.1
        ("0x7f000001.", V4, "127.0.0.1"),
        ("2130706433", V4, "127.0.0.1"),
        ("127.1", V4, "127.0.0.1"),
        ("１２７。0。0。1", V4, "127.0.0.1"),
        ("::1", V6, "::1"),
    ],
)
def test_a_literal_host_is_never_looked_up_by_name(monkeypatch, host, family, address):
    # `http://127.0.0.1.:port/` passes the creation check as 127.0.0.1; were
    # it looked up by name, "127.0.0.1." would fail every attempt (ENOTFOUND).
    from asyncqueue.worker import http_client
    from asyncqueue.worker.deadline import Deadline

    def no_lookup(*args):
        raise AssertionError(f"{host!r} was looked up by name")

    monkeypatch.setattr(http_client.RESOLVER, "submit", no_lookup)
    attempt = http_client.Attempt(Deadline.after(5))
    assert http_client.resolve(host, 80, attempt) == [
        (family, (address, 80) if family == V4 else (address, 80, 0, 0))
    ]
