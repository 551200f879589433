"""Per-team create limits shared by every web process: the maths, without I/O.

How the processes agree without a database write per request. Each web process counts, per
team and per second of the database's clock, the creates it admits and the creates it is asked
for (refused ones too), and every `SYNC_INTERVAL` syncs (`asyncqueue/create_limit.py` does that
I/O), one process at a time under an advisory lock: it writes its counts to an UNLOGGED table,
reads back the other processes' counts, the allowances they took at their last syncs and the
number of live web processes, and takes an allowance of its own, which it writes in the same
transaction. A request is then decided from memory:

* the team's rate over the last second is estimated as a sliding window from two fixed
  one-second buckets: `previous * (1 - elapsed part of this second) + current`, each bucket being
  this process's exact count plus the others' as of the last sync; a request that would take it
  past the plan's rate is refused, with the seconds until it would not be (Retry-After);
* and between two syncs a process admits at most its allowance: its part of the headroom (the
  rate less the estimate as it will be at the next sync) in proportion to its part of the
  team's requests in the last two seconds (plus one each, so a process the team has not used
  yet gets a little), and never more than what the other processes' allowances leave. Counts
  and allowances together never pass the rate, whatever the phases of the syncs: two processes
  cannot both spend the same headroom. Parts follow requests, not admissions, so a process that
  was short of allowance is not kept short.

A web process syncs as it boots (so the others count it before it serves), and a team new to a
process (its first create there, or back after `FORGET_AFTER`) gets no allowance until a sync
names it: its creates wait for the process's next sync (milliseconds). If no sync answers for
a second, a process decides on its own counts at `rate / live processes` (the team's plan as
last read).

Precision (tests/unit/test_ratelimit.py simulates 1 to 8 running processes syncing at their own
phases, a team sending 1, 4 or 30 times its rate from any point of a second, evenly spread,
lopsided, or all to one process): the processes never together pass what one would admit, but
the sliding window itself is an estimate: a flood that starts late in a second has that
second's creates taken as spread over all of it, and up to about 2 x the rate gets through in
the one-second span across the boundary (1.9 x with one process, 2.1 x at worst with four);
floods starting early in a second stay within 1.25 x. Sustained, a team sending more than its
rate gets 0.9 to 1.0 x the rate through one process, less spread evenly over many at a small
rate (0.65 x for 20 per second over 8 processes: each process's allowance is then a fraction
of one create). Counting in tenths of a second, with the oldest tenth taken whole, would bound
it by the rate: not done yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SYNC_INTERVAL = 0.2  # seconds between two syncs of a process's counts
STALE_AFTER = 1.0  # seconds without a sync after which a process decides on its own counts
FORGET_AFTER = 10.0  # seconds of no requests after which a team's counts are dropped
PLANS_REMEMBERED = 10_000  # teams whose plan a process keeps after forgetting their counts


@dataclass(frozen=True)
class TeamSync:
    """What a sync says of one team: its plan, and of the other live web processes their
    creates by second (the last two), the allowances they took at their last syncs and the
    creates they were asked for in the last two seconds."""

    plan: str | None
    others: dict[int, int] = field(default_factory=dict)
    allowance: float = 0.0
    wanted: int = 0


@dataclass
class TeamWindow:
    """One team's counts in one process."""

    plan: str | None = None  # unknown until the first sync that names it
    mine: dict[int, int] = field(default_factory=dict)  # second -> creates admitted here
    wanted: dict[int, int] = field(default_factory=dict)  # second -> creates asked for here
    others: dict[int, int] = field(default_factory=dict)  # second -> the other processes'
    synced: bool = False  # False until a sync has told this process the others' state
    share: float = 0.0  # creates this process may admit until the next sync (its allowance)
    used: int = 0  # creates charged to the allowance
    admitted: int = 0  # creates admitted here, ever: a sync marks it, to charge what follows
    last_seen: float = 0.0


@dataclass
class SyncResult:
    """A sync's decisions: made inside its transaction (what it writes: this process's counts
    and allowances), taken on by `apply_sync` once that commits."""

    now: float
    offset: float
    processes: int
    teams: dict[object, tuple[TeamSync, float, int]]  # team -> (answer, allowance, mark)
    counts: list[tuple[object, int, int, int]]
    allowances: list[tuple[object, float]]


def window_estimate(previous: float, current: float, elapsed: float) -> float:
    """Creates in the last second, from the previous and current one-second buckets."""
    return previous * (1.0 - elapsed) + current


