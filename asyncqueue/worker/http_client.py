"""The worker's HTTP client: requests, with every connection checked against the SSRF policy and
every attempt held to a hard deadline.

* Each connection resolves the name itself, judges every address with `destinations`, and
  connects to an address it has checked; the Host header, SNI and certificate check still use the
  name, so DNS rebinding between check and connect cannot slip through. Redirect hops open new
  connections and are checked the same way.
* A watchdog thread shuts down the sockets of an attempt that outlives its deadline, so a server
  that trickles bytes cannot stretch an attempt past its time limit.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import ipaddress
import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from asyncqueue import limits
from asyncqueue.destinations import blocked_reason


class BlockedDestination(Exception):
    """The URL's host is, or resolves only to, an address the policy forbids."""


_current = threading.local()


class Attempt:
    """One callback attempt: its deadline and the sockets it has used."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.sockets: list[socket.socket] = []
        self.expired = False
        self.lock = threading.Lock()

    def track(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self.lock:
            if self.expired:
                _shutdown(sock)
            else:
                self.sockets.append(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                _shutdown(sock)


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

    def begin(self, seconds: float) -> Attempt:
        attempt = Attempt(time.monotonic() + seconds)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="attempt-watchdog", daemon=True
                )
                self._thread.start()
            self._attempts.add(attempt)
            # Wake the thread only for a deadline earlier than the one it waits for: with many
            # attempts a second, waking it for each would cost more than the calls themselves.
            if attempt.deadline < self._wakes_at:
                self._wakes_at = attempt.deadline
                self._cond.notify()
        _current.attempt = attempt
        return attempt

    def end(self, attempt: Attempt) -> None:
        _current.attempt = None
        with self._cond:
            self._attempts.discard(attempt)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [a for a in self._attempts if a.deadline <= now]
                for attempt in due:
                    self._attempts.discard(attempt)
                self._wakes_at = min((a.deadline for a in self._attempts), default=now + 60)
                if not due:
                    self._cond.wait(timeout=max(self._wakes_at - now, 0.001))
            for attempt in due:
                attempt.expire()


WATCHDOG = Watchdog()


def _track_current(sock: socket.socket | None) -> None:
    attempt = getattr(_current, "attempt", None)
    if attempt is not None:
        attempt.track(sock)


class _GuardedConnection:
    allow_private = False

    def _new_conn(self) -> socket.socket:
        host = self._dns_host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, self.port, 0, socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e
        reasons = []
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if isinstance(ip, ipaddress.IPv6Address) and len(sockaddr) > 3 and sockaddr[3]:
                reason = f"{sockaddr[0]} is link-local (scoped)"
            else:
                reason = blocked_reason(ip, allow_private=self.allow_private)
            if reason:
                reasons.append(reason)
                continue
            try:
                sock = urllib3_connection.create_connection(
                    (str(ip), self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as e:
                raise NewConnectionError(self, f"Failed to establish a new connection: {e}") from e
            _track_current(sock)
            return sock
        raise BlockedDestination(f"{self.host}: {reasons[0]}")

    def request(self, *args, **kwargs):
        # A kept-alive connection was tracked by an earlier attempt: track it for this one too.
        _track_current(self.sock)
        return super().request(*args, **kwargs)


def _pool_classes(allow_private: bool) -> dict:
    http_conn = type(
        "GuardedHTTPConnection",
        (_GuardedConnection, HTTPConnection),
        {"allow_private": allow_private},
    )
    https_conn = type(
        "GuardedHTTPSConnection",
        (_GuardedConnection, HTTPSConnection),
        {"allow_private": allow_private},
    )
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_private: bool, **kwargs):
        self._pool_classes = _pool_classes(allow_private)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)

    def proxy_manager_for(self, *args, **kwargs):  # pragma: no cover - proxies are never used
        raise BlockedDestination("proxies are not used for callbacks")


def make_session(*, allow_private: bool, pool_size: int = 4) -> requests.Session:
    """A session for one worker thread: keep-alive, no proxies or .netrc from the environment."""
    session = requests.Session()
    session.trust_env = False
    # A session serves every team's tasks: a cookie one callback's server sets must never ride
    # along on another task's call, so the session's jar keeps none.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.max_redirects = limits.MAX_REDIRECTS
    adapter = GuardedAdapter(allow_private, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "AsyncQueue/1.0"
    return session
