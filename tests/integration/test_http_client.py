"""The worker's HTTP client against real servers on loopback: what one task's call leaves behind
for the next; one deadline for the whole attempt; redirects followed without reading their
bodies, and without the task's headers past its origin; responses held to HTTP framing; what
of a response is stored (charset, header caps); and an outcome for every attempt."""

import contextlib
import gzip
import socket
import threading
import time
from urllib.parse import quote

import pytest

from asyncqueue import domain
from asyncqueue.worker import execute, http_client
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import cut_all_attempts, perform_attempt
from tests.support import Receiver, report, wait_for
from tests.support.raw_http import FakeResolver, HangingListener, ScriptedServer


def test_cookies_set_by_one_callback_are_not_sent_with_the_next(receiver):
    session = http_client.make_session(allow_private=True)
    first = perform_attempt(
        session, CallSpec("POST", receiver.url("/cookie/a"), {}, "{}"), Deadline.after(5), 1024
    )
    assert first.status_code == 200 and "session=secret" in first.headers["set-cookie"]
    perform_attempt(
        session, CallSpec("POST", receiver.url("/ok/cookie-b"), {}, "{}"), Deadline.after(5), 1024
    )
    (second,) = receiver.calls("/ok/cookie-b")
    assert "Cookie" not in second.headers
    assert not hasattr(session, "cookies")  # the client keeps no cookie jar at all


def test_kept_alive_connection_is_reused_between_attempts(receiver):
    session = http_client.make_session(allow_private=True)
    for i in range(5):
        spec = CallSpec("POST", receiver.url(f"/ok/reuse-{i}"), {}, "{}")
        assert perform_attempt(session, spec, Deadline.after(5), 1024).status_code == 200
    ports = {receiver.calls(f"/ok/reuse-{i}")[0].client_port for i in range(5)}
    assert len(ports) == 1


def test_task_headers_override_the_defaults_whatever_their_case(receiver):
    session = http_client.make_session(allow_private=True)
    spec = CallSpec("POST", receiver.url("/ok/ua-default"), {"X-Custom": "1"}, "{}")
    perform_attempt(session, spec, Deadline.after(5), 1024)
    spec = CallSpec("POST", receiver.url("/ok/ua-own"), {"user-agent": "mine/2"}, "{}")
    perform_attempt(session, spec, Deadline.after(5), 1024)
    (default,) = receiver.calls("/ok/ua-default")
    (own,) = receiver.calls("/ok/ua-own")
    assert default.headers["User-Agent"] == "AsyncQueue/1.0"
    assert default.headers["X-Custom"] == "1"
    # Sent once, with the task's value (header names are compared without case).
    assert [v for k, v in own.headers.items() if k.lower() == "user-agent"] == ["mine/2"]


# -- helpers ----------------------------------------------------------------------------------


