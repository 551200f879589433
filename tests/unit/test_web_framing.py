"""Where a request ends, as the web worker's event loop sees its bytes arrive (a table)."""

import selectors
import socket
from concurrent.futures import Future

import pytest

from asyncqueue.web import worker as web_worker
from asyncqueue.web.framing import (
    COMPLETE,
    EXTENSIONS_TOO_LARGE,
    HAND_OVER,
    HEAD_TOO_LARGE,
    MORE,
    UNREADABLE,
    RequestFraming,
)
from asyncqueue.web.worker import READ_ON, BufferingThreadWorker

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
CHUNKED = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def feed_all(pieces, max_head=1024, max_body=100):
    framing = RequestFraming(max_head, max_body)
    return [framing.feed(p) for p in pieces], framing


@pytest.mark.parametrize(
    "pieces, outcomes",
    [
        ([GET], [COMPLETE]),
        ([GET[:10], GET[10:-2], GET[-2:]], [MORE, MORE, COMPLETE]),
        ([GET[:-1], GET[-1:]], [MORE, COMPLETE]),  # the blank line split across reads
        ([POST, b"ab", b"cde"], [MORE, MORE, COMPLETE]),
        ([POST + b"abcde"], [COMPLETE]),
        ([CHUNKED, b"3\r\nabc\r\n", b"0\r\n\r\n"], [MORE, MORE, COMPLETE]),
        ([CHUNKED + b"3;ext=1\r\nab", b"c\r\n0\r\nX-T: 1\r\n", b"\r\n"], [MORE, MORE, COMPLETE]),
        ([CHUNKED + b"zz\r\n"], [UNREADABLE]),  # answered 400 by the worker
        ([b"GET / HTTP/1.1\r\nX: " + b"a" * 2000], [HEAD_TOO_LARGE]),
        ([CHUNKED + b"1;" + b"e" * 5000], [EXTENSIONS_TOO_LARGE]),
        (
            [b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
            [HAND_OVER],
        ),
        (
            [b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"],
            [HAND_OVER],
        ),
        ([b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"], [HAND_OVER]),
        ([b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"], [HAND_OVER]),
    ],
)
def test_requests_are_complete_when_their_framing_says_so(pieces, outcomes):
    assert feed_all(pieces)[0] == outcomes


def test_a_declared_body_over_the_limit_is_handed_over_at_once():
    outcomes, framing = feed_all([b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"])
    assert outcomes == [HAND_OVER] and framing.over_limit


def test_a_chunked_body_over_the_limit_is_handed_over_as_soon_as_a_size_says_so():
    big = b"%x\r\n" % 300
    outcomes, framing = feed_all([CHUNKED + big[:-1], big[-1:]])
    assert outcomes == [MORE, HAND_OVER] and framing.over_limit
    outcomes, framing = feed_all([CHUNKED] + [b"a\r\n" + b"y" * 10 + b"\r\n"] * 11)
    assert outcomes == [MORE] * 11 + [HAND_OVER] and framing.over_limit


@pytest.mark.parametrize(
    "length, outcome, over_limit",
    [
        (b"00000000000000000001", MORE, False),  # leading zeros do not count (gunicorn's int)
        (b"0000000000000000000000000000100", MORE, False),
        (b"00000000000000000000", COMPLETE, False),
        (b"0000000000000000000101", HAND_OVER, True),
        (b"1000000000000000000", HAND_OVER, True),  # 19 digits: valid, and over the limit
        (b"99999999999999999999999", HAND_OVER, True),
        (b"+1", HAND_OVER, False),  # gunicorn refuses these
        (b"1_0", HAND_OVER, False),
        (b"\xb2", HAND_OVER, False),
    ],
)
def test_content_length_is_read_as_gunicorn_reads_it(length, outcome, over_limit):
    outcomes, framing = feed_all([b"POST / HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n"])
    assert (outcomes, framing.over_limit) == ([outcome], over_limit)


@pytest.mark.parametrize(
    "size_line, outcome, over_limit",
    [
        (b"00000000000000000000003", MORE, False),  # over 16 digits, zeros first: gunicorn's 3
        (b"0000000000000000000000000", MORE, False),  # (the last chunk: trailers follow)
        (b"00000000000000000000065", HAND_OVER, True),
        (b"10000000000000000", HAND_OVER, True),  # 17 digits: over any limit
        (b"aB", HAND_OVER, True),
        (b"3 ;e=1", MORE, False),  # blanks before extensions
        (b"0x3", UNREADABLE, False),  # int(..., 16) reads these; gunicorn does not
        (b"+3", UNREADABLE, False),
        (b"-3", UNREADABLE, False),
        (b"1_0", UNREADABLE, False),
        (b" 3", UNREADABLE, False),
        (b"3 ", UNREADABLE, False),
        (b"", UNREADABLE, False),
        (b"g", UNREADABLE, False),
    ],
)
def test_chunk_sizes_are_read_as_gunicorn_reads_them(size_line, outcome, over_limit):
    outcomes, framing = feed_all([CHUNKED + size_line + b"\r\n"])
    assert (outcomes, framing.over_limit) == ([outcome], over_limit)


def test_expect_100_continue_is_noticed_for_http_1_1_only():
    head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    assert feed_all([head])[1].expects_continue
    assert not feed_all([head.replace(b"HTTP/1.1", b"HTTP/1.0")])[1].expects_continue


def test_a_pipelined_second_request_stays_in_the_buffer():
    outcomes, framing = feed_all([GET + GET[:5]])
    assert outcomes == [COMPLETE] and bytes(framing.data) == GET + GET[:5]


class _Conn:
    def __init__(self, sock):
        self.sock, self.closed = sock, False
        self.framing = RequestFraming(64 * 1024, 1024 * 1024)
        self.waiting_since = None

    def close(self):
        self.closed = True
        self.sock.close()


def _parking_worker():
    """The event-loop side of BufferingThreadWorker, without gunicorn's process around it."""
    worker = BufferingThreadWorker.__new__(BufferingThreadWorker)
    worker.reading, worker.held_bytes, worker.nr_conns = {}, 0, 10
    worker.alive, worker.header_timeout, worker.body_timeout = True, 5.0, 5.0
    worker.poller = selectors.DefaultSelector()
    worker._accepting, worker.keepalived_conns = True, []
    worker.messages = {503: "Server busy", 408: "late"}
    return worker


def _park(worker, conn, data: bytes):
    conn.framing.feed(data)
    done = Future()
    done.set_result(READ_ON)
    worker.finish_request(conn, done)


def test_partial_requests_past_the_buffer_cap_evict_the_oldest_with_a_503(monkeypatch):
    monkeypatch.setattr(web_worker, "MAX_BUFFERED_BYTES", 2000)
    worker = _parking_worker()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        head = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        first, second, third = (_Conn(ours) for ours, _ in pairs)
        _park(worker, first, head)
        _park(worker, second, head)
        assert worker.held_bytes == first.framing.allocated + second.framing.allocated
        pairs[0][1].sendall(b"x" * 1800)  # the oldest grows past the cap: it is the one to go
        worker._on_readable(first, None)
        assert first.closed and not second.closed
        answer = pairs[0][1].recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in answer
        assert answer.endswith(b'{"error": "Server busy"}')
        assert worker.held_bytes == second.framing.allocated  # its bytes given back
        pairs[1][1].sendall(b"x" * 1500)  # now there is room for the second's
        worker._on_readable(second, None)
        assert not second.closed and worker.held_bytes == second.framing.allocated > 1500
        _park(worker, third, head + b"x" * 400)  # a newer request needs room: the oldest goes
        assert second.closed and pairs[1][1].recv(4096).startswith(b"HTTP/1.1 503 ")
        assert not third.closed and worker.held_bytes == third.framing.allocated
    finally:
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.parametrize(
    "pieces",
    [[b"x" * 65536] * 24, [b"x"] * 3000, [b"x" * 100, b"x" * 70_000, b"x" * 5] * 20],
)
def test_the_buffer_allocates_no_more_than_its_bound_says(pieces):
    framing = RequestFraming(64 * 1024, 2 * 1024 * 1024)
    framing.feed(POST.replace(b"5", b"9" * 7))
    for piece in pieces:
        bound = framing.allocation_after(len(piece))
        framing.feed(piece)
        assert len(framing.data) < framing.allocated <= bound
