"""The worker's HTTP transport: requests' adapter over urllib3, with every connection checked
against the SSRF policy and every attempt held to one hard deadline.

* One `Deadline` bounds the whole attempt. It is passed explicitly, inside the `Attempt` handed
  to `CallbackClient.send`, down to name resolution (run on a lookup pool shared fairly between
  teams, the Attempt saying whose, and waited for at most until the deadline), each connect,
  each redirect hop and each read: no step starts a fresh timeout of its own.
* Each new connection resolves the name itself, judges every address with `destinations`, and
  tries the allowed ones in turn (families interleaved, happy-eyeballs order), sharing out the
  time left; the Host header, SNI and certificate check still use the name, so DNS rebinding
  between check and connect cannot slip through.
* A watchdog thread shuts down the sockets of an attempt that outlives its deadline (or of every
  attempt, on `cut_all`), so a server that trickles bytes, or a connect or TLS handshake that
  hangs, cannot stretch an attempt past its time limit. It shuts down its own duplicate of each
  socket, never the object urllib3 is using.
* Responses are held to HTTP framing: a header block cut short, or a Content-Length that is not
  a number, is an error rather than an empty success.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import threading
import time
from concurrent.futures import Future

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import Timeout

from asyncqueue.outbound.destinations import blocked_reason, parse_ip_literal
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.resolver import Lookup, LookupBook

USER_AGENT = "AsyncQueue/1.0"
# Our own request headers, sent on every hop (the task's own go only to its own origin).
DEFAULT_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
}
RESOLVER_THREADS = 32  # they only wait on I/O: cheap
# Interim (1xx) responses skipped before the final one, at most: more is a malformed response,
# not a reason to spin reading them until the deadline.
MAX_INTERIM_RESPONSES = 10
# What a response may send besides its body, each a malformed response past its bound: they are
# read whole (and headers parsed into objects several times their size) before the body, so only
# totals keep an attempt's memory, and its CPU, small whatever the server sends.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024  # status lines and headers, interim responses included
MAX_RESPONSE_TRAILER_BYTES = 64 * 1024  # a chunked body's trailer fields, in all
MAX_RESPONSE_TRAILERS = 100  # and how many
MAX_CHUNK_EXTENSION_BYTES = 64 * 1024  # what chunk-size lines carry besides the sizes, in all
# Chunks a response's body may come in: each costs Python work to parse, so a body of 1-byte
# chunks would cost a core; the kept body (64 KiB) in chunks of 16 bytes or more fits.
MAX_RESPONSE_CHUNKS = 4096


class BlockedDestination(Exception):
    """The URL's host is, or resolves only to, an address the policy forbids."""


class IncompleteResponse(http.client.HTTPException):
    """The connection ended before the response's header block did."""


class MalformedResponse(http.client.HTTPException):
    """The response breaks HTTP framing (a Content-Length that is not a number, say)."""


# -- the watchdog -----------------------------------------------------------------------------


class Attempt:
    """One callback attempt: its deadline, and duplicates of the sockets it uses (so that the
    watchdog can shut the connection down without touching urllib3's socket objects)."""

    def __init__(self, deadline: Deadline, team=None):
        self.deadline = deadline
        self.team = team  # whose share of the lookup pool its name lookups run on
        self.expired = False
        self.cut_short = False  # expired by cut_all (shutdown), not by its deadline
        self._copies: list[socket.socket] = []
        self._lock = threading.Lock()
        # Set on expiry, and by a finished name resolution: what a resolution waits on.
        self.wake = threading.Event()

    def track(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        try:
            copy = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return  # already closed: nothing left to cut
        with self._lock:
            if self.expired:
                _shutdown(copy)
            self._copies.append(copy)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for copy in self._copies:
                _shutdown(copy)
        self.wake.set()

    def close(self) -> None:
        with self._lock:
            copies, self._copies = self._copies, []
        for copy in copies:
            copy.close()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """Expires attempts at their deadlines, from one thread for the whole process."""

    def __init__(self):
        self._cond = threading.Condition()
        self._attempts: set[Attempt] = set()
        self._thread: threading.Thread | None = None
        self._wakes_at = float("inf")  # when the watchdog thread will next look

    def begin(self, deadline: Deadline, team=None) -> Attempt:
        attempt = Attempt(deadline, team)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="attempt-watchdog", daemon=True
                )
                self._thread.start()
            self._attempts.add(attempt)
            # Wake the thread only for a deadline earlier than the one it waits for: with many
            # attempts a second, waking it for each would cost more than the calls themselves.
            if deadline.at < self._wakes_at:
                self._wakes_at = deadline.at
                self._cond.notify()
        return attempt

    def end(self, attempt: Attempt) -> None:
        with self._cond:
            self._attempts.discard(attempt)
        attempt.close()

    def cut_all(self) -> int:
        """Expire every attempt in progress now (at shutdown); how many there were."""
        with self._cond:
            attempts, self._attempts = list(self._attempts), set()
        for attempt in attempts:
            attempt.cut_short = True
            attempt.expire()
        return len(attempts)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [a for a in self._attempts if a.deadline.at <= now]
                for attempt in due:
                    self._attempts.discard(attempt)
                self._wakes_at = min((a.deadline.at for a in self._attempts), default=now + 60)
                if not due:
                    self._cond.wait(timeout=max(self._wakes_at - now, 0.001))
            for attempt in due:
                attempt.expire()


