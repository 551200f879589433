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
* A memory cap. The partial requests one process buffers hold at most MAX_BUFFERED_BYTES
  together; a request that would take them past it is refused (JSON 503, Retry-After: 1).
* JSON errors. What gunicorn refuses before Flask sees it (a malformed request line, a header
  over its size limit, a URI over its length limit) is answered `{"error": "..."}` with the
  status gunicorn chose, instead of its HTML page.

Used by asyncqueue/gunicorn_config.py (`worker_class`), so the Procfile's web command is the
same as before. TLS and HTTP/2 connections (not used by our deployment) keep gthread's
behaviour.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import time
from functools import partial

from gunicorn import util
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import ThreadWorker

from asyncqueue import limits
from asyncqueue.config import settings_or_exit
from asyncqueue.logs import new_request_id
from asyncqueue.request_framing import (
    COMPLETE,
    HAND_OVER,
    HEAD_TOO_LARGE,
    MORE,
    RequestFraming,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
RECV_SIZE = 64 * 1024  # (a larger recv allocates and frees an mmap each call)
READ_ON = object()  # a thread's verdict: the request is partial, the event loop reads on
# Bytes of partial requests one web process holds at most, all connections together: each may
# buffer up to the body limit plus its head for up to the timeouts, and gunicorn accepts up to
# worker_connections (1000) connections: without a cap, slow clients could hold a gigabyte.
# Above it a partial request is refused (JSON 503 with Retry-After) rather than buffered.
MAX_BUFFERED_BYTES = 64 * 1024 * 1024

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
        413: f"Request body too large (limit {limits.MAX_REQUEST_BODY} bytes)",
        414: f"Request line too long (limit {cfg.limit_request_line} bytes)",
        417: "Unsupported Expect header (only 100-continue is understood)",
        431: f"Request headers too large (limit {cfg.limit_request_fields} headers of at most "
        f"{cfg.limit_request_field_size} bytes each)",
        500: "Internal server error",
        501: "Unsupported Transfer-Encoding (only chunked is understood)",
        503: "Server busy: too many requests are still arriving here; retry in a second",
    }


def json_error(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    reason = REASONS.get(status, "Error")
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    # A request id as the app's responses carry (every response has one, the README says),
    # though no app code saw this request.
    return (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{retry}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {new_request_id()}\r\n\r\n"
    ).encode("latin-1") + body


def _recv_nonblocking(sock) -> bytes | None:
    """What has arrived on a non-blocking socket: None when nothing has yet, b"" when the
    client left (or the connection failed)."""
    try:
        return sock.recv(RECV_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


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
    def init_process(self):
        settings = settings_or_exit()  # checked already by the master: the same values
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.messages = error_messages(self.cfg, self.header_timeout, self.body_timeout)
        # The head limit: gunicorn's own per-line limits, for a whole head of usual size.
        self.max_head = max(64 * 1024, self.cfg.limit_request_line + 8 * 1024)
        self.reading: dict = {}  # connection -> deadline, for requests still arriving
        self.parked_bytes = 0  # bytes the requests in self.reading hold (MAX_BUFFERED_BYTES)
        self.next_sweep = 0.0
        super().init_process()

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
        if buffered is not None:
            conn.buffered = None
            conn.data_ready = True  # no waiting for data in gthread's handle: it is all here
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(buffered)
        return super().handle(conn)

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
        conn.framing = RequestFraming(self.max_head, limits.MAX_REQUEST_BODY)
        conn.continue_sent = False
        conn.close_after = False

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
        if outcome in (COMPLETE, HAND_OVER):
            conn.buffered = bytes(framing.data)
            conn.close_after = framing.over_limit or outcome == HAND_OVER
            conn.framing = None
            return None
        return False

    def _refusal(self, outcome: str) -> bytes:
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
        return super()._keepalive_after(conn, keepalive)

    # -- in the event loop: partial requests wait here, holding no thread --------------------

    def finish_request(self, conn, fs):
        if fs.cancelled() or fs.exception() is not None or fs.result() is not READ_ON:
            return super().finish_request(conn, fs)
        if not self.alive:
            self._close(conn)
            return
        size = len(conn.framing.data)
        if self.parked_bytes + size > MAX_BUFFERED_BYTES:
            self._refuse_busy(conn)
            return
        head_done = conn.framing.head_end is not None
        timeout = self.body_timeout if head_done else self.header_timeout
        self.reading[conn] = time.monotonic() + timeout
        conn.parked, self.parked_bytes = size, self.parked_bytes + size
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn, _sock):
        data = _recv_nonblocking(conn.sock)
        if data is None:
            return
        if not data:  # the client left
            self._stop_reading(conn)
            self._close(conn)
            return
        if self.parked_bytes + len(data) > MAX_BUFFERED_BYTES:
            self._stop_reading(conn)
            self._refuse_busy(conn)
            return
        conn.parked += len(data)
        self.parked_bytes += len(data)
        framing = conn.framing
        had_head = framing.head_end is not None
        outcome = framing.feed(data)
        verdict = self._settle(conn, outcome)
        if verdict is READ_ON:
            if not had_head and framing.head_end is not None:
                self.reading[conn] = time.monotonic() + self.body_timeout
            return
        self._stop_reading(conn)
        if verdict is None:
            conn.data_ready = True
            super().enqueue_req(conn)  # whole: a thread may have it now
        else:
            self._send(conn, self._refusal(outcome))
            self._close(conn)

    def _refuse_busy(self, conn):
        self._send(conn, json_error(503, self.messages[503]))
        self._close(conn)

    def _stop_reading(self, conn):
        if self.reading.pop(conn, None) is not None:
            self.parked_bytes -= conn.parked
            conn.parked = 0
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(conn.sock)

    def _close(self, conn):
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
        late = [c for c, deadline in self.reading.items() if force or deadline <= now]
        for conn in late:
            self._stop_reading(conn)
            if conn.framing.data:
                self._send(conn, json_error(408, self.messages[408]))
            self._close(conn)

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
