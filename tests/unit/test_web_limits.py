"""What the web process buffers before the app, and which connection a full process sheds:
the limits as tables, then the worker's event-loop side on real sockets (no gunicorn around it)."""

import errno
import os
import resource
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from functools import partial

import pytest
from gunicorn.http.message import MAX_REQUEST_LINE

from asyncqueue.web import worker as web_worker
from asyncqueue.web.framing import (
    COMPLETE,
    EXTENSIONS_TOO_LARGE,
    FRAMING_TOO_LARGE,
    HEAD_TOO_LARGE,
    MAX_CHUNK_EXTENSIONS,
    MAX_CHUNK_LINE,
    MAX_CHUNK_OVERHEAD,
    MAX_HEAD,
    MAX_REQUEST_BYTES,
    MAX_TRAILER_BYTES,
    MAX_TRAILER_FIELDS,
    MORE,
    REFUSALS,
    TRAILERS_TOO_LARGE,
    RequestFraming,
)
from asyncqueue.web.worker import (
    READ_ON,
    SPARE_FDS,
    BufferingThreadWorker,
    accepting_wanted,
    connection_to_shed,
    connections_that_fit,
)

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


def test_the_longest_request_line_gunicorn_accepts_fits_the_head_limit():
    line = b"GET /" + b"a" * (MAX_REQUEST_LINE - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\n"
    assert len(line) == MAX_REQUEST_LINE + 2
    headers = b"X: " + b"h" * (MAX_HEAD - len(line) - 7) + b"\r\n\r\n"
    assert RequestFraming().feed(line + headers) == COMPLETE  # MAX_HEAD bytes exactly


@pytest.mark.parametrize(
    "stream",
    [
        endless(size_line(60_000)),  # each size line under the head limit
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


@pytest.mark.parametrize(
    "wanted, fd_limit, fits",
    [
        (1000, None, 1000),  # no limit
        (1000, 1000 + SPARE_FDS, 1000),
        (1000, 1_048_576, 1000),
        (1000, 1000 + SPARE_FDS - 1, 999),  # one short: one connection fewer
        (1000, 512, 512 - SPARE_FDS),
        (1000, SPARE_FDS, 1),  # still serves
    ],
)
def test_a_process_holds_the_connections_its_descriptor_limit_fits(wanted, fd_limit, fits):
    assert connections_that_fit(wanted, fd_limit) == fits


@pytest.mark.parametrize(
    "asked, alive, can_shed, nr_conns, out_of_fds_at, accepting",
    [
        (True, True, False, 5, None, True),  # below worker_connections
        (False, True, False, 10, None, False),  # full, every connection with a thread
        (False, True, True, 10, None, True),  # full, one to shed
        (False, False, True, 10, None, False),  # stopping
        (True, True, False, 5, 5, False),  # out of descriptors, none closed since
        (True, True, False, 6, 5, False),
        (True, True, False, 4, 5, True),  # one closed since
        (True, True, True, 5, 5, True),  # out of descriptors, but one to shed frees one
    ],
)
def test_when_a_process_accepts(asked, alive, can_shed, nr_conns, out_of_fds_at, accepting):
    assert accepting_wanted(asked, alive, can_shed, nr_conns, out_of_fds_at) == accepting


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
    worker.cfg = type("Cfg", (), {"keepalive": 5, "is_ssl": False, "threads": 4})()
    worker.out_of_fds_at, worker.max_keepalived = None, connections - 4
    return worker


def _listening(worker):
    """A listener the worker accepts on, registered with its poller as gthread's loop does."""
    listener = socket.create_server(("127.0.0.1", 0))
    worker.sockets, worker._accepting = [listener], False
    worker.set_accept_enabled(True)
    return listener


def _keep_alive(worker, conn):
    """What gthread does with a connection after a keep-alive response: it waits, idle."""
    conn.timeout = time.monotonic() + worker.cfg.keepalive
    worker.keepalived_conns.append(conn)
    callback = partial(worker.on_client_socket_readable, conn)
    worker.poller.register(conn.sock, selectors.EVENT_READ, callback)


def _dispatch_listener_first(worker, listener, ready: int):
    """One batch of events as gthread's loop handles it, once `ready` sockets are readable,
    with the listener's event first."""
    deadline = time.monotonic() + 5
    while len(events := worker.poller.select(timeout=0.1)) < ready:
        assert time.monotonic() < deadline, events
    events.sort(key=lambda event: event[0].fileobj is not listener)
    assert events[0][0].fileobj is listener
    for key, _ in events:
        key.data(key.fileobj)


def _loop(worker, rounds: int) -> int:
    """`rounds` turns of gthread's run loop (a short wait each); how many events it handled."""
    handled = 0
    for _ in range(rounds):
        can_accept = worker.nr_conns < worker.worker_connections
        if can_accept != worker._accepting:
            worker.set_accept_enabled(can_accept)
        for key, _ in worker.poller.select(timeout=0.01):
            handled += 1
            key.data(key.fileobj)
    return handled


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
        # The flood may not have begun, or the thread may read faster than it arrives: read
        # again once more has arrived, as the event loop would.
        deadline = time.monotonic() + 10
        while (verdict := worker._read_what_is_there(conn)) is READ_ON:
            assert time.monotonic() < deadline, len(conn.framing.data)
            select.select([ours], [], [], 1)
        assert verdict is False  # refused: the connection is closed
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
        assert worker.held_bytes == conn.held >= len(head) + 5  # ...and still counted
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
        assert worker.held_bytes == conns[2].framing.allocated

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


def test_a_connection_shed_while_its_request_arrives_is_closed_once():
    worker = _worker(connections=2)
    listener = _listening(worker)
    pairs = [socket.socketpair() for _ in range(2)]
    conns = [_Conn(ours) for ours, _ in pairs]
    try:
        for conn in conns:
            worker.nr_conns += 1
            _park(worker, conn, b"GET / HTTP/1.1\r\n")
        pairs[0][1].sendall(b"Host: x\r\n")  # the oldest sends more as the process fills
        newcomer = socket.create_connection(listener.getsockname())
        _dispatch_listener_first(worker, listener, ready=2)
        assert conns[0].closed and not conns[1].closed
        assert worker.tpool.submitted[-1].client == newcomer.getsockname()
        assert worker.nr_conns == 2  # the newcomer and the other one; none counted twice
        assert worker.held_bytes == conns[1].framing.allocated
        newcomer.close()
    finally:
        _close(listener, pairs)


def test_an_idle_connection_shed_as_its_next_request_arrives_is_closed_and_the_loop_goes_on():
    worker = _worker(connections=2)
    listener = _listening(worker)
    pairs = [socket.socketpair() for _ in range(2)]
    idle, arriving = _Conn(pairs[0][0]), _Conn(pairs[1][0])
    try:
        worker.nr_conns = 2
        _keep_alive(worker, idle)
        _park(worker, arriving, b"G")
        pairs[0][1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        newcomer = socket.create_connection(listener.getsockname())
        _dispatch_listener_first(worker, listener, ready=2)  # (raised out of the loop before)
        assert idle.closed and not arriving.closed and not worker.keepalived_conns
        assert [c.client for c in worker.tpool.submitted] == [newcomer.getsockname()]
        assert worker.nr_conns == 2
        newcomer.close()
    finally:
        _close(listener, pairs)


def _close(listener, pairs) -> None:
    listener.close()
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


def _fill_descriptors() -> list[int]:
    """Take every descriptor this process may still open, its soft limit lowered to just above
    the highest in use (the caller restores it)."""
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(highest + 8, soft), hard))
    taken = []
    try:
        while len(taken) < 10_000:
            taken.append(os.dup(0))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    return taken


def test_out_of_descriptors_with_none_to_shed_accepting_waits_for_a_connection_to_close():
    worker = _worker(connections=10)
    listener = _listening(worker)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    first = socket.create_connection(listener.getsockname())
    second = socket.create_connection(listener.getsockname())
    taken = []
    try:
        worker.accept(listener)  # with a thread: nothing to shed
        assert worker.nr_conns == 1
        taken = _fill_descriptors()
        worker.accept(listener)  # out of descriptors
        assert worker.nr_conns == 1 and not worker._accepting
        # The second client still waits to be accepted; the loop must not keep trying.
        assert _loop(worker, rounds=20) == 0 and not worker._accepting
        os.close(taken.pop())
        assert _loop(worker, rounds=20) == 0  # a descriptor, but no connection closed yet
        done = Future()
        done.set_result(False)
        worker.finish_request(worker.tpool.submitted[0], done)  # served; closed
        assert worker.nr_conns == 0
        deadline = time.monotonic() + 5
        while worker.nr_conns == 0:
            assert time.monotonic() < deadline
            _loop(worker, rounds=1)
        assert worker.nr_conns == 1 and worker._accepting  # the second client, at last
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)
        for s in (listener, first, second):
            s.close()
        for conn in worker.tpool.submitted:
            conn.sock.close()


FIT_TO_LOW_LIMIT = """
import resource, sys
from asyncqueue.web.worker import BufferingThreadWorker
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 400))  # the hard limit, lowered for good
warnings = []
worker = BufferingThreadWorker.__new__(BufferingThreadWorker)
worker.worker_connections, worker.max_keepalived = 1000, 996
worker.cfg = type("Cfg", (), {"threads": 4})()
worker.log = type("Log", (), {"warning": lambda self, *a: warnings.append(a[0] % a[1:])})()
worker._fit_connections_to_fds()
soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
print(soft, worker.worker_connections, worker.max_keepalived, len(warnings))
print(*warnings)
"""


def test_a_descriptor_limit_too_low_for_the_connections_lowers_them_and_says_so():
    done = subprocess.run(
        [sys.executable, "-c", FIT_TO_LOW_LIMIT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    figures, warning = done.stdout.splitlines()
    assert figures.split() == ["400", str(400 - SPARE_FDS), str(400 - SPARE_FDS - 4), "1"]
    assert "descriptor limit (400)" in warning and "not the 1000 asked" in warning


A, B, C, NEW = "a", "b", "c", "new"


@pytest.mark.parametrize(
    "held, incoming, waiting, requester, evicted",
    [
        (50, 50, [(A, 50)], NEW, []),  # fits
        (100, 1, [(A, 60), (B, 40)], NEW, [A]),  # the oldest goes first
        (100, 70, [(A, 60), (B, 40)], NEW, [A, B]),  # as many as it takes
        (100, 1, [(A, 0), (B, 40), (C, 60)], NEW, [B]),  # one holding nothing frees nothing
        (100, 1, [(A, 60), (NEW, 40)], NEW, [A]),  # older than the requester: evicted
        (100, 1, [(NEW, 60), (A, 40)], NEW, None),  # the requester is the oldest: refused
        (100, 20, [(A, 10), (NEW, 50), (B, 40)], NEW, None),  # (the older one is not enough)
        (100, 1, [], NEW, None),  # all with threads: the requester is refused
        (100, 41, [(A, 40)], NEW, None),  # evicting every one would not make room
    ],
)
def test_which_requests_a_full_process_evicts(held, incoming, waiting, requester, evicted):
    assert web_worker.to_evict(held, incoming, 100, iter(waiting), requester) == evicted


def test_a_request_arriving_in_two_pieces_into_a_full_process_evicts_the_oldest(monkeypatch):
    """Partial bodies fill the process's byte cap; a request whose body follows its head is
    still served, the partial body that has waited longest answered 503 and closed instead."""
    monkeypatch.setattr(web_worker, "MAX_BUFFERED_BYTES", 4 * 1024 * 1024)
    worker = _worker(connections=100)
    pairs, filling = [], []
    head = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
    try:
        for _ in range(4):  # each holds ~1 MiB, the body never finished: the cap is full
            pairs.append(socket.socketpair())
            conn = _Conn(pairs[-1][0])
            filling.append(conn)
            worker.nr_conns += 1
            _park(worker, conn, head + b"x" * (1024 * 1024 - 64))
        assert all(not c.closed for c in filling)
        pairs.append(socket.socketpair())
        legit = _Conn(pairs[-1][0])
        worker.nr_conns += 1
        legit_head = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
        _park(worker, legit, legit_head)
        pairs[-1][1].sendall(b"{}")
        worker._on_readable(legit, None)
        assert worker.tpool.submitted == [legit] and not legit.closed  # whole: to a thread
        assert filling[0].closed and not any(c.closed for c in filling[1:])
        answer = _answer(pairs[0][1])
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
        assert worker.held_bytes <= web_worker.MAX_BUFFERED_BYTES
        assert worker.held_bytes == sum(c.held for c in filling[1:] + [legit])
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def _chunked_request(body: bytes, size: int, trailer: bytes = b"") -> bytes:
    chunks = b"".join(
        b"%x\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    )
    return CHUNKED + chunks + b"0\r\n" + trailer + b"\r\n"


def test_gunicorn_parses_a_buffered_request_of_small_chunks_in_linear_time():
    """The whole request is buffered; gunicorn's parser gets it a socket read at a time, reads
    the body (and its trailer) as sent, and the pipelined request after it stays for gthread."""
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser

    body = bytes(range(256)) * 4096  # 1 MiB
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    ours, theirs = socket.socketpair()
    try:
        parser = RequestParser(Config(), ours, ("127.0.0.1", 1))
        unreader = parser.unreader = web_worker.BufferedUnreader(ours, 5.0)
        unreader.load(bytearray(_chunked_request(body, 32, b"X-T: 1\r\n") + pipelined))
        started = time.process_time()
        request = next(parser)
        assert request.body.read() == body and request.trailers == [("X-T", "1")]
        assert time.process_time() - started < 2  # (quadratic, it took tens of seconds)
        unreader.settle(keep=True)
        assert unreader.buf.getvalue() == pipelined  # where gthread looks for it
        assert next(parser).path == "/healthz"
    finally:
        ours.close()
        theirs.close()


def test_an_unread_body_of_small_chunks_is_drained_cheaply_and_the_connection_closed():
    """The app answered without reading the body (a 401): gunicorn drains at most 64 KiB of it
    before the next request, then closes."""
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser

    ours, theirs = socket.socketpair()
    try:
        parser = RequestParser(Config(), ours, ("127.0.0.1", 1))
        unreader = parser.unreader = web_worker.BufferedUnreader(ours, 5.0)
        unreader.load(bytearray(_chunked_request(b" " * (1024 * 1024), 32)))
        next(parser)
        started = time.process_time()
        assert parser.finish_body(deadline=time.monotonic() + 30) is False  # closed after
        assert time.process_time() - started < 1
    finally:
        ours.close()
        theirs.close()