WATCHDOG = Watchdog()


# -- name resolution --------------------------------------------------------------------------


class LookupPool:
    """getaddrinfo on daemon threads, so that a caller can stop waiting at its deadline
    (getaddrinfo itself cannot be interrupted; a stuck lookup holds one thread until it ends).

    Shared by every team's calls, so one team's slow names must not hold up the others': who
    runs when is resolver.LookupBook's rule (a share of the threads per team, teams in turn,
    lookups shared per name, dropped once nobody waits, failures remembered briefly).

    `lookup` is getaddrinfo's stand-in (tests give their own); by default socket.getaddrinfo,
    looked up at call time."""

    def __init__(self, threads: int = RESOLVER_THREADS, lookup=None, **limits):
        self._lookup = lookup
        self._threads = threads
        self._started = False
        self._closed = False
        self._cond = threading.Condition()
        self.book = LookupBook(threads, **limits)

    def submit(self, team, host: str, port: int, deadline: float) -> tuple[Future, Lookup | None]:
        """The answer's future for an attempt of `team`, and the lookup to `leave` when done
        waiting (None when the answer is already known: a failure remembered, or no room)."""
        key = (host, port)
        with self._cond:
            if not self._started:
                for i in range(self._threads):
                    threading.Thread(target=self._run, name=f"resolver-{i}", daemon=True).start()
                self._started = True
            error = self.book.failure(key, time.monotonic())
            lookup = None if error is not None else self.book.ask(team, key, deadline)
            if lookup is not None:
                if lookup.handle is None:
                    lookup.handle = Future()
                if not lookup.started:
                    # A new lookup, or one now also in this team's queue: a thread may take it.
                    self._cond.notify()
                return lookup.handle, lookup
        future = Future()
        future.set_exception(
            error or socket.gaierror(socket.EAI_AGAIN, "too many name lookups waiting")
        )
        return future, None

    def leave(self, lookup: Lookup) -> None:
        with self._cond:
            dropped = self.book.leave(lookup)
        if dropped:
            _abandon([lookup])

    def forget(self) -> None:
        """Forget lookups under way and failures remembered (for tests that swap resolvers)."""
        with self._cond:
            dropped = self.book.forget()
        _abandon(dropped)

    def close(self) -> None:
        """Let the threads end (a test's own pool): each once its lookup, if any, is over."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    lookup, dropped = self.book.take(time.monotonic())
                    if lookup is not None or dropped:
                        break
                    self._cond.wait()
            _abandon(dropped)
            if lookup is None:
                continue
            future = lookup.handle
            future.set_running_or_notify_cancel()
            host, port = lookup.key
            try:
                result = (self._lookup or socket.getaddrinfo)(host, port, 0, socket.SOCK_STREAM)
            except BaseException as exc:
                self._finish(lookup, exc)
                future.set_exception(exc)
            else:
                self._finish(lookup, None)
                future.set_result(result)

    def _finish(self, lookup: Lookup, error: BaseException | None) -> None:
        with self._cond:
            self.book.finished(lookup, error, time.monotonic())
            self._cond.notify()  # (a share came free: a team's next lookup may start)


def _abandon(lookups: list[Lookup]) -> None:
    for lookup in lookups:
        if lookup.handle is not None and lookup.handle.set_running_or_notify_cancel():
            lookup.handle.set_exception(TimeoutError("no attempt waits for this lookup"))


RESOLVER = LookupPool(RESOLVER_THREADS)


def resolve(
    host: str, port: int, attempt: Attempt, pool: LookupPool | None = None
) -> list[tuple[int, tuple]]:
    """(family, sockaddr) for every address of `host`, waiting no longer than the deadline."""
    ip = ip_literal(host)
    if ip is not None:  # a literal: nothing to look up
        if ip.version == 6:
            return [(socket.AF_INET6, (str(ip), port, 0, 0))]
        return [(socket.AF_INET, (str(ip), port))]
    attempt.wake.clear()
    if attempt.expired:  # (checked after the clear, so an expiry cannot slip between the two)
        raise TimeoutError(f"the attempt's deadline passed before resolving {host}")
    future, lookup = (pool or RESOLVER).submit(attempt.team, host, port, attempt.deadline.at)
    try:
        future.add_done_callback(lambda _: attempt.wake.set())
        attempt.wake.wait(attempt.deadline.remaining())
        if not future.done() or attempt.expired:
            raise TimeoutError(f"resolving {host} outlived the attempt's deadline")
        return [(family, sockaddr) for family, _, _, _, sockaddr in future.result()]
    finally:
        if lookup is not None:  # (a lookup nobody waits for is dropped before it runs)
            (pool or RESOLVER).leave(lookup)


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` is, if it is one: in Python's strict forms (a scoped IPv6 address
    too), or in the others a browser also reads as an address (a root dot, `0x7f000001`, `127.1`,
    UTS-46 digits and dots). The creation check judged those as that address, so they are never
    looked up by name (a resolver would be asked about `127.0.0.1.`, and fail)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return parse_ip_literal(host)


def interleave_families(addresses: list[tuple[int, tuple]]) -> list[tuple[int, tuple]]:
    """The order to try addresses in (RFC 8305): the resolver's first family first, then
    alternating between families, each family keeping the resolver's order; duplicates dropped."""
    seen, by_family = set(), {}
    for family, sockaddr in addresses:
        if sockaddr[:2] in seen:
            continue
        seen.add(sockaddr[:2])
        by_family.setdefault(family, []).append((family, sockaddr))
    queues = list(by_family.values())
    ordered = []
    while queues:
        for q in queues:
            ordered.append(q.pop(0))
        queues = [q for q in queues if q]
    return ordered


