"""The web process under slow and malformed clients, through the real gunicorn (the Procfile's
command and config): stalled requests hold no thread, and every refusal is JSON."""

import json
import re
import socket
import time

import pytest
import requests

from asyncqueue import domain
from asyncqueue.keys import generate_key
from tests.support import exchange, wait_for
from tests.support.databases import stack_on_a_clone

HEADER_TIMEOUT = 3


@pytest.fixture(scope="module")
def web(pg_admin_url, template_db):
    """gunicorn alone (1 process x 4 threads), with short read limits so the 408 test is quick."""
    with stack_on_a_clone(
        pg_admin_url,
        template_db,
        "asyncqueue-web-",
        ASYNCQUEUE_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        ASYNCQUEUE_BODY_TIMEOUT=str(HEADER_TIMEOUT),
        ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="false",
    ) as s:
        s.start_web()
        yield s


def connect(web) -> socket.socket:
    return socket.create_connection(("127.0.0.1", web.port), timeout=10)


LISTEN, ESTABLISHED = 0x0A, 0x01  # TCP states as /proc/net/tcp writes them


def sockets_on_port(port: int) -> list[tuple[int, int]]:
    """(state, receive queue) of each TCP socket here whose local port is `port`: for a listening
    socket the queue is the connections not yet accepted, else the bytes not yet read."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.append((int(fields[3], 16), int(fields[4].split(":")[1], 16)))
    return found


def server_took(port: int, count: int) -> bool:
    """At least `count` connections accepted and everything sent on them read."""
    sockets = sockets_on_port(port)
    accepted = [queue for state, queue in sockets if state == ESTABLISHED]
    backlog = [queue for state, queue in sockets if state == LISTEN]
    return len(accepted) >= count and not any(accepted) and not any(backlog)


def status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


def answered_within_a_second(web) -> None:
    started = time.monotonic()
    health = requests.get(web.url("/healthz"), timeout=1)
    created = web.http.post(
        web.url("/v1/tasks"), json={"callbackUrl": "https://example.com/x"}, timeout=1
    )
    assert (health.status_code, created.status_code) == (200, 201)
    assert time.monotonic() - started < 2  # two requests, each within its 1 s timeout


def test_fifty_stalled_requests_do_not_hold_up_a_normal_one(web):
    stalled = []
    try:
        for i in range(50):
            s = connect(web)
            if i % 2:  # headers that never end
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
            else:  # a forged, well-formed key and a body that never comes
                s.sendall(
                    b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"X-API-Key: %s\r\nContent-Length: 1000\r\n\r\n{" % generate_key().encode()
                )
            stalled.append(s)
        wait_for(
            lambda: server_took(web.port, len(stalled)),
            timeout=10,
            message="the server to take every stalled request",
        )
        answered_within_a_second(web)
    finally:
        for s in stalled:
            s.close()


def test_a_stalled_request_gets_a_json_408_after_the_header_timeout(web):
    started = time.monotonic()
    raw, _ = exchange(web.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait=HEADER_TIMEOUT + 5)
    assert time.monotonic() - started >= HEADER_TIMEOUT - 0.5
    status, body = status_and_json(raw)
    assert status == 408 and body["error"].startswith("Request not received in time")


def test_a_body_that_stops_gets_a_json_408(web):
    raw, _ = exchange(
        web.port,
        b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",
        wait=2 * HEADER_TIMEOUT + 5,
    )
    assert status_and_json(raw)[0] == 408


@pytest.mark.parametrize(
    "request_bytes, status, starts",
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "Request line too long"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
            431,
            "Request headers too large",
        ),
        (b"GARBAGE\r\n\r\n", 400, "Malformed HTTP request"),
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400, "Malformed HTTP request"),
        (
            b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "Malformed HTTP request",
        ),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000, 431, "Request headers too large"),
    ],
    ids=["uri-5000", "header-9000", "garbage-line", "bad-version", "bad-chunk", "endless-head"],
)
def test_requests_gunicorn_refuses_are_answered_in_json(web, request_bytes, status, starts):
    raw, _ = exchange(web.port, request_bytes)
    got, body = status_and_json(raw)
    assert got == status and body["error"].startswith(starts)
    # Like every response, these carry a request id.
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    assert re.search(r"(?im)^x-request-id: [0-9a-f]{32}\r?$", head), head


def test_a_chunked_body_over_the_limit_is_413_through_gunicorn(web):
    valid = json.dumps({"callbackUrl": "https://example.com/x"}).encode()
    padded = valid + b" " * (domain.MAX_REQUEST_BODY - len(valid)) + b" " * (2 * domain.MIB)

    def chunks():
        for i in range(0, len(padded), 65536):
            yield padded[i : i + 65536]

    response = web.http.post(
        web.url("/v1/tasks"),
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"].startswith("Request body too large")


def test_expect_100_continue_is_answered_before_the_body(web):
    body = json.dumps({"callbackUrl": "https://example.com/x"}).encode()
    with connect(web) as s:
        s.sendall(
            b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % (web.key.encode(), len(body))
        )
        s.settimeout(2)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        s.settimeout(10)
        response = s.recv(65536)
    assert response.startswith(b"HTTP/1.1 201")
    assert response.count(b"100 Continue") == 0  # not a second time


def test_keep_alive_and_pipelined_requests_still_work(web):
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw, _ = exchange(web.port, one + one + last)
    assert raw.count(b"HTTP/1.1 200 OK") == 3


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"])
def test_a_declared_body_over_the_limit_is_413_at_once_and_says_connection_close(web, expect):
    # The body is never read (refused from its declared length), so the connection is closed
    # after the answer: the answer must say so, and must not invite the body with a 100.
    raw, _ = exchange(
        web.port,
        b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\n%sContent-Length: 2000000\r\n\r\n"
        % (web.key.encode(), expect),
    )
    assert not raw.startswith(b"HTTP/1.1 100"), raw[:200]
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nconnection: close" in head, head
