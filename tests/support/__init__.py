"""Helpers shared by the tests.

Here: teams and keys, waiting for a condition, raw HTTP exchanges and the drills' report.
receiver.py: a real HTTP receiver on 127.0.0.1. fake_pool.py: a connection pool without a
database, for unit tests of the worker's threads. tasks.py: task rows, claimed or in a database.
"""

from __future__ import annotations

import socket
import time

from asyncqueue import db
from asyncqueue.teams import create_key
from tests.support.receiver import Received, Receiver

__all__ = ["REPORT", "Received", "Receiver", "exchange", "make_team", "report", "wait_for"]


def make_team(conn, name: str = "acme", plan: str = "free") -> tuple[dict, str]:
    """A team and one API key for it."""
    team = conn.execute(db.query("team_create"), {"name": name, "plan": plan}).fetchone()
    key, _ = create_key(conn, team["id"], "test")
    return team, key


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = ""):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


# Figures from the fault drills and the bench smoke test, printed at the end of the run.
REPORT: list[str] = []


def report(line: str) -> None:
    REPORT.append(line)


def exchange(port: int, data: bytes, wait: float = 10.0) -> tuple[bytes, bool]:
    """Send raw bytes to 127.0.0.1:`port`; read until the server closes (True) or `wait`
    passes (False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.settimeout(wait)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:  # closed with our bytes unread: it still answered first
            pass
    return received, True
