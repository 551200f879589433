"""LISTEN for new work on a dedicated connection and wake the dispatcher.

NOTIFY is only a hint: after a lost connection the listener reconnects, LISTENs again and wakes
the dispatcher once, since a notification may have been missed meanwhile.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from asyncqueue import db, domain
from asyncqueue.logs import log_event

CHANNEL = domain.TASKS_CHANNEL
log = logging.getLogger("asyncqueue.worker")


class Listener(threading.Thread):
    """Sets `wake` on every notification (and after each reconnect) until stop()."""

    def __init__(self, url: str, wake: threading.Event):
        super().__init__(name="listener", daemon=True)
        self.url = url
        self.wake = wake
        self.stopping = threading.Event()
        self.connected = threading.Event()

    def stop(self) -> None:
        self.stopping.set()  # seen within a second (the notifies timeout)

    def alive(self) -> bool:
        return self.stopping.is_set() or self.is_alive()

    def run(self) -> None:
        delay = 0.2
        while not self.stopping.is_set():
            try:
                with db.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    db.listen(conn, CHANNEL)
                    self.connected.set()
                    self.wake.set()
                    delay = 0.2
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.wake.set()
            except psycopg.Error as exc:
                self.connected.clear()
                log_event(
                    log,
                    "listen connection lost; reconnecting",
                    logging.WARNING,
                    error=str(exc).strip(),
                    retry_in=delay,
                )
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
