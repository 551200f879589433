"""Per-team create limits shared by every web process: the maths, without I/O.

The rule. A create is refused only if the team would then have made more than `m x rate` creates
within the last `m - CLIENT_JITTER` seconds, for m = 1 or 2 (`WINDOWS`), counted in tenths of a
second of the database's clock (`window_tenths`). So a client that never sends more than `rate`
in any one second, as its own clock sees it, is never refused, even when some of its creates
reach the server up to CLIENT_JITTER late. The bound this gives: at most 2 x rate in any
one-second span, and 1.11 x rate sustained (2 x rate per 1.8 s).

How the processes agree without a database write per create. Each process counts, per team and
tenth, the creates it admits and those it is asked for, and every `SYNC_INTERVAL` syncs
(api/create_limits.py does the I/O), one process at a time under an advisory lock: it writes its
counts, reads the others' counts, their allowances and the number of live processes, and takes
an allowance of its own in the same transaction. A create is then decided from memory on a
lower bound of the team's counts (its own exact, the others' as of their last syncs):

* over the rule on that lower bound: refused, with the seconds until it would not be;
* within this process's allowance: admitted. An allowance is the process's part of the team's
  headroom, in proportion to its part of the team's requests, and never more than the others'
  allowances leave: counts and allowances together never pass the rule;
* else: the create waits for a sync, started at once and shared by every create waiting, which
  decides it on fresh counts and writes it under the lock for the next process's sync to see.

The only creates no sync has seen are those admitted within allowances, which add up to at most
the room the rule left when they were taken. A process syncs as it boots, so the others count it
before it serves; a team new to a process gets no allowance until a sync names it. While syncs
fail a waiting create goes on waiting, until none has answered for `STALE_AFTER`; the process
then decides alone at `rate / live processes`. A quiet team's decision (no counts in the window,
the same answer and process count) is reused, so a sync costs what the active teams cost.

docs/guarantees.md ("Create limits") states the bounds, checked by the simulation in
tests/unit/test_create_limiter.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SYNC_INTERVAL = 0.2  # seconds between two syncs of a process's counts
STALE_AFTER = 1.0  # seconds without a sync after which a process decides on its own counts
FORGET_AFTER = 10.0  # seconds of no requests after which a team's counts are dropped
PLANS_REMEMBERED = 10_000  # teams whose plan a process keeps after forgetting their counts
TENTHS = 10  # counting buckets per second
# How much later than its others a client's create may reach the server and still be counted as
# the client sent it: each window counts creates that arrived within less than a second minus it.
CLIENT_JITTER = 0.2
WINDOWS = 2  # the rule looks at the last 1 and 2 seconds (the 2 s one bounds a sustained flood)
KEPT_TENTHS = TENTHS * WINDOWS  # tenths of counts kept and synced per team
ASK = "ask"  # admit's answer when a sync must decide the create (the allowance is spent)
ADMITTED = "admitted"  # an outcome: a sync admitted the create (already counted)
LOCAL = "local"  # an outcome: no sync decided it (syncs fail); decide on what this process has


def tenth_of(t: float) -> int:
    """The tenth of a second (since the epoch) that time `t` falls in."""
    return math.floor(t * TENTHS)


def window_tenths(seconds: int) -> int:
    """The tenths the `seconds` window counts, the current one included: the creates in them
    reached the server within less than `seconds - CLIENT_JITTER`."""
    return round((seconds - CLIENT_JITTER) * TENTHS)


def _counted(mine: dict[int, int], others: dict[int, int], tenth: int, scale) -> list[int]:
    """From the newest tenth back, the creates made up to `tenth` that the longest window
    still counts: suffix sums (item i: the creates in the i newest tenths)."""
    sums, total = [0], 0
    for s in range(tenth, tenth - _SPANS[-1], -1):
        total += mine.get(s, 0) * scale + others.get(s, 0)
        sums.append(total)
    return sums


def _room_ahead(sums: list[int], ahead: int, rate: float) -> float:
    """Room `ahead` tenths after the tenth of `sums`, with no creates meanwhile."""
    return min(
        math.floor(m * rate + 1e-9) - sums[max(0, span - ahead)]
        for m, span in enumerate(_SPANS, start=1)
    )


def room(mine: dict[int, int], others: dict[int, int], tenth: int, rate: float, scale=1) -> int:
    """How many more creates the rule admits in `tenth`, given the counts by tenth (this
    process's multiplied by `scale`, for a process deciding alone)."""
    # On every create: the windows' sums only, oldest tenth last.
    mine_at, others_at = mine.get, others.get
    total, best, s = 0, math.inf, tenth
    for m, span in enumerate(_SPANS, start=1):
        while s > tenth - span:
            total += mine_at(s, 0) * scale + others_at(s, 0)
            s -= 1
        best = min(best, math.floor(m * rate + 1e-9) - total)
    return int(best)


def seconds_until_room(
    mine: dict[int, int], others: dict[int, int], t: float, rate: float, scale=1
) -> float:
    """How long, with no more creates, until the rule admits one more at time `t`."""
    tenth = tenth_of(t)
    sums = _counted(mine, others, tenth, scale)
    for ahead in range(_SPANS[-1] + 1):
        if _room_ahead(sums, ahead, rate) >= 1:
            return 0.0 if ahead == 0 else max((tenth + ahead) / TENTHS - t, 0.001)
    return _SPANS[-1] / TENTHS  # a rate below one per window: not reached


_SPANS = tuple(window_tenths(m) for m in range(1, WINDOWS + 1))


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; never 0, so a client does not retry in a tight loop."""
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True)
class TeamSync:
    """What a sync says of one team: its plan, and of the other live web processes their
    creates by tenth (the last KEPT_TENTHS), the allowances they took at their last syncs and
    the creates they were asked for in those tenths."""

    plan: str | None
    others: dict[int, int] = field(default_factory=dict)
    allowance: float = 0.0
    wanted: int = 0


@dataclass
class TeamWindow:
    """One team's counts in one process."""

    plan: str | None = None  # unknown until the first sync that names it
    mine: dict[int, int] = field(default_factory=dict)  # tenth -> creates admitted here
    wanted: dict[int, int] = field(default_factory=dict)  # tenth -> creates asked for here
    others: dict[int, int] = field(default_factory=dict)  # tenth -> the other processes'
    written: dict[int, tuple[int, int]] = field(default_factory=dict)  # tenth -> as last synced
    synced: bool = False  # False until a sync has told this process the others' state
    share: float = 0.0  # creates this process may admit until the next sync (its allowance)
    used: int = 0  # creates charged to the allowance
    admitted: int = 0  # creates admitted here, ever: a sync marks it, to charge what follows
    last_seen: float = 0.0
    asking: int = 0  # creates waiting for a sync to decide them
    granted: int = 0  # decided by a sync: admitted (and counted), not yet taken by their waiters
    denied: list[float] = field(default_factory=list)  # decided refused: the wait of each
    # The answer and process count of the last sync's decision, if the team was quiet then (no
    # counts of its own or the others', no asks): the same inputs give the same decision.
    quiet_on: tuple[TeamSync, int] | None = None


@dataclass
class SyncResult:
    """A sync's decisions: made inside its transaction (what it writes: this process's counts
    and allowances), taken on by `apply_sync` once that commits."""

    now: float
    offset: float
    processes: int
    # team -> (answer, allowance, mark, asks decided, of which admitted, wait of the others)
    teams: dict[object, tuple[TeamSync, float, int, int, int, float]]
    counts: list[tuple[object, int, int, int]]
    allowances: list[tuple[object, float]]
    quiet: set = field(default_factory=set)  # teams decided while quiet (TeamWindow.quiet_on)


def _prune(counts: dict, oldest: int) -> None:
    for s in [s for s in counts if s < oldest]:
        del counts[s]


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
        others may still admit (its creates wait for a sync)."""
        window = self.teams.get(team_id)
        if plan is not None:
            self.plans[team_id] = plan
            while len(self.plans) > PLANS_REMEMBERED:
                del self.plans[next(iter(self.plans))]  # the oldest learnt
        if window is None:
            plan = self.plans.get(team_id)
            window = self.teams[team_id] = TeamWindow(plan=plan, last_seen=now)
        return window

    def admit(self, team_id, now: float, may_ask: bool = True, asked: bool = False):
        """Count a create and return None; or refuse it: the seconds to wait; or, with
        `may_ask`, return ASK when this process's allowance is spent but the team may be within
        its rate: a sync must decide (`take_outcome` then has the answer); without `may_ask`
        (a create no sync decided, though syncs answer), refused until the next sync. `asked`:
        the create was counted as asked for already (it asked, and no sync decided it)."""
        window = self.track(team_id, now)
        window.last_seen = now
        rate = self.rate(window)
        t = now + self.offset
        tenth = tenth_of(t)
        if rate:
            if not asked:
                window.wanted[tenth] = window.wanted.get(tenth, 0) + 1
            alone = now >= self.stale_at()  # the database is away: our counts only
            # Within this process's allowance the rule holds by construction (a sync never
            # grants more than the room left): the windows' sums are needed only past it.
            if alone or window.used + 1 > window.share:
                scale, others = (self.processes, {}) if alone else (1, window.others)
                if room(window.mine, others, tenth, rate, scale) < 1:
                    return seconds_until_room(window.mine, others, t, rate, scale)
                if not alone:
                    if may_ask:
                        window.asking += 1
                        return ASK
                    return max(self.synced_at + SYNC_INTERVAL - now, 0.001)
        window.mine[tenth] = window.mine.get(tenth, 0) + 1
        window.used += 1
        window.admitted += 1
        if len(window.mine) > 2 * KEPT_TENTHS or len(window.wanted) > 2 * KEPT_TENTHS:
            _prune(window.mine, tenth - KEPT_TENTHS)  # syncs keep them short; else this does
            _prune(window.wanted, tenth - KEPT_TENTHS)
        return None

    def take_outcome(self, team_id):
        """For a create that asked: ADMITTED, or the seconds to wait (refused), or None while no
        sync has decided it. A waiting create takes any decided outcome: as many outcomes are
        made as creates asked, so none is left over."""
        window = self.teams.get(team_id)
        if window is None:
            return LOCAL
        if window.granted:
            window.granted -= 1
            return ADMITTED
        if window.denied:
            return window.denied.pop()
        return None

    def withdraw(self, team_id) -> None:
        """A create that asked stops waiting (syncs fail): it is decided on this process's own
        counts instead, and no sync decides it."""
        window = self.teams.get(team_id)
        if window is not None and window.asking > 0:
            window.asking -= 1

    def tenth_at(self, now: float) -> int:
        """The tenth of the database's clock that `admit` at local time `now` counts in."""
        return tenth_of(now + self.offset)

    def undo(self, team_id, tenth: int) -> None:
        """Take back a create counted in `tenth` (the create did not happen)."""
        window = self.teams.get(team_id)
        if window is None:
            return
        if window.mine.get(tenth, 0) > 0:
            window.mine[tenth] -= 1
        # Given back to the allowance too: the counts the others saw, or will see, still hold
        # it until the next sync writes this process's counts without it.
        window.used = max(0, window.used - 1)
        window.admitted -= 1

    def _decide(
        self, window: TeamWindow, now: float, offset: float, processes: int, answer: TeamSync
    ) -> tuple[float, int, int, float, dict[int, int]]:
        """A sync's decisions for one team: (the allowance, the asking creates it decides, of
        which admitted, the wait of the refused, this process's counts with those admitted)."""
        rate = self.rate_of(answer.plan)
        asks = window.asking
        if not rate:
            mine = dict(window.mine)
            if asks:
                mine[tenth_of(now + offset)] = mine.get(tenth_of(now + offset), 0) + asks
            return math.inf, asks, asks, 0.0, mine
        t = now + offset
        tenth = tenth_of(t)
        # The creates waiting for this sync: admitted while the fresh counts have room (the
        # others' as of their syncs: never more than they admitted), in the counts written now.
        admitted = max(0, min(asks, room(window.mine, answer.others, tenth, rate)))
        mine = dict(window.mine)
        if admitted:
            mine[tenth] = mine.get(tenth, 0) + admitted
        wait = seconds_until_room(mine, answer.others, t, rate) if admitted < asks else 0.0
        # Each process's share follows its part of the team's recent requests, refused ones too
        # (a keep-alive client sends everything to one process; a process short of allowance
        # must not stay short because it admitted less), plus one request's worth per process
        # so a process the team has not used yet still gets some.
        wanted = sum(n for s, n in window.wanted.items() if s > tenth - KEPT_TENTHS)
        weight = (wanted + 1) / (wanted + answer.wanted + max(1, processes))
        # The room as it will be at the next sync (older tenths leave the windows meanwhile):
        # a team at its rate then needs no sync between two to decide its creates.
        ahead = round(SYNC_INTERVAL * TENTHS)
        headroom = max(0.0, _room_ahead(_counted(mine, answer.others, tenth, 1), ahead, rate))
        # What the others were allowed at their last syncs and may not have spent yet is not
        # ours to give: the allowances and the counts together never pass the rule.
        share = max(0.0, min(headroom * weight, headroom - answer.allowance))
        return share, asks, admitted, wait, mine

    def prepare_sync(
        self, now: float, database_now: float, processes: int, teams: dict[object, TeamSync]
    ) -> SyncResult:
        """Decide a sync from its answer (the database's clock, the live web processes, and
        what it says of each team asked about), changing nothing yet. The counts it writes and
        the marks it takes are of the same moment: what this process admits from here on is
        charged to the new allowances, which the others see together with those counts."""
        offset = database_now - now
        oldest = tenth_of(now + offset) - KEPT_TENTHS
        decided, counts, quiet = {}, [], set()
        processes = max(1, processes)
        for team_id, window in self.teams.items():
            mine = window.mine
            answer = teams.get(team_id)
            if answer is None:  # new since the sync read the teams: the next one's
                pass
            elif window.asking or mine or window.wanted or answer.others:
                share, asks, admitted, wait, mine = self._decide(
                    window, now, offset, processes, answer
                )
                decided[team_id] = (answer, share, window.admitted, asks, admitted, wait)
            else:  # quiet: its room is the whole rate, whatever the time
                quiet.add(team_id)
                if window.quiet_on == (answer, processes):
                    share = window.share  # as decided last time, on the same inputs
                else:
                    share = self._decide(window, now, offset, processes, answer)[0]
                decided[team_id] = (answer, share, window.admitted, 0, 0, 0.0)
            if not (mine or window.wanted):
                continue
            for s in sorted(mine.keys() | window.wanted.keys()):
                row = (mine.get(s, 0), window.wanted.get(s, 0))
                if s >= oldest and window.written.get(s) != row:  # absolute: unchanged ones stand
                    counts.append((team_id, s, *row))
        allowances = [
            (team_id, decided[team_id][1] if team_id in decided else window.share)
            for team_id, window in self.teams.items()
        ]
        return SyncResult(
            now=now,
            offset=offset,
            processes=processes,
            teams=decided,
            counts=counts,
            allowances=[(t, a if math.isfinite(a) else 0.0) for t, a in allowances],
            quiet=quiet,
        )

    def apply_sync(self, result: SyncResult) -> None:
        """Take on a sync whose writes have committed."""
        self.offset, self.processes, self.synced_at = result.offset, result.processes, result.now
        tenth = tenth_of(result.now + result.offset)
        oldest = tenth - KEPT_TENTHS
        for team_id, s, n, w in result.counts:
            window = self.teams.get(team_id)
            if window is not None:
                window.written[s] = (n, w)
        for team_id in list(self.teams):
            window = self.teams[team_id]
            if result.now - window.last_seen > FORGET_AFTER and not window.asking:
                del self.teams[team_id]
                continue
            decision = result.teams.get(team_id)
            if decision is None:
                continue
            answer, share, mark, asks, admitted, wait = decision
            if answer.plan is not None:
                self.plans[team_id] = answer.plan
            if asks:  # admitted ones among them
                if admitted:
                    window.mine[tenth] = window.mine.get(tenth, 0) + admitted
                    window.admitted += admitted
                window.asking = max(0, window.asking - asks)
                window.granted += admitted
                window.denied.extend([wait] * (asks - admitted))
            if answer.others or window.others:
                window.others = dict(answer.others)
            window.plan, window.synced, window.share = answer.plan, True, share
            window.quiet_on = (answer, result.processes) if team_id in result.quiet else None
            # Admitted since the counts were taken (those this sync admitted are not charged).
            window.used = max(0, window.admitted - admitted - mark)
            for counts in (window.mine, window.wanted, window.written):
                if counts:
                    _prune(counts, oldest)

    def synced(
        self, now: float, database_now: float, processes: int, teams: dict[object, TeamSync]
    ) -> SyncResult:
        """A sync prepared and applied at once (its writes cannot fail): the simulation's."""
        result = self.prepare_sync(now, database_now, processes, teams)
        self.apply_sync(result)
        return result
