"""The claims a worker holds and the slots their calls take (dispatcher, runner and completer
share them).

Slots are kept per claim (its token), not per task: a task claimed again by this worker after its
lease ran out is a different claim, and finishing the old one must not free the new one's slot.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from asyncqueue.db.rows import ClaimedTask


@dataclass(eq=False, slots=True)
class Claim:
    """One claim of one task by this worker: the claimed row, and where its call stands."""

    row: ClaimedTask
    claimed_monotonic: float
    running: bool = True  # its call is open (its slot is taken)
    cut: bool = False  # shutdown cut its call: hand the task back rather than record an outcome
    outcome_queued: bool = False  # its outcome went to the completer: never hand it back

    @property
    def token(self) -> uuid.UUID:
        return self.row.claim_token

    @property
    def task_id(self) -> uuid.UUID:
        return self.row.id

    @property
    def team_id(self) -> uuid.UUID:
        return self.row.team_id


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

    def add(self, rows: list[ClaimedTask]) -> list[Claim] | None:
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
