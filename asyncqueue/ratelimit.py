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
process (its first create there, or back after `FORGET_AFTER`) waits for the process's next
sync before its first decision (milliseconds), so that it too knows what the others may still
admit. If no sync answers within a second, a process decides on its own counts at
`rate / live processes`.

Precision (tests/unit/test_ratelimit.py simulates 1 to 8 running processes syncing at their own
phases, a team sending 1, 4 or 30 times its rate, evenly spread, lopsided, or all to one
process): the most admitted in any one second stayed within 1.25 x the rate whatever the number
of processes (the sliding window takes a burst just before a second's end as spread over that
second), 1.07 x with all of a team's requests on one process. A team sending more than its rate
gets 0.9 to 1.0 x the rate through one process; spread evenly over many processes at a small
rate it gets less (0.6 x for 20 per second over 8 processes: each process's allowance is then a
fraction of one create). Sending half its rate, a team is refused nothing at 500 per second and
up to 22 % of its requests at 20 per second spread over 8 processes (up to 8 % over 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SYNC_INTERVAL = 0.2  # seconds between two syncs of a process's counts
STALE_AFTER = 1.0  # seconds without a sync after which a process decides on its own counts
FORGET_AFTER = 10.0  # seconds of no requests after which a team's counts are dropped


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
    others_allowance: float = 0.0  # what the other live processes may admit before their syncs
    others_wanted: int = 0  # creates the other processes were asked for in the last two seconds
    synced: bool = False  # False until a sync has told this process the others' state
    share: float = 0.0  # creates this process may admit until the next sync (its allowance)
    used: int = 0  # creates admitted since the last sync
    last_seen: float = 0.0


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
        self.processes = 1
        self.offset = 0.0  # database clock - local clock
        self.synced_at = float("-inf")  # local time of the last sync
        self.started_at: float | None = None  # local time this process first decided

    def rate(self, window: TeamWindow) -> float | None:
        return self.unknown_plan_rate if window.plan is None else self.rates.get(window.plan)

    def needs_sync(self, team_id, now: float) -> bool:
        """Whether a create of `team_id` should wait for a sync first: this process has not
        synced the team (it is new here, or back after a pause), so it does not know what the
        other processes may still admit; while the database answers syncs at all."""
        window = self.teams.get(team_id)
        if self.started_at is None:
            self.started_at = now
        # Syncs answer (or, in a process just started, may soon answer): worth waiting for.
        fresh = now - max(self.synced_at, self.started_at) <= STALE_AFTER
        return fresh and (window is None or not window.synced)

    def track(self, team_id, now: float, plan: str | None = None) -> TeamWindow:
        """The team's window, made on first use (its plan, if known, until a sync says): until
        a sync names the team, its share is an equal part of the headroom (used only when the
        sync it waits for does not come)."""
        window = self.teams.get(team_id)
        if window is None:
            window = self.teams[team_id] = TeamWindow(plan=plan, last_seen=now)
            window.share = self._share(window, now)
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
            if now - self.synced_at > STALE_AFTER:  # the database is away: our counts only
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
        window.used = max(0, window.used - 1)

    def _share(self, window: TeamWindow, now: float) -> float:
        rate = self.rate(window)
        if not rate:
            return math.inf
        t = now + self.offset
        second, elapsed = int(t // 1), t % 1
        previous = window.mine.get(second - 1, 0) + window.others.get(second - 1, 0)
        current = window.mine.get(second, 0) + window.others.get(second, 0)
        ahead = elapsed + SYNC_INTERVAL
        if ahead < 1:
            estimate = window_estimate(previous, current, ahead)
        else:
            estimate = window_estimate(current, 0, ahead - 1)
        # Each process's share follows its part of the team's recent requests, refused ones too
        # (a keep-alive client sends everything to one process; a process short of allowance
        # must not stay short because it admitted less), plus one request's worth per process
        # so a process the team has not used yet still gets some.
        wanted = sum(window.wanted.values())
        weight = (wanted + 1) / (wanted + window.others_wanted + max(1, self.processes))
        headroom = rate - estimate
        if not window.synced:
            # No sync has said what the others may still admit: an equal part of the headroom.
            return max(0.0, headroom / max(1, self.processes))
        # What the others were allowed at their last syncs and may not have spent yet is not
        # ours to give: the allowances and the counts together never pass the rate.
        return max(0.0, min(headroom * weight, headroom - window.others_allowance))

    def allowances(self) -> list[tuple[object, float]]:
        """(team, creates this process may admit until its next sync), for every team it
        knows: what a sync writes for the others to leave alone."""
        return [
            (team, window.share if math.isfinite(window.share) else 0.0)  # unlimited: moot
            for team, window in self.teams.items()
        ]

    def counts(self, now: float) -> list[tuple[object, int, int, int]]:
        """(team, second, creates admitted, creates asked for) for this process's recent
        seconds: what a sync writes."""
        second = int((now + self.offset) // 1)
        return [
            (team, s, window.mine.get(s, 0), window.wanted.get(s, 0))
            for team, window in self.teams.items()
            for s in sorted(window.mine.keys() | window.wanted.keys())
            if s >= second - 1
        ]

    def synced(
        self,
        now: float,
        database_now: float,
        processes: int,
        teams: dict[object, TeamSync],
    ) -> None:
        """Take in a sync's answer: the database's clock, the live web processes, and what it
        says of each team asked about. Then `allowances()` is what this sync must write."""
        self.offset = database_now - now
        self.processes = max(1, processes)
        self.synced_at = now
        second = int(database_now // 1)
        for team_id in list(self.teams):
            window = self.teams[team_id]
            if now - window.last_seen > FORGET_AFTER:
                del self.teams[team_id]
                continue
            if team_id not in teams:
                continue  # new since this sync read the teams: left for the next sync
            answer = teams[team_id]
            window.plan, window.others = answer.plan, dict(answer.others)
            window.others_allowance, window.others_wanted = answer.allowance, answer.wanted
            window.synced = True
            window.mine = {s: n for s, n in window.mine.items() if s >= second - 1}
            window.wanted = {s: n for s, n in window.wanted.items() if s >= second - 1}
            window.used = 0
            window.share = self._share(window, now)
