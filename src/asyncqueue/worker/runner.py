"""The runner: a claimed task in, an outcome out. Threads, each with its own HTTP session, make
the call with one explicit Deadline and decide what the result means; the outcome goes to the
completer and the slot is freed as soon as the call is over."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from asyncqueue.db.rows import ClaimedTask
from asyncqueue.logs import log_event
from asyncqueue.worker import metrics
from asyncqueue.worker.attempt import AttemptResult, CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.decide import (
    TIMEOUT,
    Outcome,
    TaskState,
    attempt_time_limit,
    decide_outcome,
    max_wait_exceeded,
)
from asyncqueue.worker.execute import perform_attempt
from asyncqueue.worker.slots import Claim, SlotTable

log = logging.getLogger("asyncqueue.worker")


@dataclass(slots=True)
class Finished:
    """A claim's outcome, for the completer to write (and log, in one line)."""

    claim: Claim
    outcome: Outcome
    status_code: int | None = None
    duration_ms: int | None = None


def db_now(claim: Claim) -> datetime:
    """Database time, extrapolated from the claim with this process's monotonic clock, so that
    deadlines set by one machine hold on another whatever their wall clocks say."""
    return claim.row.claimed_at + timedelta(seconds=time.monotonic() - claim.claimed_monotonic)


def task_state(row: ClaimedTask) -> TaskState:
    return TaskState(
        retry_count=row.retry_count,
        max_retries=row.max_retries,
        retry_backoff=row.retry_backoff,
        max_wait_time=row.max_wait_time,
        timeout=row.timeout,
        deadline=row.deadline,
    )


def call_spec(row: ClaimedTask) -> CallSpec:
    headers = dict(row.headers)
    headers["X-AsyncQueue-Task-Id"] = str(row.id)
    headers["X-AsyncQueue-Retry-Count"] = str(row.retry_count)
    return CallSpec(method=row.method, url=row.callback_url, headers=headers, body=row.body)


class _Caller:
    """One runner thread's hand: the claim submit() gives it, and the event that wakes it."""

    __slots__ = ("claim", "ready")

    def __init__(self):
        self.claim: Claim | None = None
        self.ready = threading.Event()


class Runner:
    """`threads` callers. submit() never blocks: the dispatcher claims no more than free slots.

    A claim goes to the thread that became idle last (a stack, not a queue): at low load one
    thread, with its warm HTTP session and keep-alive connection, makes nearly every call, where
    a queue would hand each call to the thread idle longest, whose connection has gone cold (or
    been closed by the receiver) meanwhile. Claims are queued only while every thread is busy.
    """

    name = "runner"

    def __init__(
        self,
        slots: SlotTable,
        complete: Callable[[Finished], None],
        wake: threading.Event,
        *,
        threads: int,
        body_cap: int,
        make_session: Callable,
        attempt: Callable = perform_attempt,
    ):
        self.slots = slots
        self.complete = complete
        self.wake = wake
        self.body_cap = body_cap
        self.make_session = make_session
        self.attempt = attempt
        self._lock = threading.Lock()
        self._idle: list[_Caller] = []  # waiting threads; the last one became idle last
        self._backlog: deque[Claim | None] = deque()  # claims no thread was free for yet
        self._threads = [
            threading.Thread(target=self._serve, name=f"callback-{i}", daemon=True)
            for i in range(threads)
        ]
        self._stopping = False

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Let the threads end after their current call (they are not waited for)."""
        self._stopping = True
        with self._lock:
            busy = len(self._threads) - len(self._idle)
            for caller in self._idle:
                caller.claim = None
                caller.ready.set()
            self._idle.clear()
            self._backlog.extend([None] * busy)  # after the claims already waiting

    def alive(self) -> bool:
        return self._stopping or all(t.is_alive() for t in self._threads)

    def submit(self, claims: list[Claim]) -> None:
        with self._lock:
            for claim in claims:
                if self._idle:
                    caller = self._idle.pop()
                    caller.claim = claim
                    caller.ready.set()
                else:
                    self._backlog.append(claim)

    def _next(self, caller: _Caller) -> Claim | None:
        """The next claim for this thread (None: stop), waiting while there is none."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            if self._stopping:
                return None
            caller.ready.clear()
            self._idle.append(caller)
        caller.ready.wait()
        return caller.claim

    def _serve(self) -> None:
        session = self.make_session()  # this thread's own: keep-alive per host, no cookies
        caller = _Caller()
        while (claim := self._next(caller)) is not None:
            try:
                self.run_one(session, claim)
            except BaseException:
                # A bug, not a callback's failure (those are outcomes). The slot must not leak:
                # forget the claim, and its lease brings the task back.
                log.exception(
                    "task run failed; its lease will bring it back",
                    extra={"fields": {"task_id": str(claim.task_id)}},
                )
                self.slots.release([claim])
                self.wake.set()

    def run_one(self, session, claim: Claim) -> None:
        """Attempt the call and pass its outcome on. A call that shutdown cut before any response
        came passes nothing on: the process hands the task back, untouched."""
        finished = None if claim.cut else self._attempt(session, claim)
        if claim.cut and finished is not None and finished.status_code is None:
            finished = None
        if finished is not None:
            claim.outcome_queued = True
            self.complete(finished)
        self.slots.call_ended(claim)
        self.wake.set()

    def _attempt(self, session, claim: Claim) -> Finished:
        row = claim.row
        state = task_state(row)
        # The limit the claim set the lease by, counted from the claim: a call that started late
        # (its thread was busy, the machine slow) still ends before the lease does (less its
        # grace), so another worker never takes the task back while this call is open.
        time_limit = attempt_time_limit(state, row.claimed_at)
        deadline = Deadline(claim.claimed_monotonic + max(0.0, time_limit))
        if time_limit <= 0 or deadline.expired:  # reclaimed after its deadline, say
            return Finished(
                claim, Outcome(TIMEOUT, result=row.result, error=max_wait_exceeded(state))
            )
        result: AttemptResult = self.attempt(
            session, call_spec(row), deadline, self.body_cap, team=row.team_id
        )
        outcome = decide_outcome(
            state, result, limit_was_deadline=time_limit < state.timeout, now=db_now(claim)
        )
        metrics.observe_attempt(outcome.kind, result.duration_ms)
        if log.isEnabledFor(logging.DEBUG):
            log_event(
                log,
                "attempt",
                logging.DEBUG,
                task_id=str(row.id),
                attempt=row.attempts,
                status_code=result.status_code,
                duration_ms=result.duration_ms,
                outcome=outcome.kind,
            )
        return Finished(claim, outcome, result.status_code, result.duration_ms)
