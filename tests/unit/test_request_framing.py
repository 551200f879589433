"""Where a request ends, as the web worker's event loop sees its bytes arrive (a table)."""

import pytest

from asyncqueue.request_framing import (
    COMPLETE,
    HAND_OVER,
    HEAD_TOO_LARGE,
    MORE,
    UNREADABLE,
    RequestFraming,
)

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
        ([CHUNKED + b"1;" + b"e" * 2000], [UNREADABLE]),
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


def test_a_chunked_body_over_the_limit_is_handed_over_once_one_byte_past_it_is_buffered():
    big = b"%x\r\n" % 300
    outcomes, framing = feed_all([CHUNKED + big + b"x" * 100, b"x", b"x" * 199])
    assert outcomes == [MORE, HAND_OVER, HAND_OVER] and framing.over_limit
    outcomes, framing = feed_all([CHUNKED] + [b"a\r\n" + b"y" * 10 + b"\r\n"] * 11)
    assert outcomes[-1] == HAND_OVER and outcomes[:-1] == [MORE] * 11


def test_expect_100_continue_is_noticed_for_http_1_1_only():
    head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    assert feed_all([head])[1].expects_continue
    assert not feed_all([head.replace(b"HTTP/1.1", b"HTTP/1.0")])[1].expects_continue


def test_a_pipelined_second_request_stays_in_the_buffer():
    outcomes, framing = feed_all([GET + GET[:5]])
    assert outcomes == [COMPLETE] and bytes(framing.data) == GET + GET[:5]
