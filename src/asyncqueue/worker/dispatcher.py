"""The dispatcher: claim due tasks into free slots (worker/slots.py), and sleep well when there
is nothing to do."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from asyncqueue.db import claims as claims_db
from asyncqueue.db import errors as db_errors
from asyncqueue.db.rows import ClaimedTask
from asyncqueue.logs import log_event
from asyncqueue.worker import metrics
from asyncqueue.worker.claim_plans import KeptPlans, claim_batch
from asyncqueue.worker.fairness import ClaimPlan, TeamSlots
from asyncqueue.worker.service import ThreadService
from asyncqueue.worker.slots import Claim, SlotTable

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


def claim_rows(
    conn, plan: ClaimPlan, *, worker: str, grace: float, replan: bool = False
) -> list[ClaimedTask]:
    """Run the claim `plan` asks for (db.claims.claim): task_claim when no team is at its cap (a
    single-team drain, every pickup), else task_claim_skipping past the capped teams. Two
    queries rather than one with both branches: the plain claim is planned in a third of the
    time, and only it is prepared (claim_plans.py keeps its plans fresh)."""
    params = {"limit": plan.limit, "skip": list(plan.skip), "worker": worker, "grace": grace}
    return claims_db.claim(conn, params, replan=replan)


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

    @property
    def claimer(self) -> dict:
        """Who claims, and the lease's grace: task_claim's parameters besides the plan's."""
        return {"worker": self.worker_name, "grace": self.lease_grace}

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
                rows = claim_rows(conn, plan, **self.claimer)
            else:
                replan = self.plans.stale(conn)
                started = time.monotonic()
                try:
                    rows = claim_rows(conn, plan, **self.claimer, replan=bool(replan))
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
                    attempt=claim.row.attempts,
                )
        return claims

    def hand_back(self, conn, rows: list[ClaimedTask]) -> None:
        if not rows:
            return
        claims_db.release(conn, ((r.id, r.claim_token) for r in rows))
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
            seconds, next_seconds = claims_db.seconds_until_due(conn)
        wait, self._stuck_rounds = idle_wait(seconds, next_seconds, self._stuck_rounds)
        return wait
