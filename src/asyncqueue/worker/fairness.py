"""Fairness between teams inside one worker: which claim to make, decided without I/O.

The rule. A worker runs `concurrency` slots for any one team, plus a small fairness `reserve`
of slots that only teams below that cap may use. So:

* a single team's drain keeps exactly `concurrency` calls in flight per worker (a drain is
  bound by its slots, so fewer for one team would slow it directly);
* a team whose calls hang can hold at most `concurrency` slots of a worker, and the reserve stays
  free for the other teams: team A's task starts while team B's flood holds every usual slot;
* it is per worker and needs no coordination: each worker decides from its own slots, so many
  workers on many machines claiming at once stay safe (the claim itself is SKIP LOCKED).

A claim must not take more of one team than its cap allows, and it does not know beforehand
whose rows it will get, so its size is at most the room the fullest uncapped team has left. Teams
at their cap are skipped by the claim (`task_claim_skipping` in `sql/queries/tasks.sql`, given them as
`skip`: one probe of the `tasks_team_due` index per team with unfinished tasks, never a walk
through the capped team's backlog).

Skipping a capped team costs a query that usually finds nothing (a single-team drain has its one
team at the cap most of the time), so it is made only when it may find something: after a
notification of new work, when the last one found some, or after `RECHECK_SECONDS` (for a
delayed task or a retry coming due, which sends no notification); and one that found nothing is
not repeated within `PROBE_INTERVAL` seconds, or ten times what it took if that is longer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

# The fewest seconds between two claims that skip a capped team and find nothing (each costs one
# index probe per team with unfinished tasks): a bound on what the probes cost, and on the extra
# start delay of another team's task while one team is at its cap.
PROBE_INTERVAL = 0.05
# ... and at least this many times as long as the last such claim took, so that however many
# teams hold unfinished tasks (each one a probe) the probes take at most a tenth of the time.
PROBE_SPACING = 10
# Claims that skip a capped team are made at least this often even when nothing announced work:
# another team's delayed task or retry, which comes due without a notification, waits no longer.
RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class ClaimPlan:
    """What to claim now: at most `limit` due rows, of teams other than those in `skip`."""

    limit: int
    skip: tuple = ()


def plan_claim(
    held: Mapping[Hashable, int], free: int, concurrency: int, reserve: int
) -> ClaimPlan:
    """The claim that keeps every team within `concurrency` slots of this worker.

    `held` is the slots each team holds now, `free` the slots free for new tasks (0 when the
    worker must not claim). With no reserve the rule is off: claim `free` rows of anybody.
    """
    if free <= 0:
        return ClaimPlan(0)
    if reserve <= 0:
        return ClaimPlan(free)
    skip = tuple(sorted((team for team, n in held.items() if n >= concurrency), key=str))
    fullest = max((n for n in held.values() if n < concurrency), default=0)
    return ClaimPlan(min(free, concurrency - fullest), skip)


def probe_due(
    now: float, last_probe: float, next_probe: float, notified: bool, interval: float
) -> bool:
    """Whether a claim skipping capped teams is worth making now (see the module's note)."""
    if now - last_probe < interval:
        return False
    return notified or now >= next_probe


class TeamSlots:
    """When to look past a capped team, given the slots each team holds in this worker (the
    dispatcher's slot table counts them; `held` is passed in).

    Thread-safe: the dispatcher plans claims, the listener notes notifications.
    """

    def __init__(self, concurrency: int, reserve: int, clock=time.monotonic):
        self.concurrency = concurrency
        self.reserve = max(0, reserve)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_probe = float("-inf")
        self._next_probe = 0.0
        self._notified = False
        self._skipped: tuple = ()
        self._probe_started = 0.0
        self._interval = PROBE_INTERVAL

    def notified(self) -> None:
        """New work was announced (NOTIFY): it may belong to a team that is not capped."""
        with self._lock:
            self._notified = True

    def plan(self, free: int, held: Mapping[Hashable, int]) -> ClaimPlan:
        """The claim to make now; limit 0 when only capped teams' work could be claimed and
        looking past them is not due yet."""
        with self._lock:
            plan = plan_claim(held, free, self.concurrency, self.reserve)
            if not plan.skip or plan.limit <= 0:
                return plan
            now = self._clock()
            if plan.skip != self._skipped:  # another team reached its cap: look at once
                self._skipped, self._next_probe = plan.skip, now
            if not probe_due(
                now, self._last_probe, self._next_probe, self._notified, self._interval
            ):
                return ClaimPlan(0, plan.skip)
            self._last_probe, self._probe_started, self._notified = now, now, False
            self._next_probe = now + RECHECK_SECONDS
            return plan

    def claimed(self, plan: ClaimPlan, rows: int) -> None:
        """After a claim: one that skipped capped teams and found work may be followed by
        another at once (the other teams may have more)."""
        if not plan.skip:
            return
        with self._lock:
            took = self._clock() - self._probe_started
            self._interval = max(PROBE_INTERVAL, PROBE_SPACING * took)
            if rows > 0:
                self._last_probe = float("-inf")
                self._next_probe = self._clock()

    def capped(self, held: Mapping[Hashable, int]) -> bool:
        return self.reserve > 0 and any(n >= self.concurrency for n in held.values())

    def seconds_until_probe(self) -> float:
        """How long the dispatcher may sleep while a team is capped (a notification or a freed
        slot wakes it sooner)."""
        with self._lock:
            now = self._clock()
            due = max(self._next_probe, self._last_probe + self._interval)
            if self._notified:
                due = self._last_probe + self._interval
            return max(0.0, due - now)


class NotifyingEvent:
    """What the LISTEN thread sets on a notification: wakes the dispatcher (`wake`) and tells
    `slots` that new work was announced."""

    def __init__(self, wake: threading.Event, slots: TeamSlots):
        self._wake, self._slots = wake, slots

    def set(self) -> None:
        self._slots.notified()
        self._wake.set()
