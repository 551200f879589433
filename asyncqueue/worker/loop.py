"""The worker process: claim due tasks, run their callbacks on a thread pool, record outcomes.

    dispatcher (main thread) ── claim batch (one short transaction) ──> executor threads
    executor thread ── HTTP attempt (no transaction open) ── decide ── record (fenced write)
    listener thread ── LISTEN ── wakes the dispatcher; it also wakes at the earliest next_run_at
    notifier threads ── POST onCompleteUrl, fire-and-forget

Shutdown (SIGTERM/SIGINT): stop claiming, let in-flight callbacks finish within the grace, hand
back what remains (due again at once, not failed), exit 0. A second signal exits at once; the
leases bring those tasks back.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from asyncqueue import db, limits
from asyncqueue.config import Settings
from asyncqueue.logs import log_event
from asyncqueue.task_json import completion_event
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.decide import (
    RETRY,
    TIMEOUT,
    Outcome,
    TaskState,
    attempt_time_limit,
    decide_outcome,
    max_wait_exceeded,
)
from asyncqueue.worker.execute import perform_attempt
from asyncqueue.worker.fairness import NotifyingEvent, TeamSlots  # fair-wiring
from asyncqueue.worker.http_client import make_session
from asyncqueue.worker.wakeup import Listener

log = logging.getLogger("asyncqueue.worker")

# What a task's error says when the database refused its callback's result (it was recorded
# without it): the worker's own fault, never expected.
OUTCOME_NOT_STORED = "internal error: the callback's response could not be stored"

# A safety net only: the dispatcher normally sleeps until a notification or the next due time.
MAX_IDLE_WAIT = 30.0


class Worker:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.concurrency = settings.worker_concurrency
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.pool = db.make_pool(
            settings.database_url,
            max(2, min(self.concurrency, 10)),
            name="asyncqueue-worker",
            timeout=10.0,
        )
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.teams = TeamSlots(self.concurrency, settings.fairness_reserve)  # fair-wiring
        notify = NotifyingEvent(self.wake, self.teams)  # fair-wiring
        self.listener = Listener(settings.database_url, notify, self.stopping)  # fair-wiring
        slots = self.concurrency + self.teams.reserve  # fair-wiring
        self.executor = ThreadPoolExecutor(slots, thread_name_prefix="callback")  # fair-wiring
        self.notifier = ThreadPoolExecutor(4, thread_name_prefix="on-complete")
        self._local = threading.local()
        # Claimed tasks whose outcome is not written yet: task id -> claim token. A task leaves
        # `_busy` (its slot) as soon as its call is over, and `_held` once its outcome is written,
        # so the next task starts while the completer is still writing the last one's outcome.
        self._held: dict[uuid.UUID, uuid.UUID] = {}
        self._busy: set[uuid.UUID] = set()
        self._held_lock = threading.Condition()
        self._notifications: set = set()
        self.completions: queue.Queue = queue.Queue()
        self.completer = threading.Thread(
            target=self._complete_batches, name="completer", daemon=True
        )

    # -- dispatcher ---------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        self.listener.start()
        self.completer.start()
        log_event(log, "worker started", worker=self.name, concurrency=self.concurrency)
        failures = 0
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                plan = self.teams.plan(self.free_slots())  # fair-wiring
                claimed = self._claim(plan) if plan.limit > 0 else []  # fair-wiring
                failures = 0
            except Exception as exc:  # database unreachable: wait and try again, never exit
                failures += 1
                delay = min(0.25 * 2**failures, 5.0)
                log_event(
                    log,
                    "claim failed; retrying",
                    logging.WARNING,
                    error=str(exc).strip(),
                    retry_in=delay,
                )
                self.stopping.wait(delay)
                continue
            for row in claimed:
                self.executor.submit(self._run_task, row)
            if plan.limit > 0 and len(claimed) == plan.limit:  # fair-wiring
                continue  # a full batch: more may be due right now
            self.wake.wait(self._idle_wait())
        return self._shutdown()

    def in_flight(self) -> int:
        with self._held_lock:
            return len(self._held)

    def free_slots(self) -> int:
        """Slots for new tasks: the concurrency less the calls running, and none while more
        outcomes wait to be written than there are slots (the database is falling behind)."""
        with self._held_lock:
            if len(self._held) - len(self._busy) >= self.concurrency:
                return 0
            return self.concurrency + self.teams.reserve - len(self._busy)  # fair-wiring

    def _claim(self, plan) -> list[dict]:  # fair-wiring: a ClaimPlan, not a count
        with self.pool.connection() as conn:
            rows = conn.execute(
                db.query("task_claim"),
                {
                    "limit": plan.limit,  # fair-wiring
                    "skip": list(plan.skip),  # fair-wiring
                    "grace": self.settings.lease_grace,
                    "worker": self.name,
                },
            ).fetchall()
        self.teams.claimed(plan, len(rows))  # fair-wiring
        with self._held_lock:
            for row in rows:
                row["_claimed_monotonic"] = time.monotonic()
                self._held[row["id"]] = row["claim_token"]
                self._busy.add(row["id"])
                self.teams.take(row["id"], row["team_id"])  # fair-wiring
        for row in rows:
            log_event(
                log,
                "task claimed",
                task_id=str(row["id"]),
                team_id=str(row["team_id"]),
                attempt=row["attempts"],
                status="processing",
            )
        return rows

    def _idle_wait(self) -> float:
        """Seconds to sleep: until the earliest next_run_at, unless woken sooner."""
        if self.free_slots() <= 0:
            return MAX_IDLE_WAIT  # a finishing callback wakes us
        if self.teams.capped():  # fair-wiring: others' work is looked for on its own schedule
            return self.teams.seconds_until_probe()  # fair-wiring
        try:
            with self.pool.connection() as conn:
                seconds = conn.execute(db.query("task_seconds_until_due")).fetchone()["seconds"]
        except Exception:
            return 1.0
        if seconds is None:
            return MAX_IDLE_WAIT
        return max(0.0, min(float(seconds), MAX_IDLE_WAIT))

    # -- one task -----------------------------------------------------------------------------

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = make_session(allow_private=self.settings.allow_private_networks)
            self._local.session = session
        return session

    def _run_task(self, row: dict) -> None:
        """Attempt the call and record the outcome. The task's slot is freed once the outcome
        is written (by the completer, for final outcomes)."""
        try:
            outcome = self._attempt(row)
        except Exception:
            log.exception(
                "task run failed; its lease will bring it back",
                extra={"fields": {"task_id": str(row["id"])}},
            )
            self._release([row])
            return
        self._record(row, outcome)

    def _db_now(self, row: dict) -> datetime:
        """Database time, extrapolated from the claim with this process's monotonic clock, so
        that deadlines set by one machine hold on another whatever their wall clocks say."""
        return row["claimed_at"] + timedelta(seconds=time.monotonic() - row["_claimed_monotonic"])

    def _attempt(self, row: dict) -> Outcome:
        state = TaskState(
            retry_count=row["retry_count"],
            max_retries=row["max_retries"],
            retry_backoff=row["retry_backoff"],
            max_wait_time=row["max_wait_time"],
            timeout=row["timeout"],
            deadline=row["deadline"],
        )
        time_limit = attempt_time_limit(state, self._db_now(row))
        if time_limit <= 0:  # reclaimed after its deadline (its worker died, say)
            return Outcome(TIMEOUT, result=row["result"], error=max_wait_exceeded(state))
        headers = dict(row["headers"])
        headers["X-AsyncQueue-Task-Id"] = str(row["id"])
        headers["X-AsyncQueue-Retry-Count"] = str(row["retry_count"])
        spec = CallSpec(
            method=row["method"], url=row["callback_url"], headers=headers, body=row["body"]
        )
        attempt = perform_attempt(
            self._session(), spec, Deadline.after(time_limit), self.settings.max_response_body
        )
        outcome = decide_outcome(
            state,
            attempt,
            limit_was_deadline=time_limit < state.timeout,
            now=self._db_now(row),
        )
        log_event(
            log,
            "attempt",
            task_id=str(row["id"]),
            team_id=str(row["team_id"]),
            attempt=row["attempts"],
            retry_count=row["retry_count"],
            status_code=attempt.status_code,
            error=attempt.error or ("timed out" if attempt.timed_out else None),
            duration_ms=attempt.duration_ms,
            outcome=outcome.kind,
        )
        return outcome

    def _record(self, row: dict, outcome: Outcome) -> None:
        """Write a retry now; hand a final outcome to the completer, which writes them in batches."""
        if outcome.kind != RETRY:
            self.completions.put((row, outcome))
            self._free_slot(row)
            return

        def schedule(result):
            params = {
                "id": row["id"],
                "claim_token": row["claim_token"],
                "result": Jsonb(result) if result is not None else None,
                "error": outcome.error,
                "delay": outcome.retry_in,
            }
            return self._with_retries(
                lambda conn: conn.execute(db.query("task_schedule_retry"), params).fetchall(),
                task_id=str(row["id"]),
            )

        try:
            written = schedule(outcome.result)
        except psycopg.DataError:  # the database refused the result: keep the retry without it
            written = schedule(None)
        self._release([row])
        if written is None:
            return
        if not written:
            self._log_stale(row)
            return
        log_event(
            log,
            "retry scheduled",
            task_id=str(row["id"]),
            team_id=str(row["team_id"]),
            retry=row["retry_count"] + 1,
            retry_in=outcome.retry_in,
            error=outcome.error,
        )

    def _with_retries(self, write, **fields):
        """Run `write(conn)`, retrying briefly while the database is away; None if it stays
        away (the lease then brings the task back: at-least-once). Data the database refuses
        (psycopg.DataError) is raised at once: writing it again would not help."""
        for delay in (0, 0.25, 0.5, 1, 2, 4, 8):
            if delay:
                time.sleep(delay)
            try:
                with self.pool.connection() as conn:
                    return write(conn)
            except psycopg.DataError:
                raise
            except Exception as exc:
                log_event(
                    log,
                    "recording outcome failed",
                    logging.WARNING,
                    error=str(exc).strip(),
                    **fields,
                )
        return None

    def _free_slot(self, row: dict) -> None:
        with self._held_lock:
            self._busy.discard(row["id"])
        self.teams.free(row["id"])  # fair-wiring
        self.wake.set()

    def _release(self, rows: list[dict]) -> None:
        with self._held_lock:
            for row in rows:
                self._held.pop(row["id"], None)
                self._busy.discard(row["id"])
                self.teams.free(row["id"])  # fair-wiring
            self._held_lock.notify_all()
        self.wake.set()

    def _log_stale(self, row: dict) -> None:
        log_event(
            log,
            "stale claim: another worker owns this task now; result discarded",
            logging.WARNING,
            task_id=str(row["id"]),
        )

    def _complete_batches(self) -> None:
        """The completer thread: write final outcomes in batches (one statement for all that
        have piled up), so that recording costs one round trip per batch, not per task."""
        while True:
            batch = [self.completions.get()]
            while len(batch) < 500:
                try:
                    batch.append(self.completions.get_nowait())
                except queue.Empty:
                    break
            written = self._write_outcomes(batch)
            self._release([row for row, _ in batch])
            if written is None:
                continue
            finished = {r["id"]: r for r in written}
            for row, outcome in batch:
                done = finished.get(row["id"])
                if done is None:
                    self._log_stale(row)
                    continue
                log_event(
                    log,
                    "task finished",
                    task_id=str(row["id"]),
                    team_id=str(row["team_id"]),
                    status=outcome.kind,
                    error=outcome.error,
                )
                if done["on_complete_url"]:
                    future = self.notifier.submit(self._notify_completion, done)
                    self._notifications.add(future)
                    future.add_done_callback(self._notifications.discard)

    def _write_outcomes(self, batch: list[tuple[dict, Outcome]]) -> list[dict] | None:
        """Write a batch of final outcomes; the rows written, or None if the database stayed
        away. An outcome the database refuses does not hold up the rest of its batch: the batch
        is written again one by one, and a refused one is recorded without its result."""

        def write(items):
            params = finish_params(
                (row["id"], row["claim_token"], outcome.kind, outcome.result, outcome.error)
                for row, outcome in items
            )
            return self._with_retries(
                lambda conn: conn.execute(db.query("task_finish_many"), params).fetchall(),
                tasks=len(items),
            )

        try:
            return write(batch)
        except psycopg.DataError:
            if len(batch) > 1:
                return [r for item in batch for r in (self._write_outcomes([item]) or [])]
        row, outcome = batch[0]
        log_event(
            log,
            "outcome refused by the database; recorded without its result",
            logging.ERROR,
            task_id=str(row["id"]),
        )
        return write([(row, replace(outcome, result=None, error=OUTCOME_NOT_STORED))])

    def _notify_completion(self, row: dict) -> None:
        spec = CallSpec(
            method="POST",
            url=row["on_complete_url"],
            headers={"Content-Type": "application/json", "X-AsyncQueue-Task-Id": str(row["id"])},
            body=json.dumps(completion_event(row)),
        )
        attempt = perform_attempt(
            self._session(), spec, Deadline.after(limits.ON_COMPLETE_TIMEOUT), 4096
        )
        if attempt.status_code is not None and attempt.status_code < 300:
            log_event(
                log, "onComplete delivered", task_id=str(row["id"]), status_code=attempt.status_code
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

    # -- shutdown -----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def handle(signum, _frame):
            if self.stopping.is_set():
                log_event(log, "second signal: exiting now", logging.WARNING)
                os._exit(1)
            log_event(
                log,
                "shutting down",
                signal=signal.Signals(signum).name,
                in_flight=self.in_flight(),
                grace=self.settings.shutdown_grace,
            )
            self.stopping.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.settings.shutdown_grace
        with self._held_lock:
            while self._held and time.monotonic() < deadline:
                self._held_lock.wait(timeout=max(0.0, deadline - time.monotonic()))
            held = dict(self._held)
        if held:
            try:
                with self.pool.connection() as conn:
                    conn.execute(
                        db.query("task_release"),
                        {"ids": list(held), "claim_tokens": list(held.values())},
                    ).fetchall()
                log_event(log, "handed back unfinished tasks", count=len(held))
            except Exception as exc:
                log_event(
                    log,
                    "could not hand back tasks; their leases will",
                    logging.WARNING,
                    count=len(held),
                    error=str(exc).strip(),
                )
        self.notifier.shutdown(wait=False)
        self._wait_for_notifier(max(0.0, deadline - time.monotonic()))
        log_event(log, "worker stopped", worker=self.name)
        logging.shutdown()
        # Threads still inside a callback cannot be interrupted; their tasks are handed back.
        os._exit(0)

    def _wait_for_notifier(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and self._notifications:
            time.sleep(0.05)


def finish_params(outcomes) -> dict:
    """task_finish_many's parameter from (id, claim_token, status, result, error) tuples."""
    return {
        "outcomes": Jsonb(
            [
                {
                    "id": str(task_id),
                    "claim_token": str(claim_token),
                    "status": status,
                    "result": result,
                    "error": error,
                }
                for task_id, claim_token, status, result, error in outcomes
            ]
        )
    }


def run_worker(settings: Settings) -> int:
    return Worker(settings).run()