def judge(addresses: list[tuple[int, tuple]], *, allow_private: bool):
    """(allowed addresses, reasons the others were refused)."""
    allowed, reasons = [], []
    for family, sockaddr in addresses:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
            reason = f"{sockaddr[0]} is link-local (scoped)"
        else:
            reason = blocked_reason(ip, allow_private=allow_private)
        if reason:
            reasons.append(reason)
        else:
            allowed.append((family, sockaddr))
    return allowed, reasons


# -- connections ------------------------------------------------------------------------------


class _HeadReader:
    """Stands in for a response's file while its head is read (interim responses, the status
    line and headers): at most MAX_RESPONSE_HEAD_BYTES in all, noting whether the block ended at
    end of file instead of at an empty line (a response cut short)."""

    def __init__(self, fp):
        self._fp = fp
        self.left = MAX_RESPONSE_HEAD_BYTES
        self.cut = False

    def readline(self, limit: int = -1) -> bytes:
        line = self._fp.readline(self.left + 1 if limit < 0 else min(limit, self.left + 1))
        self.left -= len(line)
        if self.left < 0:
            raise MalformedResponse("the response's header block is too large")
        if not line.endswith(b"\n") and len(line) <= http.client._MAXLINE:
            self.cut = True
        return line

    def __getattr__(self, name):
        return getattr(self._fp, name)


CHUNK_SIZE_LINE = 64  # a chunk-size line's bytes besides its extensions (hex digits, CRLF)


