"""The notifier: POSTs onCompleteUrl events, fire-and-forget, with a 10 s limit each and no
retries (as the API document says), fairly between teams.

Events wait in one queue per team; delivery threads take teams in turn (round robin), and no
team has more than `per_team` deliveries open at once, so one team's slow receivers hold at most
that many threads while every other team's events keep flowing. Queues are bounded (per team and
in all): an event that does not fit is dropped and logged, rather than let memory grow or hold
up the outcome writes. At shutdown queued events get what is left of the grace; what is still
queued after it is dropped and counted in the log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from asyncqueue import limits
from asyncqueue.logs import log_event
from asyncqueue.task_json import completion_event
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import perform_attempt

log = logging.getLogger("asyncqueue.worker")

THREADS = 8
PER_TEAM = 2  # deliveries open at once for one team: 4 slow teams to fill every thread
MAX_QUEUED = 10_000
MAX_QUEUED_PER_TEAM = 1_000


def deliver_completion(session, row: dict) -> None:
    """POST the task's completion event to its onCompleteUrl, once; log how it went."""
    spec = CallSpec(
        method="POST",
        url=row["on_complete_url"],
        headers={"Content-Type": "application/json", "X-AsyncQueue-Task-Id": str(row["id"])},
        body=json.dumps(completion_event(row)),
    )
    attempt = perform_attempt(session, spec, Deadline.after(limits.ON_COMPLETE_TIMEOUT), 4096)
    if attempt.status_code is not None and attempt.status_code < 300:
        log_event(
            log,
            "onComplete delivered",
            logging.DEBUG,
            task_id=str(row["id"]),
            status_code=attempt.status_code,
        )
    else:
        log_event(
            log,
            "onComplete failed (not retried)",
            logging.WARNING,
            task_id=str(row["id"]),
            status_code=attempt.status_code,
            error=attempt.error or ("timed out" if attempt.timed_out else None),
        )


class Notifier:
    name = "notifier"

    def __init__(
        self,
        make_session: Callable,
        deliver: Callable = deliver_completion,
        *,
        threads: int = THREADS,
        per_team: int = PER_TEAM,
        max_queued: int = MAX_QUEUED,
        max_queued_per_team: int = MAX_QUEUED_PER_TEAM,
    ):
        self.make_session = make_session
        self.deliver = deliver
        self.per_team = per_team
        self.max_queued = max_queued
        self.max_queued_per_team = max_queued_per_team
        self._cond = threading.Condition()
        self._queues: dict = {}  # team -> deque of rows
        self._ready: deque = deque()  # teams with events and a free delivery, in turn
        self._open: Counter = Counter()  # team -> deliveries open
        self._queued = 0
        self._closing = False
        self.dropped = 0
        self._threads = [
            threading.Thread(target=self._serve, name=f"on-complete-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        return self._closing or all(t.is_alive() for t in self._threads)

    def put(self, row: dict) -> bool:
        """Queue an event for delivery; False (and logged) if it was dropped."""
        team = row.get("team_id")
        with self._cond:
            waiting = self._queues.get(team)
            full = self._closing or self._queued >= self.max_queued
            if full or (waiting is not None and len(waiting) >= self.max_queued_per_team):
                self.dropped += 1
                dropped = True
            else:
                dropped = False
                if waiting is None:
                    waiting = self._queues[team] = deque()
                waiting.append(row)
                self._queued += 1
                if len(waiting) == 1 and self._open[team] < self.per_team:
                    self._ready.append(team)
                    self._cond.notify()
        if dropped:
            log_event(
                log,
                "onComplete dropped: too many waiting",
                logging.WARNING,
                task_id=str(row["id"]),
                team_id=str(team),
            )
        return not dropped

    def _next(self):
        """The next (team, row) in turn, or None when closing with nothing left."""
        with self._cond:
            while not self._ready:
                if self._closing and not self._queued:
                    return None
                self._cond.wait()
            team = self._ready.popleft()
            waiting = self._queues[team]
            row = waiting.popleft()
            self._queued -= 1
            self._open[team] += 1
            if not waiting:
                del self._queues[team]
            elif self._open[team] < self.per_team:
                self._ready.append(team)  # behind every other team waiting
            if self._ready:
                self._cond.notify()  # another thread can take the next team now
            return team, row

    def _done(self, team) -> None:
        with self._cond:
            self._open[team] -= 1
            was_full = self._open[team] == self.per_team - 1
            if not self._open[team]:
                del self._open[team]
            if was_full and team in self._queues and team not in self._ready:
                self._ready.append(team)
                self._cond.notify()
            if self._closing:
                self._cond.notify_all()  # stop() waits for the last deliveries

    def _serve(self) -> None:
        session = self.make_session()  # this thread's own
        while (item := self._next()) is not None:
            team, row = item
            try:
                self.deliver(session, row)
            except Exception:
                log.exception(
                    "onComplete delivery failed", extra={"fields": {"task_id": str(row["id"])}}
                )
            finally:
                self._done(team)

    def stop(self, timeout: float = 0.0) -> int:
        """Stop taking events, deliver what is queued for up to `timeout` seconds, then drop the
        rest; the number dropped (and logged)."""
        end = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queued or sum(self._open.values())) and time.monotonic() < end:
                self._cond.wait(max(0.0, end - time.monotonic()))
            left = self._queued
            self._queues.clear()
            self._ready.clear()
            self._queued = 0
            self._cond.notify_all()
        if left:
            log_event(log, "onComplete events dropped at exit", logging.WARNING, count=left)
        return left
