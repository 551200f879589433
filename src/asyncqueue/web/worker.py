"""The web process's gunicorn worker: gunicorn's threaded worker, made to resist slow clients and
to answer its own refusals in JSON.

* Whole requests first. gunicorn's `gthread` gives a connection to a thread as soon as its first
  byte arrives, and the thread then waits for the rest with no time limit: twenty connections
  that never finish their headers held every thread. Here a thread takes only what has already
  arrived, without waiting: a whole request (head and body, up to the body limit) is served as
  usual; a partial one goes back to the event loop, which reads the rest without blocking and
  hands it to a thread once whole. Slow or stalled clients cost a buffer, never a thread.
* Time limits. A partial request's head must be complete within ASYNCQUEUE_HEADER_TIMEOUT
  seconds, its body within ASYNCQUEUE_BODY_TIMEOUT seconds after the head; otherwise the
  answer is a JSON 408 and the connection is closed.
* Byte limits. One request buffers at most framing.MAX_REQUEST_BYTES (its head, body
  and chunked framing each bounded there; past a limit, a JSON 400 or 431 and the connection is
  closed). The requests one process holds before its threads are done with them take at most
  MAX_BUFFERED_BYTES together (as allocated); a request that needs room past it gets it by
  evicting the requests still arriving that have held bytes longest (JSON 503, Retry-After: 1,
  closed), or is refused so if those are not enough. A thread reads at most one request's bytes
  before handing it on, so the threads add at most that much each.
* Parsing cost. A buffered request goes to gunicorn's parser a socket read's worth at a time
  (BufferedUnreader), as from the socket itself: its chunked-body parser copies what remains of
  its current read at every chunk, which over the whole request at once would be quadratic.
* Connection limits. A process holds at most ASYNCQUEUE_WEB_CONNECTIONS connections (gunicorn's
  worker_connections). gthread stops accepting when full, so new clients, a health check
  included, queue in the kernel behind whatever holds the slots until a timeout frees one. Here a
  full process keeps accepting, and makes room by closing the connection that has waited longest
  without a whole request (an idle keep-alive one, or one whose request is still arriving; a
  JSON 503 if it had sent part of one). An idle connection keeps its slot only until the process
  fills with newer ones, so a flood of them cannot keep out a client that sends its request
  promptly. A process whose descriptor limit cannot fit its connections (plus SPARE_FDS) holds
  fewer, with a warning; one that runs out of descriptors anyway with none to shed stops
  accepting until one of its connections closes.
* JSON errors. What gunicorn refuses before Flask sees it (a malformed request line, a header
  over its size limit, a URI over its length limit) is answered `{"error": "..."}` with the
  status gunicorn chose, instead of its HTML page.

Used by asyncqueue/web/gunicorn_config.py (`worker_class`). TLS and HTTP/2 connections (not
used by our deployment) keep gthread's behaviour.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import io
import json
import resource
import selectors
import time
from functools import partial

from gunicorn import SERVER, util
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.exceptions import ClientDisconnected

from asyncqueue import domain
from asyncqueue.config import settings_or_exit
from asyncqueue.logs import new_request_id
from asyncqueue.web.framing import (
    COMPLETE,
    EXTENSIONS_TOO_LARGE,
    FRAMING_TOO_LARGE,
    HAND_OVER,
    HEAD_TOO_LARGE,
    MAX_CHUNK_EXTENSIONS,
    MAX_CHUNK_LINE,
    MAX_CHUNK_OVERHEAD,
    MAX_HEAD,
    MAX_TRAILER_BYTES,
    MAX_TRAILER_FIELDS,
    MORE,
    TRAILERS_TOO_LARGE,
    RequestFraming,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
RECV_SIZE = 64 * 1024  # (a larger recv allocates and frees an mmap each call)
READ_ON = object()  # a thread's verdict: the request is partial, the event loop reads on
# Bytes of requests one web process holds at most (as allocated), all connections together,
# from their first byte until a thread is done with them: each may buffer MAX_REQUEST_BYTES for
# up to the timeouts, and a process holds up to ASYNCQUEUE_WEB_CONNECTIONS connections. A
# request that needs room past it evicts the requests that have held bytes longest (to_evict).
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
# Allocations past this size get memory mapped on their own (glibc's M_MMAP_THRESHOLD, fixed):
# a request buffer freed is then returned at once. glibc's default threshold rises to the largest
# block freed, after which buffers that grow side by side and are freed in any order fragment
# the heap (300 bodies growing together took a process ~30 MiB past what they held).
MMAP_THRESHOLD = 128 * 1024
M_MMAP_THRESHOLD = -3  # (mallopt's parameter number, in glibc's malloc.h)
# File descriptors a process keeps besides its connections (listeners, database pool, pipes,
# logs): its soft descriptor limit is raised to fit both; where the hard limit does not allow
# it, the process holds fewer connections (connections_that_fit).
SPARE_FDS = 128

REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def error_messages(cfg, header_timeout: float, body_timeout: float) -> dict[int, str]:
    """The JSON error for each status the server (not the app) can answer with."""
    return {
        400: "Malformed HTTP request: the request line, a header or the body's framing "
        "could not be read",
        403: "Request forbidden",
        408: f"Request not received in time (headers within {header_timeout:g} s, "
        f"the body within {body_timeout:g} s after them)",
        413: f"Request body too large (limit {domain.MAX_REQUEST_BODY} bytes)",
        414: f"Request line too long (limit {cfg.limit_request_line} bytes)",
        417: "Unsupported Expect header (only 100-continue is understood)",
        431: f"Request headers too large (limit {cfg.limit_request_fields} headers of at most "
        f"{cfg.limit_request_field_size} bytes each, {MAX_HEAD} bytes in all)",
        500: "Internal server error",
        501: "Unsupported Transfer-Encoding (only chunked is understood)",
        503: "Server busy: too many requests are still arriving here; retry in a second",
    }


# What the framing's refusals are answered (the connection is then closed).
FRAMING_REFUSALS = {
    EXTENSIONS_TOO_LARGE: (
        400,
        f"Chunk extensions too large (limit {MAX_CHUNK_LINE} bytes per chunk-size line, "
        f"{MAX_CHUNK_EXTENSIONS} per request)",
    ),
    TRAILERS_TOO_LARGE: (
        400,
        f"Trailers too large (limit {MAX_TRAILER_FIELDS} fields, {MAX_TRAILER_BYTES} bytes "
        "together)",
    ),
    FRAMING_TOO_LARGE: (
        400,
        f"Chunked framing too large (limit {MAX_CHUNK_OVERHEAD} bytes of size lines, "
        "extensions, line ends and trailers per request)",
    ),
}


def connection_to_shed(idle_since: float | None, arriving_since: float | None) -> str | None:
    """Which waiting connection a full process closes to accept a new one: the one that has
    waited longer, the oldest idle keep-alive one ("idle") or the oldest whose request is
    still arriving ("arriving"); None when none waits (every one is with a thread)."""
    if idle_since is None and arriving_since is None:
        return None
    if arriving_since is None or (idle_since is not None and idle_since <= arriving_since):
        return "idle"
    return "arriving"


def to_evict(held: int, incoming: int, cap: int, waiting, requester=None) -> list | None:
    """Which requests still arriving a process evicts so that `incoming` more bytes for
    `requester` fit under `cap` with `held` held. `waiting` is (request, bytes held), oldest
    first (the requester among them, if it is waiting): the oldest go first until it fits ([]
    if it fits already). None when the requester itself would be next, or when every one would
    not make room (the rest is with threads, soon released): the requester is refused then.
    Oldest first, so that pushing a request out takes sending about a cap's worth of bytes
    while it arrives, not merely holding connections open."""
    excess = held + incoming - cap
    chosen = []
    for request, size in waiting:
        if excess <= 0:
            break
        if request is requester:
            return None
        if size > 0:
            chosen.append(request)
            excess -= size
    return chosen if excess <= 0 else None


def connections_that_fit(wanted: int, fd_limit: int | None) -> int:
    """How many connections a process can hold under its descriptor limit (None: unlimited),
    SPARE_FDS kept for the rest: `wanted`, or fewer when the limit is too low (at least 1)."""
    if fd_limit is None:
        return wanted
    return max(1, min(wanted, fd_limit - SPARE_FDS))


def accepting_wanted(
    asked: bool, alive: bool, can_shed: bool, nr_conns: int, out_of_fds_at: int | None
) -> bool:
    """Whether a process listens for new connections. gthread's loop `asked` it on below
    worker_connections and off at it; a process with a waiting connection to shed accepts
    anyway; one whose accept ran out of descriptors with nothing to shed (at `out_of_fds_at`
    connections) waits for a connection to close first, as its listener stays readable."""
    if alive and can_shed:
        return True
    if out_of_fds_at is not None and nr_conns >= out_of_fds_at:
        return False
    return asked


def json_error(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    reason = REASONS.get(status, "Error")
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    # A request id as the app's responses carry (every response has one, docs/api.md says),
    # though no app code saw this request.
    return (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{retry}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {new_request_id()}\r\n\r\n"
    ).encode("latin-1") + body


def too_large(message: str) -> bytes:
    """The 413 the app answers for a body over the limit, byte for byte (its JSON as Flask
    writes it, gunicorn's status line and headers) but for the date and request id."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    return (
        f"HTTP/1.1 413 REQUEST ENTITY TOO LARGE\r\nServer: {SERVER}\r\n"
        f"Date: {util.http_date()}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {new_request_id()}\r\n\r\n"
    ).encode("latin-1") + body