def no_real_resolver(host, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a test name")


@pytest.fixture
def resolver(monkeypatch):
    """A fake resolver, given to the worker's transport in a lookup pool of its own (`.pool`)."""
    fake = FakeResolver(no_real_resolver)
    pool = fake.pool = http_client.LookupPool(lookup=fake)
    monkeypatch.setattr(http_client, "RESOLVER", pool)
    yield fake
    fake.release()
    pool.close()


@pytest.fixture
def scripted():
    servers = []

    def start(serve, **kwargs):
        server = ScriptedServer(serve, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def call(url, method="GET", headers=None, body=None, seconds=5.0, cap=65536, client=None):
    client = client or http_client.make_session(allow_private=True)
    spec = CallSpec(method, url, headers or {}, body)
    return perform_attempt(client, spec, Deadline.after(seconds), cap)


def attempts_under_way() -> list[http_client.Attempt]:
    """The attempts the watchdog holds: begun and not yet ended."""
    with http_client.WATCHDOG._cond:
        return list(http_client.WATCHDOG._attempts)


def attempts_waiting_for(pool: http_client.LookupPool, host: str, port: int) -> int:
    """How many attempts wait for the lookup of (host, port) in `pool`."""
    with pool._cond:
        lookup = pool.book._lookups.get((host, port))
        return lookup.waiting if lookup is not None else 0


def timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def redirect_after(seconds, location, status=302):
    def serve(server, conn, head, body):
        time.sleep(seconds)  # a server slow to answer: the behaviour under test
        server.send(
            conn,
            f"HTTP/1.1 {status} Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode(),
        )

    return serve


# -- one deadline for the whole attempt -------------------------------------------------------


def test_redirect_to_a_host_whose_connect_hangs_ends_at_the_deadline(scripted, resolver):
    with HangingListener() as hanging:
        resolver.add("hang.test", "127.0.0.1")
        first = scripted(redirect_after(1.8, f"http://hang.test:{hanging.port}/"))
        result, took = timed(lambda: call(first.url("/"), seconds=2.0))
    assert result.timed_out, result
    assert took <= 2.5
    report(
        f"deadline: a 2 s attempt, 302 at 1.8 s to a host whose connect hangs, took {took:.2f} s"
    )


def test_redirect_to_a_name_that_resolves_slowly_ends_at_the_deadline(scripted, resolver):
    resolver.add("slow.test", "127.0.0.1", delay=10)
    first = scripted(redirect_after(1.8, "http://slow.test:9/"))
    result, took = timed(lambda: call(first.url("/"), seconds=2.0))
    assert result.timed_out, result
    assert took <= 2.5
    assert resolver.lookups == ["slow.test"]
    report(f"deadline: a 2 s attempt, 302 at 1.8 s to a name resolving in 10 s, took {took:.2f} s")


def test_cut_all_attempts_ends_attempts_in_progress_at_once(resolver):
    with HangingListener() as hanging:
        resolver.add("slow.test", "127.0.0.1", delay=10)
        results = []
        threads = [
            threading.Thread(
                target=lambda u=url: results.append(timed(lambda: call(u, seconds=30)))
            )
            for url in (f"http://127.0.0.1:{hanging.port}/", "http://slow.test:9/")
        ]
        for t in threads:
            t.start()
        # Both under way: one connecting (its socket tracked), one waiting for its lookup.
        wait_for(
            lambda: (
                len(attempts_under_way()) >= 2
                and resolver.lookups == ["slow.test"]
                and any(a._copies for a in attempts_under_way())
            ),
            timeout=10,
            message="both attempts to be under way",
        )
        cut_all_attempts()
        for t in threads:
            t.join(timeout=10)
    assert len(results) == 2
    for result, took in results:
        assert result.timed_out and result.cut_short, result
        assert took < 3


# -- every allowed address is tried -----------------------------------------------------------


@pytest.mark.parametrize("dead", ["127.0.0.2", "::1"])
def test_a_dead_address_is_skipped_for_a_live_one(receiver, resolver, dead):
    # Nothing listens there at the receiver's port: refused, then 127.0.0.1 answers.
    resolver.add("two.test", dead, "127.0.0.1")
    result = call(f"http://two.test:{receiver.port}/ok/two-addresses-{dead}")
    assert result.status_code == 200, result
    assert len(receiver.calls(f"/ok/two-addresses-{dead}")) == 1


def test_an_address_whose_connect_hangs_gets_only_its_share_of_the_time(resolver):
    with HangingListener("127.0.0.2") as hanging:
        live = Receiver(port=hanging.port).start()  # the same port, on 127.0.0.1
        try:
            resolver.add("hangs-then-live.test", "127.0.0.2", "127.0.0.1")
            url = f"http://hangs-then-live.test:{hanging.port}/ok/after-hang"
            result, took = timed(lambda: call(url, seconds=4.0))
        finally:
            live.stop()
    assert result.status_code == 200, result
    assert 1.5 < took < 3.5  # half of the 4 s for the first address, then the second answers


def test_every_address_refused_is_a_network_error(resolver):
    resolver.add("dead.test", "127.0.0.2", "127.0.0.3")
    result = call("http://dead.test:9/")
    assert result.error == "fetch failed: ECONNREFUSED"


# -- text by its charset, else UTF-8 ----------------------------------------------------------


def respond(status_line, headers, body, *, length=True):
    def serve(server, conn, head, request_body):
        lines = [status_line, *headers]
        if length:
            lines.append(f"Content-Length: {len(body)}")
        server.send(conn, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    return serve


@pytest.mark.parametrize(
    "content_type, body, text",
    [
        ("text/plain", "café ✓".encode(), "café ✓"),
        ("application/json", '{"a": "café ✓"}'.encode(), '{"a": "café ✓"}'),
        ("text/plain; charset=iso-8859-1", "café".encode("latin-1"), "café"),
        ('text/html; charset="windows-1252"', b"\x93hi\x94", "\u201chi\u201d"),
        ("text/plain; charset=bogus", "café ✓".encode(), "café ✓"),
        ("text/plain; charset=idna", "café ✓".encode(), "café ✓"),
        ("text/plain; charset=base64", "café ✓".encode(), "café ✓"),
        ("text/plain", b"caf\xe9 \xff!", "caf\ufffd \ufffd!"),
    ],
)
def test_text_is_decoded_by_its_charset_else_utf8(scripted, content_type, body, text):
    server = scripted(respond("HTTP/1.1 200 OK", [f"Content-Type: {content_type}"], body))
    result = call(server.url("/"))
    assert result.status_code == 200, result
    assert result.body == text


# -- every attempt ends in an outcome ---------------------------------------------------------


def test_a_header_value_outside_latin1_is_refused_before_sending(receiver):
    result = call(receiver.url("/ok/unsendable"), "POST", {"X-Name": "é☃"}, "{}")
    assert result.unsendable and not result.internal, result
    assert "X-Name" in result.error and result.error.startswith("invalid request: ")
    assert receiver.calls("/ok/unsendable") == []


def test_an_unexpected_error_becomes_an_internal_error_result(receiver, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(execute, "_read_final", broken)
    result = call(receiver.url("/ok/internal"))
    assert result.internal and result.error == "internal error: RuntimeError: boom", result


# -- response headers are capped --------------------------------------------------------------


def test_response_headers_are_capped_and_marked(scripted):
    huge = [f"X-Big-{i}: {'h' * 10000}" for i in range(5)]  # (within the head's own bound)
    server = scripted(respond("HTTP/1.1 200 OK", ["X-Small: 1", *huge], b"ok"))
    result = call(server.url("/"))
    assert result.status_code == 200, result
    assert result.headers["x-small"] == "1"
    stored = sum(len(k) + len(v.encode()) for k, v in result.headers.items())
    assert stored <= domain.MAX_RESPONSE_HEADERS_TOTAL
    assert result.headers_truncated and result.result_json()["headersTruncated"] is True


def test_response_header_count_is_capped(scripted):
    many = [f"X-H-{i}: {i}" for i in range(80)]
    server = scripted(respond("HTTP/1.1 200 OK", many, b"ok"))
    result = call(server.url("/"))
    assert len(result.headers) == domain.MAX_RESPONSE_HEADER_COUNT
    assert result.headers_truncated


def test_small_headers_are_not_marked_truncated(receiver):
    result = call(receiver.url("/ok/plain"))
    assert not result.headers_truncated and "headersTruncated" not in result.result_json()


# -- a response cut short is a network error --------------------------------------------------


def raw(data: bytes):
    def serve(server, conn, head, body):
        server.send(conn, data)

    return serve


@pytest.mark.parametrize(
    "data, error",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Le", "fetch failed: incomplete response"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", "fetch failed: incomplete response"),
        (b"HTTP/1.1 200 OK", "fetch failed: incomplete response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc", "fetch failed: malformed response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nabc", "fetch failed: malformed response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc", "fetch failed: malformed response"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
            "fetch failed: incomplete response",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            "fetch failed: incomplete response",
        ),
        (b"", "fetch failed: ECONNRESET"),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 101 + b"Content-Length: 0\r\n\r\n",
            "fetch failed: malformed response",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Long: " + b"l" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
            "fetch failed: malformed response",
        ),
    ],
)
def test_a_response_cut_short_or_malformed_is_a_network_error(scripted, data, error):
    server = scripted(raw(data))
    result = call(server.url("/"))
    assert result.status_code is None and result.error == error, result


def test_a_body_read_until_close_is_complete(scripted):
    server = scripted(raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"))
    result = call(server.url("/"))
    assert result.status_code == 200 and result.body == "all of it", result


# -- a redirect's body is never read ----------------------------------------------------------


def endless_redirect_body(location, encoding=None):
    def serve(server, conn, head, body):
        extra = f"Content-Encoding: {encoding}\r\n" if encoding else ""
        server.send(
            conn,
            f"HTTP/1.1 302 Found\r\nLocation: {location}\r\n{extra}"
            f"Content-Length: {1 << 30}\r\n\r\n".encode(),
        )
        chunk = GZIP_ZEROS if encoding == "gzip" else b"z" * 65536
        end = time.monotonic() + 10
        while time.monotonic() < end:  # until the client hangs up (or 10 s)
            server.send(conn, chunk)

    return serve


# One MiB of zeros, gzipped (about 1 KiB): sent over and over, a body that inflates 1000-fold.
GZIP_ZEROS = gzip.compress(b"\0" * (1 << 20))[10:-8]


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_a_redirect_body_is_not_read(scripted, receiver, encoding):
    server = scripted(endless_redirect_body(receiver.url("/ok/after-big"), encoding), sndbuf=65536)
    result, took = timed(lambda: call(server.url("/"), seconds=10))
    assert result.status_code == 200 and receiver.calls("/ok/after-big"), result
    assert took < 5
    # The server sends until the client hangs up; once it has noticed, its count is final.
    wait_for(lambda: server.active == 0, timeout=10, message="the server to see the client go")
    assert server.sent < 4 * 1024 * 1024  # socket buffers at most; reading it would be GiBs


def test_a_redirect_body_that_stalls_does_not_hold_up_the_next_hop(scripted, receiver):
    def serve(server, conn, head, body):
        location = receiver.url("/ok/after-stall")
        server.send(
            conn,
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n"
            "Content-Encoding: gzip\r\nContent-Length: 5000000\r\n\r\n".encode()
            + GZIP_ZEROS,
        )
        server.stopping.wait(5)  # and never the rest: a stalled body is what is tested

    server = scripted(serve)
    result, took = timed(lambda: call(server.url("/"), seconds=4))
    assert result.status_code == 200, result
    assert took < 2


def test_small_redirect_bodies_keep_the_connection_alive():
    receiver = Receiver().start()
    try:
        client = http_client.make_session(allow_private=True)
        for i in range(3):
            assert call(receiver.url(f"/redirect/302?{i}"), client=client).status_code == 200
        assert len(receiver.requests) == 6
        assert len({r.client_port for r in receiver.requests}) == 1
    finally:
        receiver.stop()


# -- redirect rules: method, body, headers across origins -------------------------------------

TASK_HEADERS = {
    "X-Api-Token": "secret",
    "Content-Type": "application/json",
    "X-AsyncQueue-Task-Id": "t1",
    "X-AsyncQueue-Retry-Count": "0",
}


@pytest.fixture
def other_origin():
    r = Receiver().start()  # same host, another port: another origin
    yield r
    r.stop()


@pytest.mark.parametrize(
    "status, method, sent_method, body_kept",
    [
        (301, "POST", "GET", False),
        (302, "POST", "GET", False),
        (303, "POST", "GET", False),
        (307, "POST", "POST", True),
        (308, "PUT", "PUT", True),
        (303, "PUT", "GET", False),
        (301, "PUT", "PUT", False),
    ],
)
def test_cross_origin_redirect_carries_only_our_headers(
    receiver, other_origin, status, method, sent_method, body_kept
):
    target = other_origin.url(f"/ok/x-{status}-{method}")
    url = receiver.url(f"/goto/{status}?{quote(target, safe='')}")
    result = call(url, method, TASK_HEADERS, '{"a": 1}')
    assert result.status_code == 200, result
    (hop,) = other_origin.calls(f"/ok/x-{status}-{method}")
    assert hop.method == sent_method
    assert "X-Api-Token" not in hop.headers
    assert hop.headers["X-AsyncQueue-Task-Id"] == "t1"
    assert hop.headers["User-Agent"] == "AsyncQueue/1.0"
    assert hop.body == (b'{"a": 1}' if body_kept else b"")
    assert ("Content-Type" in hop.headers) == body_kept


def test_same_origin_redirect_keeps_the_task_headers(receiver):
    target = receiver.url("/ok/same-origin")
    url = receiver.url(f"/goto/307?{quote(target, safe='')}")
    result = call(url, "POST", TASK_HEADERS, '{"a": 1}')
    assert result.status_code == 200, result
    (hop,) = receiver.calls("/ok/same-origin")
    assert hop.headers["X-Api-Token"] == "secret" and hop.body == b'{"a": 1}'


@pytest.mark.parametrize(
    "location",
    [
        "ftp://example.test/x",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:abc/",
        "http://[::1",
        "http://[zz::1]/",
    ],
)
def test_a_redirect_that_cannot_be_followed_is_the_result(scripted, location, caplog):
    """Its 3xx response completes the task: not retried, no traceback."""
    server = scripted(
        respond("HTTP/1.1 302 Found", [f"Location: {location}", "X-Mark: here"], b"moved")
    )
    result = call(server.url("/"))
    assert result.status_code == 302 and result.error is None and not result.internal, result
    assert result.headers["location"] == location and result.headers["x-mark"] == "here"
    assert result.body == "moved"
    assert "Traceback" not in caplog.text


# -- interim (1xx) responses ------------------------------------------------------------------


@pytest.mark.parametrize("interim", [b"102 Processing", b"103 Early Hints\r\nLink: </s.css>"])
def test_an_interim_response_is_skipped_and_the_connection_stays_in_step(scripted, interim):
    """The final response after a 1xx is the call's; the next call on the kept-alive connection
    gets its own answer, never the late one of the call before."""

    def serve(server, conn, head, body):
        if head.startswith(b"GET /first"):
            server.send(conn, b"HTTP/1.1 " + interim + b"\r\n\r\n")
            time.sleep(0.2)  # the final response comes later, in a read of its own
            server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        else:
            server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        return True

    server = scripted(serve)
    client = http_client.make_session(allow_private=True)
    first = call(server.url("/first"), client=client)
    second = call(server.url("/second"), method="POST", body="x", client=client)
    assert (first.status_code, first.body) == (200, "first"), first
    assert (second.status_code, second.body) == (200, "second"), second


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n" * 11,
        b"HTTP/1.1 103 Early Hints\r\n" + b"Link: " + b"l" * 8000 + b"\r\n" * 1 + b"\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
    ids=["eleven", "too-large-once", "switching"],
)
def test_too_many_or_too_large_interim_responses_are_malformed(scripted, interim):
    if b"Early" in interim:
        interim = interim * 9  # 72 KB of interim headers in all
    server = scripted(raw(interim + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    result = call(server.url("/"))
    assert result.error == "fetch failed: malformed response", result


def test_an_endless_stream_of_100_continue_ends_at_once(scripted):
    def serve(server, conn, head, body):
        with contextlib.suppress(OSError):
            for _ in range(2000):
                server.send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
                time.sleep(0.001)  # a stream of them, not one read's worth

    server = scripted(serve)
    result, took = timed(lambda: call(server.url("/"), seconds=20))
    assert result.error == "fetch failed: malformed response", result
    assert took < 10


def test_a_header_refused_is_named_without_its_value(receiver, caplog):
    secret = "sk_live_abcdef123456"
    result = call(receiver.url("/ok/secret"), headers={"Authorization": f" Bearer {secret}"})
    assert result.unsendable and result.error.startswith("invalid request: "), result
    assert "Authorization" in result.error and secret not in result.error
    assert secret not in caplog.text
    assert receiver.calls("/ok/secret") == []


# -- name resolution shared fairly ------------------------------------------------------------


def test_hung_lookups_of_one_name_do_not_delay_another_names(receiver, resolver):
    resolver.add("hung.test", "127.0.0.1", delay=30)  # (released at the test's end)
    resolver.add("quick.test", "127.0.0.1")
    port = receiver.port
    hung = [
        threading.Thread(target=call, args=(f"http://hung.test:{port}/ok/h{i}",), daemon=True)
        for i in range(40)  # far more than there are resolver threads
    ]
    for thread in hung:
        thread.start()
    wait_for(
        lambda: attempts_waiting_for(resolver.pool, "hung.test", port) == len(hung),
        timeout=10,
        message="every hung call to wait for its lookup",
    )
    result = call(f"http://quick.test:{port}/ok/quick", seconds=10)
    assert result.status_code == 200, result
    assert resolver.lookups.count("hung.test") == 1  # one lookup, shared by all 40 calls
    resolver.release()
    for thread in hung:
        thread.join(10)


def test_a_failed_lookup_is_remembered_briefly(monkeypatch):
    lookups = []

    def failing(host, port, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    pool = http_client.LookupPool(lookup=failing)
    monkeypatch.setattr(http_client, "RESOLVER", pool)
    try:
        first = call("http://nx.test:9/")
        second = call("http://nx.test:9/")
    finally:
        pool.close()
    assert first.error == second.error == "fetch failed: ENOTFOUND"
    assert lookups == ["nx.test"]


def test_a_host_written_in_fullwidth_is_called_as_the_api_read_it(receiver):
    # The API reads `１２７。0。0。1` as 127.0.0.1 (as browsers do); the call must go there too,
    # not fail to encode the host.
    session = http_client.make_session(allow_private=True)
    url = receiver.url("/ok/fullwidth").replace("127.0.0.1", "１２７。0。0。1")
    result = perform_attempt(session, CallSpec("GET", url, {}, None), Deadline.after(5), 1024)
    assert result.status_code == 200, result.error
    (seen,) = receiver.calls("/ok/fullwidth")
    assert seen.headers["Host"].startswith("127.0.0.1:")
