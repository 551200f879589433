"""The completer: writes outcomes (final ones and retries) in batches, one statement each for all
that have piled up, then hands finished tasks with an onCompleteUrl to the notifier.

* Idempotent for the claim that made it: a write repeated after a lost reply returns the rows
  its first run wrote (task_finish_many, task_schedule_retry), so no onComplete is lost.
* A lost connection is retried for as long as the process runs, a deadlock a few times
  (db/errors.py); data the database refuses is written again without the result; anything else
  is a failure. While a write is being retried the dispatcher claims nothing, so the outcomes
  held here are written before any of their tasks could be claimed again.
* Supervised: a batch that fails unexpectedly is logged and its claims left to their leases;
  after MAX_UNEXPECTED_FAILURES such batches in a row the thread ends, and the process, seeing
  it dead, exits non-zero rather than stay alive writing nothing.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import replace

import psycopg

from asyncqueue.db import claims as claims_db
from asyncqueue.db import errors as db_errors
from asyncqueue.db.rows import FinishedTask
from asyncqueue.logs import log_event
from asyncqueue.worker import metrics
from asyncqueue.worker.decide import RETRY
from asyncqueue.worker.runner import Finished
from asyncqueue.worker.service import ThreadService
from asyncqueue.worker.slots import SlotTable

log = logging.getLogger("asyncqueue.worker")

# What a task's error says when the database refused its callback's result (it was recorded
# without it): the worker's own fault, never expected.
OUTCOME_NOT_STORED = "internal error: the callback's response could not be stored"
MAX_BATCH = 500
MAX_UNEXPECTED_FAILURES = 3
RETRY_DELAYS = (0.25, 0.5, 1, 2, 4, 5)  # then every 5 s while the database stays away


class GaveUp(Exception):
    """The database stayed away until the flush deadline at shutdown."""


class Completer(ThreadService):
    name = "completer"

    def __init__(self, pool, slots: SlotTable, notify: Callable[[FinishedTask], None], wake):
        super().__init__()
        self.pool = pool
        self.slots = slots
        self.notify = notify
        self.wake = wake
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_deadline: float | None = None  # set by stop(): retry no longer than this
        self.failures = 0

    def put(self, finished: Finished) -> None:
        self._queue.put(finished)

    def _wake(self) -> None:
        self._queue.put(None)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Write everything queued (retrying a missing database until `timeout`), then end."""
        self._flush_deadline = time.monotonic() + (timeout or 0)
        super().stop(timeout)

    def run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                try:
                    self.write(batch)
                    self.failures = 0
                except GaveUp:
                    self._give_up(batch, "database unreachable at shutdown")
                except Exception:
                    self.failures += 1
                    log.exception(
                        "writing outcomes failed; their leases will bring the tasks back",
                        extra={"fields": {"tasks": len(batch), "failures": self.failures}},
                    )
                    self._give_up(batch, None)
                    if self.failures >= MAX_UNEXPECTED_FAILURES:
                        return  # the process sees a dead completer and exits non-zero
            if self.stopping.is_set() and self._queue.empty():
                return

    def _take(self) -> list[Finished]:
        first = self._queue.get()
        batch = [] if first is None else [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                batch.append(item)
        return batch

    def _give_up(self, batch: list[Finished], reason: str | None) -> None:
        self.slots.writes_failing(False)  # left to their leases: claiming may go on
        self.slots.release([f.claim for f in batch])
        self.wake.set()
        if reason:
            log_event(
                log,
                "outcomes not written; their leases will bring the tasks back",
                logging.WARNING,
                tasks=len(batch),
                reason=reason,
            )

    # -- writing ---------------------------------------------------------------------------

    def write(self, batch: list[Finished]) -> None:
        retries = [f for f in batch if f.outcome.kind == RETRY]
        finals = [f for f in batch if f.outcome.kind != RETRY]
        if finals:
            metrics.observe_outcome_batch(len(finals))
        retried = set(self._write_retries(retries)) if retries else set()
        written = {r.id: r for r in self._write_finals(finals)} if finals else {}
        self.slots.release([f.claim for f in batch])
        self.wake.set()
        for f in retries:
            self._log(f, "retry scheduled" if f.claim.task_id in retried else None)
        for f in finals:
            done = written.get(f.claim.task_id)
            self._log(f, "task finished" if done is not None else None)
            if done is not None and done.on_complete_url:
                self.notify(done)

    def _log(self, f: Finished, message: str | None) -> None:
        claim, outcome = f.claim, f.outcome
        if message is None:
            log_event(
                log,
                "stale claim: another worker owns this task now; result discarded",
                logging.WARNING,
                task_id=str(claim.task_id),
            )
            return
        # One line per attempt at INFO, carrying what claim, attempt and outcome say.
        log_event(
            log,
            message,
            task_id=str(claim.task_id),
            team_id=str(claim.team_id),
            status=outcome.kind,
            attempt=claim.row.attempts,
            retry_count=claim.row.retry_count,
            status_code=f.status_code,
            duration_ms=f.duration_ms,
            error=outcome.error,
            retry_in=outcome.retry_in,
        )

    def _write_retries(self, items: list[Finished]) -> list:
        def params(items, keep_result=True):
            return claims_db.retry_params(
                (
                    f.claim.task_id,
                    f.claim.token,
                    f.outcome.result if keep_result else None,
                    f.outcome.error,
                    f.outcome.retry_in,
                )
                for f in items
            )

        try:
            return self._execute(claims_db.schedule_retries, params(items))
        except psycopg.DataError:
            # The database refused a result: the others are written one by one, so one bad
            # result does not cost them theirs; the refused one is kept without its result.
            if len(items) > 1:
                return [task_id for f in items for task_id in self._write_retries([f])]
        return self._execute(claims_db.schedule_retries, params(items, keep_result=False))

    def _write_finals(self, items: list[Finished]) -> list[FinishedTask]:
        """The rows written. An outcome the database refuses does not hold up the rest of its
        batch: the batch is written again one by one, and a refused one is recorded without its
        result."""

        def params(items):
            return claims_db.finish_params(
                (f.claim.task_id, f.claim.token, f.outcome.kind, f.outcome.result, f.outcome.error)
                for f in items
            )

        try:
            return self._execute(claims_db.finish, params(items))
        except psycopg.DataError:
            if len(items) > 1:
                return [r for f in items for r in self._write_final_alone(f)]
        (f,) = items
        log_event(
            log,
            "outcome refused by the database; recorded without its result",
            logging.ERROR,
            task_id=str(f.claim.task_id),
        )
        plain = replace(f, outcome=replace(f.outcome, result=None, error=OUTCOME_NOT_STORED))
        return self._execute(claims_db.finish, params([plain]))

    def _write_final_alone(self, f: Finished) -> list[FinishedTask]:
        """One outcome of a batch written again by itself. Each such write commits on its own, so
        one that then fails is logged and left to its lease (its task is still processing),
        rather than raised: that would drop the rows the others had already committed, and with
        them their onComplete, which nothing would bring back."""
        try:
            return self._write_finals([f])
        except Exception:
            log.exception(
                "writing an outcome failed; its lease will bring the task back",
                extra={"fields": {"task_id": str(f.claim.task_id)}},
            )
            return []

    def _execute(self, write: Callable, params: dict) -> list:
        """Run a write of db.claims, retrying while the connection fails (the write is
        idempotent, so a repeat after a lost reply is safe). Any other error is raised at once."""
        attempt = conflicts = 0
        while True:
            try:
                with self.pool.connection() as conn:
                    rows = write(conn, params)
                if attempt:
                    self.slots.writes_failing(False)
                return rows
            except Exception as exc:
                if not db_errors.worth_retrying(exc, conflicts):
                    raise
                if db_errors.classify(exc) == db_errors.CONFLICT:
                    conflicts += 1
                # No claims until these outcomes are written: their claims are still ours
                # however long the database is away, as long as nobody claims the tasks again.
                self.slots.writes_failing(True)
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                log_event(
                    log,
                    "recording outcomes failed; retrying",
                    logging.WARNING,
                    error=str(exc).strip(),
                    retry_in=delay,
                )
                if self._flush_deadline is not None and time.monotonic() + delay > (
                    self._flush_deadline
                ):
                    raise GaveUp from exc
                time.sleep(delay)
