"""A worker's own metrics port: bounded in threads and time against clients that never finish a
request, and a port in use stops the worker before it registers anywhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from asyncqueue.worker import metrics
from tests.support import wait_for

BIN = Path(sys.executable).parent


def _half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /metr")  # and never the rest
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_clients_that_never_finish_a_request_take_few_threads_and_not_for_long():
    server = metrics.bind_worker_metrics("127.0.0.1", 0, None, threads=2, deadline=1.0)
    metrics.serve_in_background(server)
    port = server.server_address[1]
    before = threading.active_count()
    held = [_half_sent(port) for _ in range(20)]
    try:
        # Each handler thread brings one timer: 2 of each at most, however many connect.
        assert threading.active_count() - before <= 2 * 2 + 1
        for sock in held:
            sock.settimeout(15)
            assert _closed_by_server(sock)  # refused at once, or cut at the deadline
        answer = wait_for(
            lambda: _scrape(port), timeout=15, interval=0.1, message="a scrape to be served"
        )
        assert answer.status_code == 200 and "asyncqueue_worker_in_flight" in answer.text
    finally:
        for sock in held:
            sock.close()
        server.shutdown()
        server.server_close()


def _scrape(port: int):
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except requests.RequestException:
        return None


def test_a_trickling_client_is_cut_at_the_deadline():
    server = metrics.bind_worker_metrics("127.0.0.1", 0, None, threads=2, deadline=1.0)
    metrics.serve_in_background(server)
    try:
        sock = _half_sent(server.server_address[1])
        sock.settimeout(0.3)
        cut = False
        for _ in range(40):  # a byte every 0.3 s resets any read timeout; the deadline holds
            try:
                sock.sendall(b"r")
                if sock.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                continue
            except OSError:
                cut = True
                break
        assert cut, "a client sending a byte at a time kept its thread for 12 s"
        sock.close()
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_port_in_use_stops_the_worker_in_one_line_leaving_no_worker_row(database_url, conn):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCQUEUE_")}
    env.update(
        DATABASE_URL=database_url,
        ASYNCQUEUE_WORKER_METRICS_PORT=str(port),
        ASYNCQUEUE_WORKER_METRICS_HOST="127.0.0.1",
    )
    try:
        result = subprocess.run(
            [str(BIN / "asyncqueue"), "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: cannot serve metrics on 127.0.0.1 port {port}: ")
    assert conn.execute("SELECT count(*) AS n FROM workers").fetchone()["n"] == 0


def test_clients_that_time_out_leave_no_traceback(capfd, monkeypatch):
    monkeypatch.setattr(metrics._QuietHandler, "timeout", 0.3)  # the read timeout, not the deadline
    server = metrics.bind_worker_metrics("127.0.0.1", 0, None, threads=2, deadline=30)
    metrics.serve_in_background(server)
    try:
        sock = _half_sent(server.server_address[1])
        sock.settimeout(10)
        assert _closed_by_server(sock)
        sock.close()
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_connections_that_never_finish_a_request_cannot_keep_a_scrape_out():
    server = metrics.bind_worker_metrics("127.0.0.1", 0, None, threads=2, deadline=30)
    metrics.serve_in_background(server)
    port = server.server_address[1]
    held = []
    try:
        for _ in range(3):  # every place taken by a connection that sends no more, and again
            held += [_half_sent(port) for _ in range(2)]
            wait_for(lambda: len(server.reading) == 2, timeout=10, message="places taken")
            answer = _scrape(port)
            assert answer is not None and answer.status_code == 200
    finally:
        for sock in held:
            sock.close()
        server.shutdown()
        server.server_close()
