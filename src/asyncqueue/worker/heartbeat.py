"""Worker heartbeats: each worker keeps a row in `workers` fresh, so operators (and /metrics) see
which workers are alive, where they run and how busy they are.

A worker whose row is older than SILENT_AFTER is "silent" (dead, paused or cut off from the
database); rows silent for FORGET_AFTER are deleted by any live worker's heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from asyncqueue import __version__, domain
from asyncqueue.db import workers as worker_rows
from asyncqueue.logs import log_event

log = logging.getLogger("asyncqueue.heartbeat")

HEARTBEAT_INTERVAL = domain.HEARTBEAT_INTERVAL
SILENT_AFTER = domain.SILENT_AFTER
FORGET_AFTER = 3600.0


def worker_state(seen_seconds_ago: float) -> str:
    """'live' or 'silent', from how long ago a worker's last heartbeat was written."""
    return "silent" if seen_seconds_ago > SILENT_AFTER else "live"


class Heartbeat:
    """Writes this worker's row every `interval` seconds on a thread of its own; `stop()` deletes
    it. `in_flight` is called on each beat for the number of tasks the worker holds."""

    def __init__(
        self,
        pool,
        name: str,
        in_flight: Callable[[], int],
        *,
        interval: float = HEARTBEAT_INTERVAL,
    ):
        self.pool = pool
        self.in_flight = in_flight
        self.interval = interval
        self.identity = worker_rows.WorkerIdentity(
            id=uuid.uuid4(),
            name=name,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=datetime.now(UTC),
        )
        self.id = self.identity.id
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        try:  # briefly: shutdown must stay within the platform's limit if the database is away
            with self.pool.connection(timeout=2.0) as conn:
                worker_rows.remove(conn, self.id)
        except Exception as exc:  # the row is forgotten by the others after FORGET_AFTER
            log_event(log, "could not remove worker row", logging.WARNING, error=str(exc))

    def beat(self) -> None:
        with self.pool.connection() as conn:
            worker_rows.beat(conn, self.identity, self.in_flight())
            worker_rows.forget_dead(conn, FORGET_AFTER)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.beat()
            except Exception as exc:  # database away: the next beat tries again
                log_event(log, "heartbeat failed", logging.WARNING, error=str(exc).strip())
            self.stopping.wait(self.interval)
