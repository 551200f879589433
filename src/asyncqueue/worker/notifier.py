"""The notifier: POSTs onCompleteUrl events, fire-and-forget, with a 10 s limit each and no
retries (as the API document says), fairly between teams.

Events wait in one queue per team; delivery threads take teams in turn (round robin), and no
team has more than its fair share of the threads open at once — threads // (teams active + 1),
at most a quarter of them, at least one — so slow receivers of a few teams cannot hold every
thread while another team's events wait (a delivery ends within 10 s, and shares apply to the
next), and a share is left for a team that turns up. An event is queued as the
payload it will send (the finished row is not kept), and queues are bounded in events and in
bytes (per team and in all): an event that does not fit is dropped and logged, rather than let
memory grow or hold up the outcome writes. At shutdown queued events get what is left of the
grace; what is still queued after it is dropped and counted in the log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from asyncqueue import domain
from asyncqueue.db.rows import FinishedTask
from asyncqueue.logs import log_event
from asyncqueue.task_json import completion_event
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import perform_attempt

log = logging.getLogger("asyncqueue.worker")

THREADS = 16  # they mostly wait on receivers
MAX_QUEUED = 10_000
MAX_QUEUED_PER_TEAM = 1_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
MAX_QUEUED_BYTES_PER_TEAM = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one onComplete POST needs, and no more."""

    task_id: object
    team_id: object
    url: str | None
    body: str

    @property
    def size(self) -> int:
        return len(self.body) + len(self.url or "") + 200  # (and the object itself, roughly)


def completion_payload(row: FinishedTask) -> str:
    return json.dumps(completion_event(row))


def deliver_completion(session, delivery: Delivery) -> None:
    """POST the task's completion event to its onCompleteUrl, once; log how it went."""
    task_id = str(delivery.task_id)
    spec = CallSpec(
        method=domain.ON_COMPLETE_METHOD,
        url=delivery.url,
        headers={"Content-Type": "application/json", "X-AsyncQueue-Task-Id": task_id},
        body=delivery.body,
    )
    deadline = Deadline.after(domain.ON_COMPLETE_TIMEOUT)
    attempt = perform_attempt(session, spec, deadline, 4096, team=delivery.team_id)
    if attempt.status_code is not None and attempt.status_code < 300:
        log_event(
            log,
            "onComplete delivered",
            logging.DEBUG,
            task_id=task_id,
            status_code=attempt.status_code,
        )
    else:
        log_event(
            log,
            "onComplete failed (not retried)",
            logging.WARNING,
            task_id=task_id,
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
        max_queued: int = MAX_QUEUED,
        max_queued_per_team: int = MAX_QUEUED_PER_TEAM,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_queued_bytes_per_team: int = MAX_QUEUED_BYTES_PER_TEAM,
        payload: Callable[[dict], str] = completion_payload,
    ):
        self.make_session = make_session
        self.deliver = deliver
        self.payload = payload
        self.threads = threads
        self.max_queued = max_queued
        self.max_queued_per_team = max_queued_per_team
        self.max_queued_bytes = max_queued_bytes
        self.max_queued_bytes_per_team = max_queued_bytes_per_team
        self._cond = threading.Condition()
        self._queues: dict = {}  # team -> deque of Delivery
        self._turns: deque = deque()  # teams with events waiting, in turn
        self._open: Counter = Counter()  # team -> deliveries open
        self._bytes: Counter = Counter()  # team -> bytes queued
        self._queued = 0
        self._queued_bytes = 0
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

    def put(self, row: FinishedTask) -> bool:
        """Queue an event for delivery; False (and logged) if it was dropped."""
        team = row.team_id
        try:
            delivery = Delivery(row.id, team, row.on_complete_url, self.payload(row))
        except Exception:  # a bug of ours: never the completer's problem
            log.exception("onComplete payload failed", extra={"fields": {"task_id": str(row.id)}})
            return False
        size = delivery.size
        with self._cond:
            waiting = self._queues.get(team)
            dropped = (
                self._closing
                or self._queued >= self.max_queued
                or self._queued_bytes + size > self.max_queued_bytes
                or self._bytes[team] + size > self.max_queued_bytes_per_team
                or (waiting is not None and len(waiting) >= self.max_queued_per_team)
            )
            if dropped:
                self.dropped += 1
            else:
                if waiting is None:
                    waiting = self._queues[team] = deque()
                    self._turns.append(team)
                waiting.append(delivery)
                self._queued += 1
                self._queued_bytes += size
                self._bytes[team] += size
                self._cond.notify()
        if dropped:
            log_event(
                log,
                "onComplete dropped: too many waiting",
                logging.WARNING,
                task_id=str(row.id),
                team_id=str(team),
            )
        return not dropped

    def share(self) -> int:
        """Deliveries one team may have open: its fair share of the threads, keeping a share
        for a team that turns up (call with the lock held)."""
        active = len(self._queues.keys() | self._open.keys())
        return max(1, min(self.threads // (active + 1), self.threads // 4))

    def _take(self):
        """The next (team, delivery) whose team is under its share, in turn; or None."""
        share = self.share()
        for _ in range(len(self._turns)):
            team = self._turns.popleft()
            if self._open[team] < share:
                waiting = self._queues[team]
                delivery = waiting.popleft()
                if waiting:
                    self._turns.append(team)  # behind every other team waiting
                else:
                    del self._queues[team]
                return team, delivery
            self._turns.append(team)
        return None

    def _next(self):
        """The next (team, delivery) in turn, or None when closing with nothing left."""
        with self._cond:
            while (item := self._take()) is None:
                if self._closing and not self._queued:
                    return None
                self._cond.wait()
            team, delivery = item
            size = delivery.size
            self._queued -= 1
            self._queued_bytes -= size
            self._bytes[team] -= size
            if not self._bytes[team]:
                del self._bytes[team]
            self._open[team] += 1
            if self._queued:
                self._cond.notify()  # another thread may take the next team now
            return item

    def _done(self, team) -> None:
        with self._cond:
            self._open[team] -= 1
            if not self._open[team]:
                del self._open[team]
            # Shares may have grown (a team finished): every waiting thread looks again.
            self._cond.notify_all()

    def _serve(self) -> None:
        session = self.make_session()  # this thread's own
        while (item := self._next()) is not None:
            team, delivery = item
            try:
                self.deliver(session, delivery)
            except Exception:
                log.exception(
                    "onComplete delivery failed",
                    extra={"fields": {"task_id": str(delivery.task_id)}},
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
            self._turns.clear()
            self._bytes.clear()
            self._queued = 0
            self._queued_bytes = 0
            self._cond.notify_all()
        if left:
            log_event(log, "onComplete events dropped at exit", logging.WARNING, count=left)
        return left
