"""What the web process buffers before the app, and which connection a full process sheds:
the limits as tables, then the worker's event-loop side on real sockets (no gunicorn around it)."""

import selectors
import socket
import threading
from collections import deque
from concurrent.futures import Future

import pytest

from asyncqueue import web_worker
from asyncqueue.request_framing import (
    COMPLETE,
    EXTENSIONS_TOO_LARGE,
    FRAMING_TOO_LARGE,
    HEAD_TOO_LARGE,
    MAX_CHUNK_EXTENSIONS,
    MAX_CHUNK_LINE,
    MAX_CHUNK_OVERHEAD,
    MAX_REQUEST_BYTES,
    MAX_TRAILER_BYTES,
    MAX_TRAILER_FIELDS,
    MORE,
    REFUSALS,
    TRAILERS_TOO_LARGE,
    RequestFraming,
)
from asyncqueue.web_worker import READ_ON, BufferingThreadWorker, connection_to_shed

CHUNKED = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
END = b"0\r\n\r\n"


def size_line(extension_bytes: int) -> bytes:
    """A 1-byte chunk whose size line carries that many bytes of extension after the `;`."""
    return b"1;" + b"e" * extension_bytes + b"\r\na\r\n"


def trailers(count: int, each: int, end: bytes = b"\r\n") -> bytes:
    """`count` trailer lines of `each` bytes (line end included), then `end`."""
    line = b"X-T: " + b"t" * (each - 7) + b"\r\n"
    assert len(line) == each
    return b"0\r\n" + line * count + end