class _ChunkedReader:
    """Stands in for a chunked response's file while its body is read (urllib3 and http.client
    read the framing lines with readline, the data with read): what the chunk-size lines carry
    besides the sizes, how many chunks there are, and the trailer fields after the last chunk,
    are held to their bounds."""

    def __init__(self, fp):
        self._fp = fp
        self.read = fp.read  # (the data: passed straight through)
        self._extensions = 0
        self._chunks = 0
        self._trailers: list[int] | None = None  # [fields, bytes], once the last chunk is read

    def readline(self, limit: int = -1) -> bytes:
        if self._trailers is not None:
            return self._trailer_line(limit)
        # Bounded here, whatever limit the caller passes (urllib3 passes 64 KiB today).
        left = MAX_CHUNK_EXTENSION_BYTES - self._extensions + CHUNK_SIZE_LINE
        line = self._fp.readline(left if limit < 0 else min(limit, left))
        size = line.split(b";", 1)[0].strip()
        self._extensions += len(line.rstrip(b"\r\n")) - len(size)
        if self._extensions > MAX_CHUNK_EXTENSION_BYTES:
            raise MalformedResponse("chunk extensions too large")
        self._chunks += 1
        if self._chunks > MAX_RESPONSE_CHUNKS:
            raise MalformedResponse("too many chunks")
        if size and not size.strip(b"0"):
            self._trailers = [0, 0]  # the last chunk: trailer fields follow
        return line

    def _trailer_line(self, limit: int) -> bytes:
        left = MAX_RESPONSE_TRAILER_BYTES - self._trailers[1]
        line = self._fp.readline(left + 1 if limit < 0 else min(limit, left + 1))
        if line not in (b"\r\n", b"\n", b""):
            self._trailers[0] += 1
            self._trailers[1] += len(line)
            if self._trailers[1] > MAX_RESPONSE_TRAILER_BYTES:
                raise MalformedResponse("trailer fields too large")
            if self._trailers[0] > MAX_RESPONSE_TRAILERS:
                raise MalformedResponse("too many trailer fields")
        return line

    def __getattr__(self, name):
        return getattr(self._fp, name)


class StrictHTTPResponse(http.client.HTTPResponse):
    """http.client's response, refusing what http.client lets through: a header block cut short
    by the connection's end, and a Content-Length that is not a non-negative number. Every 1xx
    interim response is skipped (http.client skips only 100: a 102 or 103 would be taken as the
    final response, and the real one read as the next request's answer on the kept-alive
    connection), up to MAX_INTERIM_RESPONSES. The head is held to MAX_RESPONSE_HEAD_BYTES in all
    (not only per line and in count, as http.client does), and a chunked body's framing to its
    bounds (_ChunkedReader)."""

    def _read_status(self):
        interim = 0
        while True:
            version, status, reason = super()._read_status()
            if status >= 200:
                return version, status, reason
            if status == 101:  # never asked for: what follows is not HTTP any more
                raise MalformedResponse("101 Switching Protocols was not asked for")
            interim += 1
            if interim > MAX_INTERIM_RESPONSES:
                raise MalformedResponse("too many interim (1xx) responses")
            self._skip_interim_headers()

    def _skip_interim_headers(self) -> None:
        """Read past an interim response's header block (its bytes count against the head's)."""
        while True:
            line = self.fp.readline(http.client._MAXLINE + 1)
            if not line.endswith(b"\n"):
                raise IncompleteResponse("the connection ended inside an interim response")
            if line in (b"\r\n", b"\n"):
                return

    def begin(self) -> None:
        if self.headers is not None:
            return
        fp, head = self.fp, _HeadReader(self.fp)
        self.fp = head
        try:
            super().begin()
        finally:
            if self.fp is head:  # (http.client sets it to None when it closes early)
                self.fp = fp
        if head.cut:
            raise IncompleteResponse("the connection ended inside the response's headers")
        if self.chunked and self.fp is not None:
            self.fp = _ChunkedReader(self.fp)
        if not self.chunked:
            lengths = self.msg.get_all("content-length") or []
            values = {v.strip() for value in lengths for v in value.split(",")}
            if values and (len(values) > 1 or not values.pop().isdigit()):
                raise MalformedResponse(f"invalid Content-Length: {', '.join(lengths)}")


