"""What every part of the worker process is: something with start() and stop() that the process
runs and supervises. A part whose thread has ended while the process still runs has failed, and
the process exits non-zero rather than stay alive doing nothing."""

from __future__ import annotations

import threading
from typing import Protocol


class Service(Protocol):
    """A part the process starts, watches and stops (maintenance services too: heartbeat,
    pruner). `alive()` is optional: without it a service is taken to be alive."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ThreadService:
    """A service that runs `run()` on one daemon thread until `stop()`."""

    name = "service"

    def __init__(self):
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        self.stopping.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def alive(self) -> bool:
        """False once the thread has ended without being asked to stop."""
        return self.stopping.is_set() or (self._thread is not None and self._thread.is_alive())

    def run(self) -> None:  # pragma: no cover - every service overrides it
        raise NotImplementedError

    def _wake(self) -> None:
        """Interrupt whatever the thread waits on, so that it sees `stopping`."""
