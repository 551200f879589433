"""Test servers for what http.server cannot send: responses cut short, malformed, slow, endless;
a listener whose connects hang; and a resolver that the tests control. Loopback only, every loop
bounded in time."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class ScriptedServer:
    """A TCP server on `host` handing each connection, once the request's head (and a
    Content-Length body) has been read, to `serve(server, conn, head, body)`.

    `send` writes and counts bytes, so a test can tell how much of a response a client took;
    `requests` holds every request head received; `active` counts connections being handled."""

    def __init__(self, serve, host: str = "127.0.0.1", sndbuf: int | None = None):
        self.serve = serve
        self.host = host
        self.sndbuf = sndbuf
        self.sent = 0
        self.active = 0
        self.requests: list[bytes] = []
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def start(self) -> ScriptedServer:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.sent += len(data)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.active += 1
        try:
            self._serve(conn)
        finally:
            with self.lock:
                self.active -= 1

    def _serve(self, conn: socket.socket) -> None:
        if self.sndbuf:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        conn.settimeout(10)
        with conn, contextlib.suppress(OSError):
            while not self.stopping.is_set():
                head, body = _read_request(conn)
                if head is None:
                    return
                with self.lock:
                    self.requests.append(head)
                    self.bodies.append(body)
                if self.serve(self, conn, head, body) is not True:  # True: keep the connection
                    return


def _read_request(conn: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head, body


def header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode("latin-1")
    return None


class HangingListener:
    """A port on `host` whose connects hang: a listening socket with a full backlog that never
    accepts (the kernel drops further SYNs)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host

    def __enter__(self) -> HangingListener:
        self.sock = socket.socket()
        self.sock.bind((self.host, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        # Connect until one hangs: each connect that completes takes a place in the backlog.
        end = time.monotonic() + 10
        while True:
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect((self.host, self.port))
            except TimeoutError:
                probe.close()
                return self
            self.fillers.append(probe)
            if time.monotonic() > end or len(self.fillers) > 64:
                self.__exit__()
                raise RuntimeError("the backlog did not fill: connects to it would not hang")

    def __exit__(self, *exc) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()


class FakeResolver:
    """socket.getaddrinfo for test names: each maps to addresses, optionally after a delay that
    `release()` cuts short (so no resolver thread outlives the test by long). Other names go to
    the real resolver."""

    def __init__(self, real):
        self.real = real
        self.names: dict[str, tuple[float, list[str]]] = {}
        self.released = threading.Event()
        self.lookups: list[str] = []

    def add(self, name: str, *addresses: str, delay: float = 0.0) -> None:
        self.names[name] = (delay, list(addresses))

    def release(self) -> None:
        self.released.set()

    def __call__(self, host, port, *args, **kwargs):
        if host not in self.names:
            return self.real(host, port, *args, **kwargs)
        self.lookups.append(host)
        delay, addresses = self.names[host]
        if delay:
            self.released.wait(delay)
        out = []
        for address in addresses:
            if ":" in address:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return out
