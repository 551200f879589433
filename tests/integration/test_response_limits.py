"""What a response may send besides its body, against scripted servers on 127.0.0.1: its head
(interim responses included) and a chunked body's trailers and chunk extensions are bounded in
total, and a response past a bound is a malformed response, found as soon as the bound is
passed rather than read until the attempt's deadline."""

import contextlib
import time

import pytest

from asyncqueue.worker import http_client
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import perform_attempt
from tests.support.raw_http import ScriptedServer

MALFORMED = "fetch failed: malformed response"
HEAD = http_client.MAX_RESPONSE_HEAD_BYTES
TRAILER_BYTES = http_client.MAX_RESPONSE_TRAILER_BYTES
EXTENSION_BYTES = http_client.MAX_CHUNK_EXTENSION_BYTES


@pytest.fixture
def scripted():
    servers = []

    def start(serve):
        server = ScriptedServer(serve).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def call(url, seconds=5.0):
    client = http_client.make_session(allow_private=True)
    try:
        spec = CallSpec("GET", url, {}, None)
        return perform_attempt(client, spec, Deadline.after(seconds), 65536)
    finally:
        client.close()


def then_trickle(data: bytes, seconds: float = 15.0):
    """Send `data`, then one byte of body a second until the client leaves (or `seconds`)."""

    def serve(server, conn, head, body):
        server.send(conn, data)
        end = time.monotonic() + seconds
        with contextlib.suppress(OSError):
            while time.monotonic() < end:
                server.send(conn, b"x")
                time.sleep(1)  # the trickle under test

    return serve


def endless(data: bytes, repeated: bytes, seconds: float = 15.0):
    """Send `data`, then `repeated` over and over until the client leaves (or `seconds`)."""

    def serve(server, conn, head, body):
        server.send(conn, data)
        end = time.monotonic() + seconds
        with contextlib.suppress(OSError):
            while time.monotonic() < end:
                server.send(conn, repeated)

    return serve


def headers(count: int, size: int) -> bytes:
    return b"".join(b"X-H-%d: " % i + b"h" * size + b"\r\n" for i in range(count))


def fits(n: int, per: int) -> int:
    """How many header lines of `per` value bytes fit in n bytes."""
    return n // (per + 10)


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_header_block_past_its_total_is_malformed_at_once(scripted):
    # Each line under http.client's 64 KiB, fewer than its 100 lines: only a total stops it.
    block = b"HTTP/1.1 200 OK\r\n" + headers(98, 65000) + b"Content-Length: 100\r\n\r\n"
    server = scripted(then_trickle(block))
    result = call(server.url("/"), seconds=10)
    assert result.error == MALFORMED and not result.timed_out, result


@pytest.mark.parametrize(
    "head, error",
    [
        # Under the bound: read whole.
        (b"HTTP/1.1 200 OK\r\n" + headers(fits(HEAD - 200, 1000), 1000), None),
        (b"HTTP/1.1 200 OK\r\n" + headers(fits(HEAD + 1000, 1000), 1000), MALFORMED),
        # Interim responses count toward the same total.
        (
            b"HTTP/1.1 103 Early Hints\r\n"
            + headers(fits(HEAD // 2 + 1000, 1000), 1000)
            + b"\r\nHTTP/1.1 200 OK\r\n"
            + headers(fits(HEAD // 2 + 1000, 1000), 1000),
            MALFORMED,
        ),
        (
            b"HTTP/1.1 103 Early Hints\r\n"
            + headers(fits(HEAD // 4, 1000), 1000)
            + b"\r\nHTTP/1.1 200 OK\r\n"
            + headers(fits(HEAD // 4, 1000), 1000),
            None,
        ),
    ],
    ids=["under", "over", "interim-and-final-over", "interim-and-final-under"],
)
def test_the_head_is_bounded_in_total_interim_responses_included(scripted, head, error):
    server = scripted(endless(head + b"Content-Length: 2\r\n\r\nok", b"", seconds=0))
    result = call(server.url("/"))
    assert result.error == error, result
    assert (result.status_code, result.body) == ((None, None) if error else (200, "ok"))


@pytest.mark.parametrize(
    "trailers, error",
    [
        (b"X-T: 1\r\nX-U: 2\r\n", None),
        (b"X-T: 1\r\n" * http_client.MAX_RESPONSE_TRAILERS, None),
        (b"X-T: 1\r\n" * (http_client.MAX_RESPONSE_TRAILERS + 1), MALFORMED),
        ((b"X-T: " + b"t" * 1000 + b"\r\n") * (TRAILER_BYTES // 1000 - 2), None),
        ((b"X-T: " + b"t" * 30000 + b"\r\n") * 3, MALFORMED),
    ],
    ids=["few", "at-count", "over-count", "at-bytes", "over-bytes"],
)
def test_trailers_are_bounded_in_count_and_total(scripted, trailers, error):
    data = CHUNKED + b"2\r\nok\r\n0\r\n" + trailers + b"\r\n"
    server = scripted(endless(data, b"", seconds=0))
    result = call(server.url("/"))
    assert result.error == error, result
    assert result.body == (None if error else "ok")


def test_endless_trailers_are_malformed_at_once(scripted):
    server = scripted(endless(CHUNKED + b"2\r\nok\r\n0\r\n", b"X-Trailer: t\r\n" * 1000))
    result = call(server.url("/"), seconds=10)
    assert result.error == MALFORMED and not result.timed_out, result


@pytest.mark.parametrize(
    "chunks, error",
    [
        (b"2;name=value\r\nok\r\n", None),
        (b"2;e=" + b"v" * (EXTENSION_BYTES // 2) + b"\r\nok\r\n", None),
        ((b"1;e=" + b"v" * (EXTENSION_BYTES // 2) + b"\r\no\r\n") * 3, MALFORMED),
        ((b"1" + b" " * 60000 + b"\r\no\r\n") * 3, MALFORMED),  # padding counts as well
    ],
    ids=["small", "under", "over", "padding"],
)
def test_chunk_extensions_are_bounded_in_total(scripted, chunks, error):
    server = scripted(endless(CHUNKED + chunks + b"0\r\n\r\n", b"", seconds=0))
    result = call(server.url("/"))
    assert result.error == error, result


def test_endless_chunk_extensions_are_malformed_at_once(scripted):
    chunk = b"1;e=" + b"v" * 60000 + b"\r\nx\r\n"
    server = scripted(endless(CHUNKED, chunk))
    result = call(server.url("/"), seconds=10)
    assert result.error == MALFORMED and not result.timed_out, result


@pytest.mark.parametrize(
    "chunks, error",
    [
        (b"10\r\n" + b"x" * 16 + b"\r\n", None),  # the kept body in 16-byte chunks fits
        (b"1\r\nx\r\n", MALFORMED),  # in 1-byte chunks it would cost a core to parse
    ],
    ids=["16-byte chunks", "1-byte chunks"],
)
def test_a_body_in_too_many_chunks_is_malformed(scripted, chunks, error):
    body = chunks * (http_client.MAX_RESPONSE_CHUNKS - 1) + b"0\r\n\r\n"
    if error:
        body = chunks * (http_client.MAX_RESPONSE_CHUNKS + 1) + b"0\r\n\r\n"
    server = scripted(endless(CHUNKED + body, b"", seconds=0))
    result = call(server.url("/"), seconds=10)
    assert result.error == error and not result.timed_out, result
