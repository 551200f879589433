"""The dispatcher: claim due tasks into free slots, and sleep well when there is nothing to do.

Slots are kept per claim (its token), not per task: a task claimed again by this worker after its
lease ran out is a different claim, and finishing the old one must not free the new one's slot.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from asyncqueue import db, db_errors
from asyncqueue.logs import log_event
from asyncqueue.worker import metrics
from asyncqueue.worker.claim_plans import KeptPlans, claim_batch, plain_claim_text
from asyncqueue.worker.fairness import ClaimPlan, TeamSlots
from asyncqueue.worker.service import ThreadService

log = logging.getLogger("asyncqueue.worker")

# A safety net only: the dispatcher normally sleeps until a notification or the next due time.
MAX_IDLE_WAIT = 30.0
# When something is due but the claim got nothing (another session holds the row), the next
# look waits 0, then FLOOR_START doubling up to FLOOR_MAX: a row that merely became due between
# the claim and the look is taken at once, one held for long costs a claim a second, not a spin.
FLOOR_START = 0.01
FLOOR_MAX = 1.0
# Claims that fail for a reason other than the database being away (a bug) are retried this
# many times in a row before the dispatcher gives up and the process exits non-zero.
MAX_UNEXPECTED_FAILURES = 5


@dataclass(eq=False, slots=True)
class Claim:
    """One claim of one task by this worker: the claimed row, and where its call stands."""

    row: dict
    claimed_monotonic: float
    running: bool = True  # its call is open (its slot is taken)
    cut: bool = False  # shutdown cut its call: hand the task back rather than record an outcome
    outcome_queued: bool = False  # its outcome went to the completer: never hand it back

    @property
    def token(self) -> uuid.UUID:
        return self.row["claim_token"]

    @property
    def task_id(self) -> uuid.UUID:
        return self.row["id"]

    @property
    def team_id(self) -> uuid.UUID:
        return self.row["team_id"]


class SlotTable:
    """The claims this worker holds, by claim token. A claim takes a slot while its call runs and
    stays held until its outcome is written, so that the next call starts while the completer is
    still writing the last one's outcome."""

    def __init__(self, concurrency: int, reserve: int = 0):
        self.concurrency = concurrency
        # Slots beyond the concurrency that only teams below their cap may use (fairness.py).
        self.reserve = reserve
        self._cond = threading.Condition()
        self._claims: dict[uuid.UUID, Claim] = {}
        self._running = 0
        self._running_by_team: Counter = Counter()
        # No new claims while set: the completer holds outcomes it could not write (a claim now
        # could take back a task whose lease ran out meanwhile, and the fence would then throw
        # its written-to-be outcome away), or the process is shutting down.
        self._writes_failing = False
        self._closed = False

    def add(self, rows: list[dict]) -> list[Claim] | None:
        """Hold these claimed rows; None (nothing held) once the table is closed: the caller
        hands the rows back."""
        now = time.monotonic()
        claims = [Claim(row, now) for row in rows]
        with self._cond:
            if self._closed:
                return None
            for claim in claims:
                self._claims[claim.token] = claim
                self._running_by_team[claim.team_id] += 1
            self._running += len(claims)
        return claims

    def call_ended(self, claim: Claim) -> None:
        """Free the claim's slot; it stays held until release()."""
        with self._cond:
            if claim.running and self._claims.get(claim.token) is claim:
                self._end_call(claim)
            self._cond.notify_all()

    def release(self, claims) -> None:
        """Forget these claims (outcome written, handed back, or left to their leases)."""
        with self._cond:
            for claim in claims:
                if self._claims.get(claim.token) is not claim:
                    continue
                if claim.running:
                    self._end_call(claim)
                del self._claims[claim.token]
            self._cond.notify_all()

    def _end_call(self, claim: Claim) -> None:
        claim.running = False
        self._running -= 1
        self._running_by_team[claim.team_id] -= 1
        if not self._running_by_team[claim.team_id]:
            del self._running_by_team[claim.team_id]

    def close(self) -> None:
        """Refuse new claims from now on (at shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def writes_failing(self, failing: bool) -> None:
        """Set by the completer: whether it holds outcomes its last write could not store."""
        with self._cond:
            self._writes_failing = failing
            self._cond.notify_all()

    def free(self) -> int:
        """Slots for new claims: the concurrency and the fairness reserve less the calls running;
        none while more outcomes wait to be written than there are slots (the database is
        falling behind), while the completer's writes are failing, or once the table is closed."""
        with self._cond:
            if self._closed or self._writes_failing:
                return 0
            if len(self._claims) - self._running >= self.concurrency:
                return 0
            return max(0, self.concurrency + self.reserve - self._running)

    def held(self) -> int:
        with self._cond:
            return len(self._claims)

    def running(self) -> list[Claim]:
        with self._cond:
            return [c for c in self._claims.values() if c.running]

    def claims(self) -> list[Claim]:
        with self._cond:
            return list(self._claims.values())

    def running_by_team(self) -> dict[uuid.UUID, int]:
        """Calls in flight per team (for fair claiming and metrics): a copy, kept as claims come
        and go, so asking costs nothing per task."""
        with self._cond:
            return dict(self._running_by_team)

    def wait_until(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait until `predicate()` (called with the table locked) or the monotonic deadline."""
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def no_calls_running(self) -> bool:
        return self._running == 0


def idle_wait(
    seconds: float | None, next_seconds: float | None, stuck_rounds: int
) -> tuple[float, int]:
    """How long an idle dispatcher sleeps (unless woken), and its new count of rounds in which
    something was due that the claim could not take.

    `seconds` is until the earliest next_run_at (None: nothing waits), `next_seconds` until the
    earliest one still in the future. Due work the claim did not get is held by another session;
    looking again at once would spin, so the wait grows from 0 to FLOOR_MAX, never past the next
    future due time."""
    if seconds is None:
        return MAX_IDLE_WAIT, 0
    if seconds > 0:
        return min(seconds, MAX_IDLE_WAIT), 0
    floor = 0.0 if stuck_rounds == 0 else min(FLOOR_START * 2 ** (stuck_rounds - 1), FLOOR_MAX)
    if next_seconds is not None:
        floor = min(floor, max(0.0, next_seconds))
    return floor, stuck_rounds + 1


def claim_limit(plan: ClaimPlan, free: int) -> int:
    """The rows a claim asks for, with `free` slots: the plain claim in batches (claim_batch)."""
    limit = min(plan.limit, free)
    return limit if plan.skip else claim_batch(limit)


def claim_rows(conn, plan: ClaimPlan, params: dict, *, replan: bool = False) -> list[dict]:
    """Run the claim `plan` asks for: task_claim when no team is at its cap (a single-team drain,
    every pickup), else task_claim_skipping past the capped teams. Two queries rather than one
    with both branches: the plain claim is planned in a third of the time.

    Only the plain claim is prepared (the worker's connections prepare nothing unasked,
    process.py), its LIMIT written in: PostgreSQL may keep a plan of it (claim_plans.py);
    `replan` sends `DISCARD PLANS` before it, in the same round trip. task_claim_skipping is
    planned afresh each time: a generic plan of it may seq-scan tasks."""
    if plan.skip:
        return conn.execute(db.query("task_claim_skipping"), params).fetchall()
    text = plain_claim_text(plan.limit)
    if not replan:
        return conn.execute(text, params, prepare=True).fetchall()
    with conn.pipeline():
        conn.execute("DISCARD PLANS")
        cursor = conn.execute(text, params, prepare=True)
    return cursor.fetchall()


class Dispatcher(ThreadService):
    """Claims due tasks into free slots and hands them to `run` (the runner)."""

    name = "dispatcher"

    def __init__(
        self,
        pool,
        slots: SlotTable,
        run: Callable[[list[Claim]], None],
        wake: threading.Event,
        *,
        worker_name: str,
        lease_grace: float,
        fairness: TeamSlots | None = None,
        plans: KeptPlans | None = None,
    ):
        super().__init__()
        self.fairness = fairness or TeamSlots(slots.concurrency, 0)
        self.pool = pool
        self.slots = slots
        self.run_claims = run
        self.wake = wake
        self.worker_name = worker_name
        self.lease_grace = lease_grace
        self.plans = plans or KeptPlans()
        self._stuck_rounds = 0

    def _wake(self) -> None:
        self.wake.set()

    def run(self) -> None:
        db_failures = unexpected = conflicts = 0
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                plan = self.fairness.plan(self.slots.free(), self.slots.running_by_team())
                limit = claim_limit(plan, plan.limit)
                claimed = self.claim(plan) if limit > 0 else []
                if claimed:
                    self.run_claims(claimed)
                full = limit > 0 and len(claimed) == limit
                wait = 0.0 if full else self._idle_wait(bool(claimed))
                db_failures = unexpected = conflicts = 0
            except Exception as exc:
                if not db_errors.worth_retrying(exc, conflicts):
                    unexpected += 1
                    log.exception("dispatcher error", extra={"fields": {"failures": unexpected}})
                    if unexpected >= MAX_UNEXPECTED_FAILURES:
                        return  # the process sees a dead dispatcher and exits non-zero
                    self.stopping.wait(1.0)
                    continue
                # Database away (or a conflict, a few times): wait and try again.
                if db_errors.classify(exc) == db_errors.CONFLICT:
                    conflicts += 1
                db_failures += 1
                wait = min(0.25 * 2**db_failures, 5.0)
                log_event(
                    log,
                    "claim failed; retrying",
                    logging.WARNING,
                    error=str(exc).strip(),
                    retry_in=wait,
                )
                self.stopping.wait(wait)
                continue
            if wait > 0:
                self.wake.wait(wait)

    def claim_params(self, plan: ClaimPlan) -> dict:
        """task_claim's parameters: how many rows, and the teams at their cap to skip."""
        return {
            "limit": plan.limit,
            "skip": list(plan.skip),
            "grace": self.lease_grace,
            "worker": self.worker_name,
        }

    def claim(self, plan: ClaimPlan | int) -> list[Claim]:
        if isinstance(plan, int):
            plan = ClaimPlan(plan)
        with self.pool.connection() as conn:
            # Looked at again once a connection is had (waiting for one can take a while, and
            # meanwhile the completer's writes may have started failing, or shutdown begun).
            limit = claim_limit(plan, self.slots.free())
            if limit <= 0:
                return []
            if limit != plan.limit:
                plan = ClaimPlan(limit, plan.skip)
            if plan.skip:
                rows = claim_rows(conn, plan, self.claim_params(plan))
            else:
                replan = self.plans.stale(conn)
                started = time.monotonic()
                try:
                    rows = claim_rows(conn, plan, self.claim_params(plan), replan=bool(replan))
                finally:  # a claim that failed counts too: one a statement_timeout cancelled
                    self.plans.observe(conn, time.monotonic() - started)
                if replan:
                    self.plans.made(conn, replan)
            self.fairness.claimed(plan, len(rows))
            metrics.observe_claim(len(rows))
            claims = self.slots.add(rows)
            if claims is None:  # shutdown began during the claim: give the rows straight back
                self.hand_back(conn, rows)
                return []
        if claims and log.isEnabledFor(logging.DEBUG):
            for claim in claims:
                log_event(
                    log,
                    "task claimed",
                    logging.DEBUG,
                    task_id=str(claim.task_id),
                    team_id=str(claim.team_id),
                    attempt=claim.row["attempts"],
                )
        return claims

    def hand_back(self, conn, rows: list[dict]) -> None:
        if not rows:
            return
        conn.execute(
            db.query("task_release"),
            {"ids": [r["id"] for r in rows], "claim_tokens": [r["claim_token"] for r in rows]},
        ).fetchall()
        log_event(log, "handed back tasks claimed during shutdown", count=len(rows))

    def _idle_wait(self, claimed_any: bool) -> float:
        """Seconds to sleep: until the earliest next_run_at, unless woken sooner."""
        if claimed_any:
            self._stuck_rounds = 0
        if self.slots.free() <= 0:
            return MAX_IDLE_WAIT  # a call ending wakes us
        if self.fairness.capped(self.slots.running_by_team()):
            # Others' work is looked for on its own schedule (a notification wakes us sooner).
            return self.fairness.seconds_until_probe()
        with self.pool.connection() as conn:
            row = conn.execute(db.query("task_seconds_until_due")).fetchone()
        seconds, next_seconds = row["seconds"], row["next_seconds"]
        wait, self._stuck_rounds = idle_wait(
            None if seconds is None else float(seconds),
            None if next_seconds is None else float(next_seconds),
            self._stuck_rounds,
        )
        return wait