@pytest.mark.parametrize(
    "body, outcome",
    [
        (size_line(MAX_CHUNK_LINE - 2) + END, COMPLETE),  # "1;" + extension: the whole line
        (size_line(MAX_CHUNK_LINE - 1) + END, EXTENSIONS_TOO_LARGE),
        (size_line(4000) * 4 + size_line(MAX_CHUNK_EXTENSIONS - 16000) + END, COMPLETE),
        (size_line(4000) * 4 + size_line(MAX_CHUNK_EXTENSIONS - 16000 + 1), EXTENSIONS_TOO_LARGE),
        (trailers(MAX_TRAILER_FIELDS, 100), COMPLETE),
        (trailers(MAX_TRAILER_FIELDS + 1, 100), TRAILERS_TOO_LARGE),
        (trailers(8, MAX_TRAILER_BYTES // 8), COMPLETE),
        (trailers(8, MAX_TRAILER_BYTES // 8, b"X"), TRAILERS_TOO_LARGE),  # a 9th line begins
        (b"1\r\na\r\n" * (MAX_CHUNK_OVERHEAD // 5 - 1) + END, COMPLETE),  # 5 bytes of framing each
        (b"1\r\na\r\n" * (MAX_CHUNK_OVERHEAD // 5 + 1), FRAMING_TOO_LARGE),
    ],
    ids=[
        "line-at-limit",
        "line-past-limit",
        "extensions-at-limit",
        "extensions-past-limit",
        "trailer-count-at-limit",
        "trailer-count-past-limit",
        "trailer-bytes-at-limit",
        "trailer-bytes-past-limit",
        "overhead-within-limit",
        "overhead-past-limit",
    ],
)
def test_chunked_framing_limits(body, outcome):
    assert RequestFraming().feed(CHUNKED + body) == outcome


def endless(piece: bytes, start: bytes = CHUNKED):
    """`start`, then `piece` over and over, in reads of up to 64 KiB as the worker makes."""
    yield start
    block = piece * max(1, 65536 // len(piece))
    while True:
        yield block


@pytest.mark.parametrize(
    "stream",
    [
        endless(size_line(60_000)),  # each size line under the head limit, as before
        endless(size_line(3_000)),  # each line within its limit: the request total stops it
        endless(b"1\r\na\r\n"),
        endless(b"X-T: 1\r\n", CHUNKED + b"0\r\n"),  # trailers without end
        endless(b"a" * 1000, b"GET / HTTP/1.1\r\nX: "),  # a head without end
        endless(b"ab", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nff;"),
    ],
    ids=["60k-extensions", "3k-extensions", "1-byte-chunks", "trailers", "head", "one-line"],
)
def test_no_stream_buffers_more_than_one_request_before_it_is_refused(stream):
    framing = RequestFraming()
    for piece in stream:
        outcome = framing.feed(piece)
        if outcome != MORE or len(framing.data) > 2 * MAX_REQUEST_BYTES:
            break
    assert outcome in REFUSALS
    assert outcome != HEAD_TOO_LARGE or framing.head_end is None
    assert len(framing.data) <= MAX_REQUEST_BYTES + 65536


@pytest.mark.parametrize(
    "idle_since, arriving_since, shed",
    [
        (None, None, None),  # every connection is with a thread: nothing to shed
        (5.0, None, "idle"),
        (None, 5.0, "arriving"),
        (4.0, 5.0, "idle"),  # the one that has waited longer
        (6.0, 5.0, "arriving"),
        (5.0, 5.0, "idle"),  # a tie: the idle one holds no request
    ],
)
def test_a_full_process_sheds_the_connection_waiting_longest(idle_since, arriving_since, shed):
    assert connection_to_shed(idle_since, arriving_since) == shed


# -- the worker's side, on real sockets -------------------------------------------------------


class _Conn:
    def __init__(self, sock):
        self.sock, self.closed, self.parser = sock, False, None
        self.client, self.is_http2 = ("127.0.0.1", 1), False

    def close(self, graceful=False):
        self.closed = True
        self.sock.close()


class _NoThreads:
    """A thread pool whose jobs never run: what was handed to a thread stays there."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, conn):
        self.submitted.append(conn)
        return Future()


def _worker(connections=10):
    worker = BufferingThreadWorker.__new__(BufferingThreadWorker)
    worker.reading, worker.held_bytes, worker.nr_conns = {}, 0, 0
    worker.alive, worker.header_timeout, worker.body_timeout = True, 5.0, 5.0
    worker.poller = selectors.DefaultSelector()
    worker.messages = {503: "Server busy", 408: "late", 400: "bad", 431: "big"}
    worker.keepalived_conns, worker._accepting = deque(), True
    worker.worker_connections, worker.sockets = connections, []
    worker.tpool = _NoThreads()
    worker.cfg = type("Cfg", (), {"keepalive": 5, "is_ssl": False})()
    return worker


def _park(worker, conn, data: bytes):
    worker._start_request(conn)
    conn.framing.feed(data)
    done = Future()
    done.set_result(READ_ON)
    worker.finish_request(conn, done)


def _answer(sock) -> bytes:
    """One response (its head and Content-Length body), or b"" if the peer closed first."""
    sock.settimeout(5)
    received = b""
    while b"\r\n\r\n" not in received or len(received) < _length(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _length(raw: bytes) -> int:
    head, _, _ = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(raw)


def test_a_thread_reads_no_more_than_one_request_from_a_fast_client():
    ours, theirs = socket.socketpair()
    sent = [0]

    def flood():  # as fast as the socket takes it, until the worker closes it (or 16 MiB)
        theirs.sendall(CHUNKED)
        piece = size_line(60_000)
        try:
            while sent[0] < 16 * 1024 * 1024:
                theirs.sendall(piece)
                sent[0] += len(piece)
        except OSError:
            pass

    flooder = threading.Thread(target=flood)
    flooder.start()
    worker, conn = _worker(), _Conn(ours)
    try:
        assert worker._read_what_is_there(conn) is False  # refused: the connection is closed
        assert len(conn.framing.data) <= MAX_REQUEST_BYTES + web_worker.RECV_SIZE
        answer = _answer(theirs)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer
        assert b'{"error": "Chunk extensions too large (limit 4096 bytes' in answer
    finally:
        ours.close()
        theirs.close()
        flooder.join(timeout=10)


def test_whole_requests_count_against_the_process_cap_until_their_thread_is_done():
    worker = _worker()
    ours, theirs = socket.socketpair()
    try:
        conn = _Conn(ours)
        worker.nr_conns = 1
        head = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
        _park(worker, conn, head)
        theirs.sendall(b"{}   ")
        worker._on_readable(conn, None)
        assert worker.tpool.submitted == [conn]  # whole: handed to a thread...
        assert worker.held_bytes == len(head) + 5  # ...and still counted
        done = Future()
        done.set_result(False)  # served; the connection is closed
        worker.finish_request(conn, done)
        assert worker.held_bytes == 0 and conn.closed
    finally:
        ours.close()
        theirs.close()


def test_a_full_worker_accepts_by_shedding_the_connection_waiting_longest():
    worker = _worker(connections=3)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    clients, conns = [], []
    try:
        for data in (b"G", b"", b"POST / HTTP/1.1\r\n"):
            ours, theirs = socket.socketpair()
            clients.append(theirs)
            conn = _Conn(ours)
            conns.append(conn)
            worker.nr_conns += 1
            _park(worker, conn, data)
        assert worker.nr_conns == worker.worker_connections
        worker.set_accept_enabled(False)  # what gthread's loop asks of a full process
        assert worker._accepting  # still accepting: there is a connection to shed

        newcomer = socket.create_connection(listener.getsockname())
        clients.append(newcomer)
        worker.accept(listener)
        assert worker.nr_conns == 3 and len(worker.tpool.submitted) == 1  # the newcomer
        assert conns[0].closed and not conns[1].closed and not conns[2].closed
        answer = _answer(clients[0])  # it had sent part of a request: told why
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
        assert worker.held_bytes == len(b"POST / HTTP/1.1\r\n")

        worker.accept(listener)  # nothing waiting to be accepted, so nothing shed... yet
        newer = socket.create_connection(listener.getsockname())
        clients.append(newer)
        worker.accept(listener)
        assert conns[1].closed and _answer(clients[1]) == b""  # it had sent nothing: closed
    finally:
        listener.close()
        for s in clients:
            s.close()
        for c in conns:
            c.sock.close()


def test_a_full_worker_whose_connections_are_all_with_threads_stops_accepting():
    worker = _worker(connections=1)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    worker.sockets = [listener]
    worker._accepting = False
    worker.set_accept_enabled(True)
    first = socket.create_connection(listener.getsockname())
    second = socket.create_connection(listener.getsockname())
    try:
        worker.accept(listener)
        assert worker.nr_conns == 1
        worker.accept(listener)  # full, and its one connection is with a thread
        assert worker.nr_conns == 1 and not worker._accepting
    finally:
        for s in (listener, first, second):
            s.close()
