"""Per-team create limits shared by every web process: the maths, without I/O.

How the processes agree without a database write per request. Each web process counts the
creates it admits, per team and per second of the database's clock, and every `SYNC_INTERVAL`
writes its counts to an UNLOGGED table and reads back the other processes' counts and the number
of live web processes (`asyncqueue/create_limit.py` does that I/O). A request is then decided
from memory:

* the team's rate over the last second is estimated as a sliding window from two fixed
  one-second buckets: `previous * (1 - elapsed part of this second) + current`, each bucket being
  this process's exact count plus the others' as of the last sync; a request that would take it
  past the plan's rate is refused, with the seconds until it would not be (Retry-After);
* and between two syncs one process admits at most its share of the headroom it saw at the last
  sync: the headroom split between the live processes in proportion to each one's part of the
  team's creates in the last two seconds (plus one each, so a process the team has not used yet
  gets a little), so that processes which have not yet seen each other's latest counts cannot
  each spend the whole headroom, while one that gets all of a team's traffic gets nearly all.

Precision (tests/unit/test_ratelimit.py simulates 1 to 8 running processes syncing at their own
phases, a team sending 4 or 30 times its rate, evenly spread, lopsided, or all to one process):
the most admitted in any one second was 1.1 x the rate with one process, 1.6 x with two, 2.2 x
with four and 2.6 x with eight, when a team's burst is spread over them (what they admit on
counts up to one sync old); with all of a team's requests on one process, 1.0 x whatever the
number of processes. The sustained rate stayed within 20 % of the limit. Also: a process that
has not synced yet (the first milliseconds after it starts) decides on its own counts; if the
database is unreachable for longer than `STALE_AFTER`, each process falls back to
`rate / live processes` on its own counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SYNC_INTERVAL = 0.2  # seconds between two syncs of a process's counts
STALE_AFTER = 1.0  # seconds without a sync after which a process decides on its own counts
FORGET_AFTER = 10.0  # seconds of no requests after which a team's counts are dropped


@dataclass
class TeamWindow:
    """One team's counts in one process."""

    plan: str | None = None  # unknown until the first sync that names it
    mine: dict[int, int] = field(default_factory=dict)  # second -> creates admitted here
    others: dict[int, int] = field(default_factory=dict)  # second -> the other processes'
    others_active: int = 0  # other processes that admitted creates of this team lately
    share: float = 0.0  # creates this process may admit until the next sync
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

    def rate(self, window: TeamWindow) -> float | None:
        return self.unknown_plan_rate if window.plan is None else self.rates.get(window.plan)

    def admit(self, team_id, now: float) -> float | None:
        """Count a create and return None, or refuse it: the seconds to wait."""
        window = self.teams.get(team_id)
        if window is None:
            window = self.teams[team_id] = TeamWindow()
            window.share = self._share(window, now)
        window.last_seen = now
        rate = self.rate(window)
        t = now + self.offset
        second, elapsed = int(t // 1), t % 1
        if rate:
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
        estimate = window_estimate(
            window.mine.get(second - 1, 0) + window.others.get(second - 1, 0),
            window.mine.get(second, 0) + window.others.get(second, 0),
            elapsed,
        )
        # Each process's share follows its part of the team's recent traffic (a keep-alive
        # client sends everything to one process), plus one create's worth per process so a
        # process the team has not used yet still gets some; the shares add up to the headroom.
        # The others' counts may be a sync behind (a burst they have not written yet), so each
        # process known to be serving the team is assumed to have admitted at least as many as
        # this one: without that, every process seeing only its own burst takes nearly all.
        mine = sum(window.mine.values())
        everyone = max(mine + sum(window.others.values()), mine * (1 + window.others_active))
        weight = (mine + 1) / (everyone + max(1, self.processes))
        return max(0.0, rate - estimate) * weight

    def counts(self, now: float) -> list[tuple[object, int, int]]:
        """(team, second, creates) for this process's recent seconds: what a sync writes."""
        second = int((now + self.offset) // 1)
        return [
            (team, s, n)
            for team, window in self.teams.items()
            for s, n in window.mine.items()
            if s >= second - 1
        ]

    def synced(
        self,
        now: float,
        database_now: float,
        processes: int,
        teams: dict[object, tuple[str, dict[int, int], int]],
    ) -> None:
        """Take in a sync's answer: the database's clock, the live web processes, and for each
        team asked about its plan, the other processes' counts by second and how many of them
        admitted any."""
        self.offset = database_now - now
        self.processes = max(1, processes)
        self.synced_at = now
        second = int(database_now // 1)
        for team_id in list(self.teams):
            window = self.teams[team_id]
            if now - window.last_seen > FORGET_AFTER:
                del self.teams[team_id]
                continue
            plan, others, active = teams.get(team_id, (window.plan, {}, 0))
            window.plan, window.others, window.others_active = plan, dict(others), active
            window.mine = {s: n for s, n in window.mine.items() if s >= second - 1}
            window.used = 0
            window.share = self._share(window, now)