def body_left_unread(body) -> bool:
    """Whether a request's body (gunicorn's Body, the app's wsgi.input) has bytes the app did
    not read (unknown readers count so)."""
    if body is None:
        return False
    if body.buf.tell():
        return True
    reader = body.reader
    if isinstance(reader, LengthReader):
        return reader.length > 0
    if isinstance(reader, ChunkedReader):
        return reader.parser is not None
    return True


def closing_when_body_unread(app):
    """The app, its answer saying `Connection: close` when it left the request's body unread: the
    connection is then closed rather than the body drained (_keepalive_after), and a keep-alive
    client must know before it sends its next request on it. The app stays reachable as
    `__wrapped__` (inspect.unwrap), for the hooks that need the Flask app itself."""

    @functools.wraps(app, assigned=(), updated=())
    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            if body_left_unread(environ.get("wsgi.input")):
                start_response.__self__.must_close = True  # gunicorn's Response
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


def _recv_nonblocking(sock) -> bytes | None:
    """What has arrived on a non-blocking socket: None when nothing has yet, b"" when the
    client left (or the connection failed)."""
    try:
        return sock.recv(RECV_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


class BufferedUnreader(SocketUnreader):
    """gunicorn's socket unreader, serving a request buffered whole before the socket's further
    bytes, in pieces no larger than a read from the socket would give (a memoryview: no copy of
    the whole). gunicorn's chunked-body parser copies what remains of its current read at
    every chunk, so one read of the whole request would make parsing it quadratic."""

    def __init__(self, sock, timeout: float):
        super().__init__(sock)
        self.pending = memoryview(b"")
        self.timeout = timeout  # a read past the buffer waits at most this long

    def load(self, data: bytearray):
        self.pending = memoryview(data)

    def chunk(self, size_hint=None):
        if not self.pending:
            # Past the buffered request (a framing gunicorn reads otherwise than ours): never
            # wait on the socket without a bound. A timeout ends the request, 400 in the app.
            self.sock.settimeout(self.timeout)
            try:
                return super().chunk(size_hint)
            except TimeoutError:
                raise ClientDisconnected() from None
            finally:
                self.sock.settimeout(None)
        size = self.mxchunk  # as SocketUnreader.chunk sizes its recv()
        if size_hint and size_hint > size:
            size = min(size_hint, self.max_body_chunk)
        piece = bytes(self.pending[:size])
        self.pending = self.pending[size:]
        return piece

    def take_buffered(self):
        data = super().take_buffered() + self.pending
        self.pending = memoryview(b"")
        return data

    def settle(self, keep: bool):
        """After a request: what is left of the buffer (a pipelined request) joins gunicorn's
        own buffer, where gthread looks for it, if the connection is kept; else it is dropped."""
        if keep and self.pending:
            self.buf.seek(0, io.SEEK_END)
            self.buf.write(self.pending)
        self.pending = memoryview(b"")


class _Captured:
    """Stands in for the client socket while gunicorn writes an error page, to learn its
    status (gunicorn decides which status each parse error gets; we only change the body)."""

    def __init__(self):
        self.data = b""

    def gettimeout(self):
        return 0.0

    def setblocking(self, flag):
        pass

    def sendall(self, data):
        self.data += data

    def status(self) -> int:
        try:
            return int(self.data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 500


class BufferingThreadWorker(ThreadWorker):
    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = closing_when_body_unread(self.wsgi)

    def init_process(self):
        settings = settings_or_exit()  # checked already by the master: the same values
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.messages = error_messages(self.cfg, self.header_timeout, self.body_timeout)
        # Connections whose request is still arriving, oldest first: -> (deadline, since).
        self.reading: dict = {}
        self.held_bytes = 0  # bytes of the requests counted against MAX_BUFFERED_BYTES
        self.next_sweep = 0.0
        # Connections held when accept last ran out of descriptors with none to shed.
        self.out_of_fds_at: int | None = None
        self._fit_connections_to_fds()
        _fix_mmap_threshold()
        super().init_process()

    def _fit_connections_to_fds(self):
        wanted = self.worker_connections
        fd_limit = _raise_fd_limit(wanted + SPARE_FDS)
        fitting = connections_that_fit(wanted, fd_limit)
        if fitting < wanted:
            self.log.warning(
                "The descriptor limit (%d) leaves room for %d connections per process, not the "
                "%d asked (ASYNCQUEUE_WEB_CONNECTIONS, %d descriptors kept spare): holding %d",
                fd_limit,
                fitting,
                wanted,
                SPARE_FDS,
                fitting,
            )
            self.worker_connections = fitting
            self.max_keepalived = fitting - self.cfg.threads

    def _buffers(self, conn) -> bool:
        return not (
            self.cfg.is_ssl
            or conn.is_http2
            or negotiation.prior_knowledge_allowed(self.cfg, conn.client)
            or negotiation.upgrade_allowed(self.cfg, conn.client)
        )

    # -- in a thread: take what has arrived; a whole request is served, a partial one goes back
    # to the event loop. (Most requests arrive whole, so this is gthread's usual path.)

    def handle(self, conn):
        if getattr(conn, "buffered", None) is None and self._buffers(conn):
            verdict = self._read_what_is_there(conn)
            if verdict is not None:
                return verdict
        buffered = getattr(conn, "buffered", None)
        if buffered is None:
            return super().handle(conn)
        conn.buffered = None
        conn.data_ready = True  # no waiting for data in gthread's handle: it is all here
        conn.sock.setblocking(True)
        conn.init()
        unreader = conn.parser.unreader
        if not isinstance(unreader, BufferedUnreader):  # a connection's first request
            ahead = unreader.take_buffered()
            unreader = conn.parser.unreader = BufferedUnreader(conn.sock, self.body_timeout)
            unreader.unread(ahead)
        unreader.load(buffered)
        del buffered  # (the unreader's view is all that keeps it, until it is read)
        keep = False
        try:
            keep = super().handle(conn)
            return keep
        finally:
            unreader.settle(bool(keep))

    def _read_what_is_there(self, conn):
        """None when a whole request is buffered; READ_ON or False (close) otherwise."""
        if getattr(conn, "framing", None) is None:
            self._start_request(conn)
        framing = conn.framing
        # Bytes read ahead by the last request's parser (pipelining) count as received.
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        outcome = framing.feed(ahead) if ahead else MORE
        conn.sock.setblocking(False)
        while outcome == MORE:
            data = _recv_nonblocking(conn.sock)
            if data is None:
                break  # nothing more has arrived yet
            if not data:
                return False  # the client left
            outcome = framing.feed(data)
        verdict = self._settle(conn, outcome)
        if verdict is False:
            self._send(conn, self._refusal(outcome))
        return verdict

    def _start_request(self, conn):
        conn.framing = RequestFraming()
        conn.continue_sent = False
        conn.close_after = False
        conn.waiting_since = None

    def _settle(self, conn, outcome: str):
        """None: the request is whole (conn.buffered); READ_ON: wait for more; False: refuse."""
        framing = conn.framing
        if outcome == MORE:
            if framing.expects_continue and not conn.continue_sent and not framing.body_started:
                # The client waits for this before sending its body; gunicorn would send it
                # only once it parses the request, which here waits for the body.
                conn.continue_sent = True
                self._send(conn, CONTINUE)
            return READ_ON
        if outcome == HAND_OVER and framing.over_limit:
            return False  # answered 413 here: nothing past what is buffered is read
        if outcome in (COMPLETE, HAND_OVER):
            conn.buffered = framing.data  # (no longer fed: a view of it is safe)
            conn.close_after = framing.over_limit or outcome == HAND_OVER
            conn.framing = None
            return None
        return False

    def _refusal(self, outcome: str) -> bytes:
        if outcome == HAND_OVER:  # (over the body limit: the only hand-over refused here)
            return too_large(self.messages[413])
        if outcome in FRAMING_REFUSALS:
            return json_error(*FRAMING_REFUSALS[outcome])
        status = 431 if outcome == HEAD_TOO_LARGE else 400
        return json_error(status, self.messages[status])

    def _send(self, conn, data: bytes):
        with contextlib.suppress(OSError):  # a client that left needs no answer
            conn.sock.send(data)  # small, onto an idle socket: it fits its buffer

    def handle_request(self, req, conn):
        if getattr(conn, "continue_sent", False):
            req._expected_100_continue = False  # already sent
        if getattr(conn, "close_after", False):
            # Handed over unfinished (a body over the limit, or a malformed framing): the body
            # will not be read, so no 100 Continue invites it, and as the connection is closed
            # after the answer (_keepalive_after), the answer says `Connection: close`.
            req._expected_100_continue = False
            req.must_close = True
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn, keepalive):
        # A request handed over unfinished (over the body limit, or malformed) is not read to
        # its end: close rather than drain what the client may still be sending.
        if getattr(conn, "close_after", False):
            return False
        # A body the app left unread is not drained (parsing it may take many chunks): close.
        if keepalive and body_left_unread(
            getattr(getattr(conn.parser, "mesg", None), "body", None)
        ):
            return False
        return super()._keepalive_after(conn, keepalive)

    # -- in the event loop: partial requests wait here, holding no thread --------------------

    def finish_request(self, conn, fs):
        # The thread is done with the request it had: its bytes are no longer held.
        self._release(conn)
        if fs.cancelled() or fs.exception() is not None or fs.result() is not READ_ON:
            super().finish_request(conn, fs)
            self._accept_if_room()
            return
        if not self.alive:
            self._close(conn)
            return
        size = conn.framing.allocated
        if not self._make_room(conn, size):
            self._refuse_busy(conn)
            return
        head_done = conn.framing.head_end is not None
        timeout = self.body_timeout if head_done else self.header_timeout
        now = time.monotonic()
        if conn.waiting_since is None:
            conn.waiting_since = now
        self.reading[conn] = (now + timeout, conn.waiting_since)
        self._hold(conn, size)
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        self._accept_if_room()

    def _on_readable(self, conn, _sock):
        if conn not in self.reading:
            return  # closed earlier in this batch of events (shed to accept a new one)
        data = _recv_nonblocking(conn.sock)
        if data is None:
            return
        if not data:  # the client left
            self._stop_reading(conn)
            self._close(conn)
            return
        framing = conn.framing
        if not self._make_room(conn, framing.allocation_after(len(data)) - framing.allocated):
            self._stop_reading(conn)
            self._refuse_busy(conn)
            return
        had_head = framing.head_end is not None
        outcome = framing.feed(data)
        self._hold(conn, framing.allocated - getattr(conn, "held", 0))
        verdict = self._settle(conn, outcome)
        if verdict is READ_ON:
            if not had_head and framing.head_end is not None:
                self.reading[conn] = (time.monotonic() + self.body_timeout, conn.waiting_since)
            return
        self._stop_reading(conn)
        if verdict is None:
            conn.data_ready = True
            super().enqueue_req(conn)  # whole: a thread may have it now (its bytes still held)
        else:
            self._send(conn, self._refusal(outcome))
            self._close(conn)

    def _make_room(self, conn, incoming: int) -> bool:
        """Whether `incoming` more bytes for `conn` fit under MAX_BUFFERED_BYTES, once the
        requests still arriving that have held bytes longest are evicted (see to_evict)."""
        waiting = ((c, c.held) for c in self.reading)
        evicted = to_evict(self.held_bytes, incoming, MAX_BUFFERED_BYTES, waiting, conn)
        if evicted is None:
            return False
        for other in evicted:
            self._stop_reading(other)
            self._refuse_busy(other)
        return True

    def _hold(self, conn, size: int):
        conn.held = getattr(conn, "held", 0) + size
        self.held_bytes += size

    def _release(self, conn):
        self.held_bytes -= getattr(conn, "held", 0)
        conn.held = 0

    def _refuse_busy(self, conn):
        self._send(conn, json_error(503, self.messages[503]))
        self._close(conn)

    def _stop_reading(self, conn):
        if self.reading.pop(conn, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(conn.sock)

    def _close(self, conn):
        self._release(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self, force=False):
        # Called after every poll; the deadlines are seconds long, so look at most 4 times a
        # second (a thousand pending connections are then no cost on a busy loop).
        now = time.monotonic()
        if force or now >= self.next_sweep:
            self.next_sweep = now + 0.25
            self._time_out_readers(now, force)
        super().murder_keepalived(force)

    def _time_out_readers(self, now: float, force: bool):
        late = [c for c, (deadline, _) in self.reading.items() if force or deadline <= now]
        for conn in late:
            self._stop_reading(conn)
            if conn.framing.data:
                self._send(conn, json_error(408, self.messages[408]))
            self._close(conn)

    # -- a full process sheds its longest-waiting connection rather than stop accepting ------

    def set_accept_enabled(self, enabled):
        # gthread's loop turns accepting off at worker_connections; it stays on while a
        # waiting connection can make room (see accept), and off after running out of
        # descriptors until a connection closes (or else the loop would spin on the listener).
        if self.out_of_fds_at is not None and self.nr_conns < self.out_of_fds_at:
            self.out_of_fds_at = None
        can_shed = bool(self.keepalived_conns or self.reading)
        enabled = accepting_wanted(enabled, self.alive, can_shed, self.nr_conns, self.out_of_fds_at)
        super().set_accept_enabled(enabled)

    def _accept_if_room(self):
        # A connection just began to wait, so a full process that had stopped accepting has
        # one to shed again.
        if self.alive and not self._accepting:
            self.set_accept_enabled(False)  # (turned on if there is a connection to shed)

    def accept(self, listener):
        full = self.nr_conns >= self.worker_connections
        if full and not (self.keepalived_conns or self.reading):
            super().set_accept_enabled(False)  # every connection is with a thread
            return
        before = self.nr_conns
        try:
            super().accept(listener)
        except OSError as exc:
            # Out of descriptors: gthread would let this end the process.
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            if not self._shed_one():
                self.out_of_fds_at = self.nr_conns
                super().set_accept_enabled(False)
            return
        if full and self.nr_conns > before:  # (none may have been waiting after all)
            self._shed_one()

    def _shed_one(self) -> bool:
        idle = self.keepalived_conns[0] if self.keepalived_conns else None
        arriving = next(iter(self.reading), None)
        choice = connection_to_shed(
            idle.timeout - self.cfg.keepalive if idle is not None else None,
            self.reading[arriving][1] if arriving is not None else None,
        )
        if choice == "idle":
            self.keepalived_conns.popleft()
            idle.shed = True  # its event may be in the batch being handled (on_client_...)
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(idle.sock)
            self._close(idle)
        elif choice == "arriving":
            self._stop_reading(arriving)
            if arriving.framing.data:
                self._refuse_busy(arriving)
            else:
                self._close(arriving)
        return choice is not None

    def on_client_socket_readable(self, conn, client):
        if getattr(conn, "shed", False):
            return  # closed earlier in this batch of events: nothing to read, nothing to serve
        super().on_client_socket_readable(conn, client)

    # -- JSON instead of gunicorn's HTML error pages ----------------------------------------

    def handle_error(self, req, client, addr, exc):
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)  # logs, and chooses the status
        status = captured.status()
        message = self.messages.get(status, self.messages[500])
        try:
            util.write_nonblock(client, json_error(status, message))
        except Exception:  # the client is gone; nothing to answer
            self.log.debug("Failed to send error message.")


def _fix_mmap_threshold():
    """Set glibc's mmap threshold to MMAP_THRESHOLD (nothing elsewhere: other C libraries)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # (the C library's)


def _raise_fd_limit(wanted: int) -> int | None:
    """Raise this process's soft descriptor limit to `wanted` if it is lower (at most to the
    hard limit): with a soft limit of 1024, a full process would run out before its slots.
    The soft limit it has then (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft
