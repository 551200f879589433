"""The web process's byte and connection limits, through the real gunicorn: chunked framing past
its limits is a JSON 400 and a closed connection, a flood of it leaves the process small, and
idle connections past the per-process limit do not keep a normal request out."""

import contextlib
import json
import os
import selectors
import socket
import statistics
import threading
import time

import pytest
import requests

from tests.support import exchange, wait_for
from tests.support.databases import stack_on_a_clone

CONNECTIONS = 20  # per process (ASYNCQUEUE_WEB_CONNECTIONS), scaled down from 1,000
PROCESSES = 2
ANSWERED_WITHIN = 1.0  # seconds: /healthz and a create while idle connections are held open
TRIES = 5  # the median of these is held to ANSWERED_WITHIN (one slow try is noise)
CHUNKED_HEAD = (
    b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n"
)
EXTENSION_PIECE = b"1;e=" + b"x" * 60_000 + b"\r\na\r\n"


@pytest.fixture(scope="module")
def web(pg_admin_url, template_db):
    """Two processes of few connections each; timeouts far longer than any test here, so that
    only the limits under test can free a connection."""
    with stack_on_a_clone(
        pg_admin_url,
        template_db,
        "asyncqueue-web-limits-",
        WEB_CONCURRENCY=str(PROCESSES),
        ASYNCQUEUE_WEB_CONNECTIONS=str(CONNECTIONS),
        ASYNCQUEUE_HEADER_TIMEOUT="120",
        ASYNCQUEUE_BODY_TIMEOUT="120",
        ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="loopback",
    ) as s:
        s.start_web()
        yield s


def status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_chunk_extension_past_its_limit_is_a_json_400_and_the_connection_closed(web):
    raw, closed = exchange(web.port, CHUNKED_HEAD + b"\r\n" + EXTENSION_PIECE)
    status, body = status_and_json(raw)
    assert status == 400 and body["error"].startswith("Chunk extensions too large (limit 4096")
    assert closed and b"\r\nConnection: close\r\n" in raw


def test_trailers_past_their_limit_are_a_json_400_and_the_connection_closed(web):
    valid = json.dumps({"callbackUrl": "http://127.0.0.1:9/x"}).encode()
    request = (
        CHUNKED_HEAD
        + b"Authorization: Bearer %s\r\n\r\n" % web.key.encode()
        + b"%x\r\n%s\r\n0\r\n" % (len(valid), valid)
        + b"X-Trailer: 1\r\n" * 33
        + b"\r\n"
    )
    raw, closed = exchange(web.port, request)
    status, body = status_and_json(raw)
    assert status == 400 and body["error"].startswith("Trailers too large (limit 32 fields")
    assert closed


def worker_pids(web) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == web.web.pid:
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return found


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_a_flood_of_chunk_extensions_leaves_every_web_process_small(web):
    """8 clients stream 1-byte chunks with 60 KB extensions as fast as the server reads them,
    each up to 48 MiB, opening a new connection when one is closed (bounded in count and time)."""
    pids = worker_pids(web)
    assert len(pids) == PROCESSES
    peak = dict.fromkeys(pids, 0)
    answers: list[bytes] = []
    budget = {"bytes": 8 * 48 * 1024 * 1024, "connections": 400}
    lock = threading.Lock()
    deadline = time.monotonic() + 6

    def flood():
        while time.monotonic() < deadline:
            with lock:
                if budget["bytes"] <= 0 or budget["connections"] <= 0:
                    return
                budget["connections"] -= 1
            with socket.create_connection(("127.0.0.1", web.port), timeout=10) as s:
                try:
                    s.sendall(CHUNKED_HEAD + b"\r\n")
                    while time.monotonic() < deadline and budget["bytes"] > 0:
                        s.sendall(EXTENSION_PIECE)
                        with lock:
                            budget["bytes"] -= len(EXTENSION_PIECE)
                except OSError:
                    pass
                try:
                    s.settimeout(1)
                    answers.append(s.recv(65536))
                except OSError:
                    answers.append(b"")

    clients = [threading.Thread(target=flood) for _ in range(8)]
    for c in clients:
        c.start()
    while any(c.is_alive() for c in clients):
        for pid in pids:
            peak[pid] = max(peak[pid], rss_bytes(pid))
        time.sleep(0.01)  # the sampling period of the peak
    for c in clients:
        c.join()
    assert max(peak.values()) < 150 * 1024 * 1024, peak
    assert answers and all(a.startswith(b"HTTP/1.1 400 ") or a == b"" for a in answers)
    assert requests.get(web.url("/healthz"), timeout=10).status_code == 200


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used (from /proc)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


SMALL_CHUNK_CPU = 1.0  # web CPU seconds a whole create in small chunks may cost (all of it)


@pytest.mark.parametrize(
    "chunk, total",
    [(32, 1024 * 1024), (7, 256 * 1024)],  # (1 MiB in 7-byte chunks is past the framing limit)
)
@pytest.mark.parametrize("authenticated", [True, False])
def test_a_body_in_small_chunks_costs_the_web_little_cpu(web, chunk, total, authenticated):
    """Read by the app (a 201) or not (a 401, and gunicorn drains what it may of the body
    before the next request, then closes): either way, a bounded small cost."""
    payload = json.dumps({"callbackUrl": "http://127.0.0.1:9/x"}).encode()
    body = payload[:-1] + b" " * (total - len(payload)) + b"}"
    chunks = b"".join(
        b"%x\r\n" % len(body[i : i + chunk]) + body[i : i + chunk] + b"\r\n"
        for i in range(0, total, chunk)
    )
    # Authenticated, the connection closes after the answer; not, it is kept alive, so the
    # unread body is drained first.
    extra = b"Authorization: Bearer %s\r\nConnection: close\r\n" % web.key.encode()
    request = CHUNKED_HEAD + (extra if authenticated else b"") + b"\r\n" + chunks + b"0\r\n\r\n"
    pids = worker_pids(web)
    before = cpu_seconds(pids)
    raw, closed = exchange(web.port, request, wait=60)
    spent = cpu_seconds(pids) - before
    assert raw.startswith(b"HTTP/1.1 201 " if authenticated else b"HTTP/1.1 401 "), raw[:300]
    assert closed and spent < SMALL_CHUNK_CPU, spent


class _OnAThread:
    """Runs `_run` on a thread of its own from `with` until the block ends (it polls
    `self.stopping`)."""

    def __init__(self):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30)

    def _run(self):
        raise NotImplementedError


class IdleConnections(_OnAThread):
    """`count` connections that each send one byte, each one the server closes opened again
    (at most `per_second` of those a second), on a thread of its own until stopped."""

    def __init__(self, port: int, count: int, per_second: float):
        self.address, self.count, self.per_second = ("127.0.0.1", port), count, per_second
        self.opened = self.closed_by_server = self.held = 0
        self.answers: list[bytes] = []
        super().__init__()

    def _run(self):
        sel = selectors.DefaultSelector()
        started = time.monotonic()
        try:
            while not self.stopping.is_set():
                allowed = self.count + int(self.per_second * (time.monotonic() - started))
                while len(sel.get_map()) < self.count and self.opened < allowed:
                    s = socket.socket()
                    s.setblocking(False)
                    s.connect_ex(self.address)
                    sel.register(s, selectors.EVENT_WRITE, "connecting")
                    self.opened += 1
                for key, _ in sel.select(timeout=0.05):
                    s = key.fileobj
                    if key.data == "connecting":
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                            s.send(b"G")
                            sel.modify(s, selectors.EVENT_READ, "open")
                            self.held += 1
                            continue
                    else:
                        self.held -= 1
                        self.closed_by_server += 1
                        try:
                            self.answers.append(s.recv(65536))
                        except OSError:
                            self.answers.append(b"")
                    sel.unregister(s)
                    s.close()
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()


def fresh_session(web, key: str | None = None) -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    if key:
        http.headers["Authorization"] = f"Bearer {key}"
    return http


def test_idle_connections_past_the_limit_do_not_keep_requests_out(web):
    # Three times what the processes hold together; the timeouts never free one during the
    # test, so only shedding can make room.
    count = 3 * CONNECTIONS * PROCESSES
    with IdleConnections(web.port, count, per_second=count / 2) as idle:
        # All connected, some in the listen backlog; or some shed already: all full.
        wait_for(
            lambda: idle.held >= count or idle.closed_by_server > 0,
            timeout=20,
            message=f"{count} idle connections to be held",
        )
        healthz, create = [], []
        for _ in range(TRIES):
            with fresh_session(web) as http:
                started = time.monotonic()
                assert http.get(web.url("/healthz"), timeout=10).status_code == 200
                healthz.append(time.monotonic() - started)
            with fresh_session(web, web.key) as http:
                started = time.monotonic()
                created = http.post(
                    web.url("/v1/tasks"), json={"callbackUrl": "http://127.0.0.1:9/x"}, timeout=10
                )
                create.append(time.monotonic() - started)
                assert created.status_code == 201, created.text
    assert statistics.median(healthz) < ANSWERED_WITHIN, healthz
    assert statistics.median(create) < ANSWERED_WITHIN, create
    assert idle.closed_by_server > 0
    # Shed connections had sent part of a request: each was told why (or had been reset).
    assert all(a.startswith(b"HTTP/1.1 503 ") or a == b"" for a in idle.answers)
    assert any(a.startswith(b"HTTP/1.1 503 ") for a in idle.answers)


class KeepAliveClients(_OnAThread):
    """`count` keep-alive connections, each sending its next request as soon as the last is
    answered, so that the one a full process sheds (its longest idle) is often just becoming
    readable; one the server closes is opened again. Until stopped, or `budget` requests."""

    REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    def __init__(self, port: int, count: int, budget: int):
        self.address, self.count, self.budget = ("127.0.0.1", port), count, budget
        self.sent = self.answered = self.closed_by_server = 0
        super().__init__()

    def _run(self):
        sel = selectors.DefaultSelector()
        try:
            while not self.stopping.is_set() and self.sent < self.budget:
                while len(sel.get_map()) < self.count:
                    s = socket.socket()
                    s.setblocking(False)
                    s.connect_ex(self.address)
                    sel.register(s, selectors.EVENT_WRITE, None)
                for key, _ in sel.select(timeout=0.05):
                    s = key.fileobj
                    if key.data is None:  # connected (or refused): send the first request
                        self._send(sel, s, b"")
                        continue
                    try:
                        data = key.data + s.recv(65536)
                    except OSError:
                        data = b""
                    if data == key.data:  # closed by the server
                        self.closed_by_server += 1
                        sel.unregister(s)
                        s.close()
                        continue
                    head, sep, body = data.partition(b"\r\n\r\n")
                    length = int(head.lower().partition(b"content-length:")[2].split(b"\r")[0] or 0)
                    if sep and len(body) >= length:
                        self.answered += 1
                        self._send(sel, s, body[length:])
                    else:
                        sel.modify(s, selectors.EVENT_READ, data)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()

    def _send(self, sel, s, unread: bytes):
        try:
            s.send(self.REQUEST)
            self.sent += 1
            sel.modify(s, selectors.EVENT_READ, unread)
        except OSError:
            sel.unregister(s)
            s.close()


def test_keep_alive_connections_shed_as_their_next_request_arrives_cost_no_process(web):
    pids = sorted(worker_pids(web))
    assert len(pids) == PROCESSES
    # Twice what the processes hold: every reconnection sheds an idle one.
    with KeepAliveClients(web.port, 2 * CONNECTIONS * PROCESSES, budget=20_000) as clients:
        clients.thread.join(timeout=4)  # 4 s of load, or the budget spent
    assert clients.answered > 0 and clients.closed_by_server > 0
    assert sorted(worker_pids(web)) == pids  # no web process died (and was replaced)
    with fresh_session(web) as http:
        assert http.get(web.url("/healthz"), timeout=10).status_code == 200


THREADS = 4  # per process (ASYNCQUEUE_WEB_THREADS' default)


@pytest.mark.parametrize(
    "body",
    [
        # One chunk past the limit, or the limit in one chunk and then one byte more: sent up to
        # where the old hand-over point was (one byte past the limit), then the client stalls.
        b"%x\r\n" % (2 * 1024 * 1024) + b" " * (1024 * 1024 + 1),
        b"%x\r\n" % (1024 * 1024) + b" " * (1024 * 1024) + b"\r\n1\r\n ",
    ],
    ids=["one-big-chunk", "limit-then-one-byte"],
)
def test_a_chunked_body_over_the_limit_stalled_holds_no_thread(web, body):
    head = CHUNKED_HEAD + b"Authorization: Bearer %s\r\n\r\n" % web.key.encode()
    stalled = []
    try:
        for _ in range(PROCESSES * THREADS + 1):
            s = socket.create_connection(("127.0.0.1", web.port), timeout=30)
            s.sendall(head + body)
            stalled.append(s)
        payload = json.dumps({"callbackUrl": "http://127.0.0.1:9/x"})
        created = requests.post(
            web.url("/v1/tasks"),
            data=payload,
            headers={"Authorization": f"Bearer {web.key}", "Content-Type": "application/json"},
            timeout=20,
        )
        assert created.status_code == 201, created.text
        for s in stalled:
            s.settimeout(20)
            raw = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(65536):
                    raw += chunk
            status, error = status_and_json(raw)
            assert (status, error) == (
                413,
                {"error": "Request body too large (limit 1048576 bytes)"},
            )
    finally:
        for s in stalled:
            s.close()


UNREAD_BODY_CPU = 0.3  # web CPU seconds a body the app does not read may cost


def test_an_unread_body_in_one_byte_chunks_is_not_parsed(web):
    # As many 1-byte chunks as the framing limit lets through; refused 401 without a key, the
    # body unread: the connection is closed rather than the body parsed to find its end.
    chunks = b"1\r\n \r\n" * 50_000
    request = CHUNKED_HEAD + b"\r\n" + chunks + b"0\r\n\r\n"
    pids = worker_pids(web)
    before = cpu_seconds(pids)
    raw, closed = exchange(web.port, request, wait=60)
    spent = cpu_seconds(pids) - before
    assert raw.startswith(b"HTTP/1.1 401 "), raw[:300]
    assert b"\r\nConnection: close\r\n" in raw.split(b"\r\n\r\n", 1)[0] + b"\r\n", raw[:300]
    assert closed and spent < UNREAD_BODY_CPU, spent


def test_a_keep_alive_client_whose_body_went_unread_is_told_the_connection_closes(web):
    """Refused before its body is read (401, no key), a keep-alive client's next request on the
    same session goes through: the answer said the connection closes, so it opens another."""
    http = requests.Session()
    http.trust_env = False
    for _ in range(20):
        refused = http.post(web.url("/v1/tasks"), data=b"x" * 100_000, timeout=10)
        assert refused.status_code == 401 and refused.headers["Connection"] == "close"
        assert http.get(web.url("/healthz"), timeout=10).status_code == 200