def seconds_until_room(previous: float, current: float, elapsed: float, rate: float) -> float:
    """How long, with no more creates, until one more fits under `rate`."""
    excess = window_estimate(previous, current, elapsed) + 1 - rate
    if excess <= 0:
        return 0.0
    left = 1.0 - elapsed
    if previous > 0 and excess <= previous * left:
        return excess / previous
    if current <= 0 or current <= rate - 1:
        return left
    # After this second ends, `current` becomes the previous bucket and fades out over a second.
    return left + (1.0 - (rate - 1) / current)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; never 0, so a client does not retry in a tight loop."""
    return str(max(1, math.ceil(seconds)))


class CreateLimiter:
    """The decisions of one web process. Not thread-safe: the caller holds a lock.

    `rates` maps a plan to creates per second (a missing plan or None: unlimited). A team whose
    plan this process does not know yet (its first sync after the team's first create here, a
    few milliseconds later) is held to the most generous rate: a pro team's burst is not refused
    while a free team gets at most that sync's round trip of extra creates.
    """

    def __init__(self, rates: dict[str, float | None]):
        self.rates = dict(rates)
        limited = [r for r in rates.values() if r]
        self.unknown_plan_rate = max(limited) if len(limited) == len(rates) else None
        self.teams: dict[object, TeamWindow] = {}
        # Each team's plan as last read, kept when its window is forgotten after a pause: a
        # team back while syncs fail is held to its own plan's rate, not the most generous.
        self.plans: dict[object, str] = {}
        self.processes = 1
        self.offset = 0.0  # database clock - local clock
        self.synced_at = float("-inf")  # local time of the last sync
        self.started_at: float | None = None  # local time this process first decided

    def rate(self, window: TeamWindow) -> float | None:
        return self.rate_of(window.plan)

    def rate_of(self, plan: str | None) -> float | None:
        """Creates per second on `plan` (None: not known yet, the most generous rate)."""
        return self.unknown_plan_rate if plan is None else self.rates.get(plan)

    def stale_at(self) -> float:
        """When, with no sync meanwhile, this process decides on its own counts alone."""
        started = self.synced_at if self.started_at is None else self.started_at
        return max(self.synced_at, started) + STALE_AFTER

    def needs_sync(self, team_id, now: float) -> bool:
        """Whether a create of `team_id` should wait for a sync first: this process has not
        synced the team (it is new here, or back after a pause), so it does not know what the
        other processes may still admit; while the database answers syncs at all."""
        window = self.teams.get(team_id)
        if self.started_at is None:
            self.started_at = now
        # Syncs answer (or, in a process just started, may soon answer): worth waiting for.
        return now < self.stale_at() and (window is None or not window.synced)

    def track(self, team_id, now: float, plan: str | None = None) -> TeamWindow:
        """The team's window, made on first use (its plan, if known, until a sync says). Until
        a sync names the team, its allowance is nothing: this process cannot know what the
        others may still admit (creates of it wait for that sync; if the sync does not come in
        time, they are refused, unless the database is away altogether)."""
        window = self.teams.get(team_id)
        if plan is not None:
            self.plans[team_id] = plan
            while len(self.plans) > PLANS_REMEMBERED:
                del self.plans[next(iter(self.plans))]  # the oldest learnt
        if window is None:
            plan = self.plans.get(team_id)
            window = self.teams[team_id] = TeamWindow(plan=plan, last_seen=now)
        return window

    def admit(self, team_id, now: float) -> float | None:
        """Count a create and return None, or refuse it: the seconds to wait."""
        window = self.track(team_id, now)
        window.last_seen = now
        rate = self.rate(window)
        t = now + self.offset
        second, elapsed = int(t // 1), t % 1
        if rate:
            window.wanted[second] = window.wanted.get(second, 0) + 1
            if now >= self.stale_at():  # the database is away: our counts only
                previous = window.mine.get(second - 1, 0) * self.processes
                current = window.mine.get(second, 0) * self.processes
            else:
                previous = window.mine.get(second - 1, 0) + window.others.get(second - 1, 0)
                current = window.mine.get(second, 0) + window.others.get(second, 0)
                if window.used + 1 > window.share:
                    wait = max(
                        seconds_until_room(previous, current, elapsed, rate),
                        self.synced_at + SYNC_INTERVAL - now,
                    )
                    return max(wait, 0.001)
            wait = seconds_until_room(previous, current, elapsed, rate)
            if wait > 0:
                return wait
        window.mine[second] = window.mine.get(second, 0) + 1
        window.used += 1
        window.admitted += 1
        return None

    def second_of(self, now: float) -> int:
        """The second of the database's clock that `admit` at local time `now` counts in."""
        return int((now + self.offset) // 1)

    def undo(self, team_id, second: int) -> None:
        """Take back a create `admit` counted in `second` (the create did not happen)."""
        window = self.teams.get(team_id)
        if window is None:
            return
        if window.mine.get(second, 0) > 0:
            window.mine[second] -= 1
        # Given back to the allowance too: the counts the others saw, or will see, still hold
        # it until the next sync writes this process's counts without it.
        window.used = max(0, window.used - 1)
        window.admitted -= 1

    def _share(
        self, window: TeamWindow, now: float, offset: float, processes: int, answer: TeamSync
    ) -> float:
        """The allowance a sync gives this process for the team, from the sync's answer."""
        rate = self.rate_of(answer.plan)
        if not rate:
            return math.inf
        t = now + offset
        second, elapsed = int(t // 1), t % 1
        previous = window.mine.get(second - 1, 0) + answer.others.get(second - 1, 0)
        current = window.mine.get(second, 0) + answer.others.get(second, 0)
        # The window as it will be at the next sync (the previous second fades meanwhile).
        ahead = elapsed + SYNC_INTERVAL
        if ahead < 1:
            estimate = window_estimate(previous, current, ahead)
        else:
            estimate = window_estimate(current, 0, ahead - 1)
        # Each process's share follows its part of the team's recent requests, refused ones too
        # (a keep-alive client sends everything to one process; a process short of allowance
        # must not stay short because it admitted less), plus one request's worth per process
        # so a process the team has not used yet still gets some.
        wanted = sum(n for s, n in window.wanted.items() if s >= second - 1)
        weight = (wanted + 1) / (wanted + answer.wanted + max(1, processes))
        headroom = rate - estimate
        # What the others were allowed at their last syncs and may not have spent yet is not
        # ours to give: the allowances and the counts together never pass the rate.
        return max(0.0, min(headroom * weight, headroom - answer.allowance))

    def counts(self, now: float) -> list[tuple[object, int, int, int]]:
        """(team, second, creates admitted, creates asked for) for this process's recent
        seconds."""
        second = int((now + self.offset) // 1)
        return [
            (team, s, window.mine.get(s, 0), window.wanted.get(s, 0))
            for team, window in self.teams.items()
            for s in sorted(window.mine.keys() | window.wanted.keys())
            if s >= second - 1
        ]

    def prepare_sync(
        self, now: float, database_now: float, processes: int, teams: dict[object, TeamSync]
    ) -> SyncResult:
        """Decide a sync from its answer (the database's clock, the live web processes, and
        what it says of each team asked about), changing nothing yet. The counts it writes and
        the marks it takes are of the same moment: what this process admits from here on is
        charged to the new allowances, which the others see together with those counts."""
        offset = database_now - now
        decided = {
            team_id: (
                teams[team_id],
                self._share(window, now, offset, processes, teams[team_id]),
                window.admitted,
            )
            for team_id, window in self.teams.items()
            if team_id in teams  # else new since the sync read the teams: the next one's
        }
        allowances = [
            (team_id, decided[team_id][1] if team_id in decided else window.share)
            for team_id, window in self.teams.items()
        ]
        return SyncResult(
            now=now,
            offset=offset,
            processes=max(1, processes),
            teams=decided,
            counts=self.counts(now),
            allowances=[(t, a if math.isfinite(a) else 0.0) for t, a in allowances],
        )

    def apply_sync(self, result: SyncResult) -> None:
        """Take on a sync whose writes have committed."""
        self.offset, self.processes, self.synced_at = result.offset, result.processes, result.now
        second = int((result.now + result.offset) // 1)
        for team_id in list(self.teams):
            window = self.teams[team_id]
            if result.now - window.last_seen > FORGET_AFTER:
                del self.teams[team_id]
                continue
            if team_id not in result.teams:
                continue
            answer, share, mark = result.teams[team_id]
            if answer.plan is not None:
                self.plans[team_id] = answer.plan
            window.plan, window.others = answer.plan, dict(answer.others)
            window.synced, window.share = True, share
            window.used = max(0, window.admitted - mark)  # admitted since the counts were taken
            window.mine = {s: n for s, n in window.mine.items() if s >= second - 1}
            window.wanted = {s: n for s, n in window.wanted.items() if s >= second - 1}

    def synced(
        self, now: float, database_now: float, processes: int, teams: dict[object, TeamSync]
    ) -> SyncResult:
        """A sync prepared and applied at once (its writes cannot fail): the simulation's."""
        result = self.prepare_sync(now, database_now, processes, teams)
        self.apply_sync(result)
        return result