class _GuardedConnection:
    allow_private = False
    lookups: LookupPool | None = None  # None: the process's RESOLVER
    response_class = StrictHTTPResponse
    attempt: Attempt | None = None  # set by the pool before each request

    def _new_conn(self) -> socket.socket:
        attempt = self.attempt
        host = self._dns_host.strip("[]")
        try:
            addresses = resolve(host, self.port, attempt, self.lookups)
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e
        except TimeoutError as e:
            raise ConnectTimeoutError(self, str(e)) from e
        if not addresses:
            raise NameResolutionError(self.host, self, socket.gaierror("no address"))
        allowed, reasons = judge(addresses, allow_private=self.allow_private)
        if not allowed:
            raise BlockedDestination(f"{self.host}: {reasons[0]}")
        return self._connect_any(interleave_families(allowed), attempt)

    def _connect_any(self, addresses, attempt: Attempt) -> socket.socket:
        """A socket connected to the first address that answers, each given an equal share of
        the time left (the last one all of it)."""
        error: OSError | None = None
        for i, (family, sockaddr) in enumerate(addresses):
            remaining = attempt.deadline.remaining()
            if remaining <= 0 or attempt.expired:
                break
            sock = socket.socket(family, socket.SOCK_STREAM)
            # Tracked before connecting: a shutdown at the deadline ends a connect that hangs.
            attempt.track(sock)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(remaining / (len(addresses) - i))
                sock.connect(sockaddr)
            except OSError as e:
                sock.close()
                error = e
                continue
            sock.settimeout(attempt.deadline.remaining() or 0.001)
            return sock
        if attempt.expired or attempt.deadline.expired or isinstance(error, TimeoutError):
            raise ConnectTimeoutError(self, f"connecting to {self.host} outlived the deadline")
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class _AttemptTimeout(Timeout):
    """urllib3's timeout, read from the attempt's deadline each time urllib3 asks for it: the
    way the attempt travels from `CallbackClient.send` to the connection."""

    def __init__(self, attempt: Attempt):
        super().__init__(connect=None, read=None)
        self.attempt = attempt

    def clone(self) -> _AttemptTimeout:
        return _AttemptTimeout(self.attempt)

    @property
    def connect_timeout(self) -> float:
        return self.attempt.deadline.remaining()

    @property
    def read_timeout(self) -> float:
        return self.attempt.deadline.remaining()


class _GuardedPool:
    def _make_request(self, conn, method, url, *args, timeout, **kwargs):
        conn.attempt = timeout.attempt
        # A kept-alive connection was tracked by an earlier attempt: track it for this one.
        timeout.attempt.track(conn.sock)
        return super()._make_request(conn, method, url, *args, timeout=timeout, **kwargs)


def _pool_classes(allow_private: bool, lookups: LookupPool | None) -> dict:
    def pool(name, base_pool, base_conn):
        conn = type(f"{name}Connection", (_GuardedConnection, base_conn), {})
        conn.allow_private = allow_private
        conn.lookups = lookups
        return type(f"{name}Pool", (_GuardedPool, base_pool), {"ConnectionCls": conn})

    return {
        "http": pool("GuardedHTTP", HTTPConnectionPool, HTTPConnection),
        "https": pool("GuardedHTTPS", HTTPSConnectionPool, HTTPSConnection),
    }


class GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_private: bool, lookups: LookupPool | None = None, **kwargs):
        self._pool_classes = _pool_classes(allow_private, lookups)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)

    def build_response(self, req, resp):
        # urllib3's response as it is: a requests.Response would parse cookies (none are kept)
        # and copy the headers, for nothing.
        return resp

    def proxy_manager_for(self, *args, **kwargs):  # pragma: no cover - proxies are never used
        raise BlockedDestination("proxies are not used for callbacks")


class CallbackClient:
    """What one worker thread makes its calls with: kept-alive connections per host, no proxies,
    no .netrc, no cookies (one client serves every team's tasks), and TLS checked against the
    default CAs or `ca_bundle`. Redirects are followed by the caller, hop by hop. Names are
    looked up on `lookups` (by default the process's RESOLVER)."""

    def __init__(
        self,
        *,
        allow_private: bool,
        ca_bundle: str | None = None,
        pool_size: int = 4,
        lookups: LookupPool | None = None,
    ):
        if ca_bundle and not os.path.exists(ca_bundle):
            # Loudly, once, rather than as a puzzling failure of every HTTPS callback.
            raise ValueError(f"ASYNCQUEUE_CA_BUNDLE: no file or folder at {ca_bundle!r}")
        self.adapter = GuardedAdapter(
            allow_private, lookups, pool_connections=pool_size, pool_maxsize=pool_size
        )
        self.verify = ca_bundle or True
        self.default_headers = dict(DEFAULT_HEADERS)

    def send(self, request: requests.PreparedRequest, attempt: Attempt):
        """Send one prepared request (no redirects followed); urllib3's streaming response."""
        return self.adapter.send(
            request, stream=True, timeout=_AttemptTimeout(attempt), verify=self.verify, proxies={}
        )

    def close(self) -> None:
        self.adapter.close()


def make_session(
    *,
    allow_private: bool,
    ca_bundle: str | None = None,
    pool_size: int = 4,
    lookups: LookupPool | None = None,
) -> CallbackClient:
    """A client for one worker thread (what `perform_attempt` takes as its session)."""
    return CallbackClient(
        allow_private=allow_private, ca_bundle=ca_bundle, pool_size=pool_size, lookups=lookups
    )
