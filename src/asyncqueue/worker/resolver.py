"""The bookkeeping of the worker's name-lookup pool: which lookup runs next, for which team, and
which failures are remembered. No threads and no I/O here (time is passed in), so the rules can
be tested in tables; http_client.LookupPool runs the lookups.

* One lookup of a (host, port) at a time, shared by every attempt waiting for it, whatever its
  team.
* Lookups wait in one queue per team, and teams are served in turn. A team runs at most its
  share of the pool's threads at once: threads // (teams looking up + 1), at most
  MAX_SHARE_FRACTION of them, at least one. A team whose names never answer holds only its share
  (a lookup cannot be interrupted: it holds its thread, and counts against its team, until the
  resolver answers), and the other teams' lookups start on the threads left.
* A lookup that no attempt waits for any more (each one that asked has ended, or their deadlines
  have passed) is dropped before it runs.
* Queues are bounded, per team and in all: a lookup that does not fit is refused at once.
* A failed lookup (no such name, the resolver failing or timing out) is remembered for
  FAILURE_TTL seconds: the same question within that time gets the same failure, unasked.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

MAX_SHARE_FRACTION = 4  # a team runs at most threads // 4 lookups at once
MAX_QUEUED = 1024  # lookups waiting for a thread, all teams together
MAX_QUEUED_PER_TEAM = 128
FAILURE_TTL = 5.0  # seconds a failed lookup is remembered
MAX_FAILURES_KEPT = 1024

Key = tuple[str, int]


@dataclass(eq=False)
class Lookup:
    """One lookup of `key`, queued or running."""

    key: Key
    waiting: int = 0  # attempts waiting for its answer
    deadline: float = 0.0  # the latest of their deadlines
    queued_by: set = field(default_factory=set)  # teams whose queue holds it
    team: object = None  # the team whose share it runs on, once started
    started: bool = False
    handle: object = None  # the pool's own (its Future)


class LookupBook:
    """Lookups waiting and running, per team; failures remembered. Not thread-safe: the pool
    holds its lock around every call."""

    def __init__(
        self,
        threads: int,
        *,
        max_queued: int = MAX_QUEUED,
        max_queued_per_team: int = MAX_QUEUED_PER_TEAM,
        failure_ttl: float = FAILURE_TTL,
        max_failures: int = MAX_FAILURES_KEPT,
    ):
        self.threads = threads
        self.max_queued = max_queued
        self.max_queued_per_team = max_queued_per_team
        self.failure_ttl = failure_ttl
        self.max_failures = max_failures
        self._lookups: dict[Key, Lookup] = {}  # queued or running, by key
        self._queues: dict[object, OrderedDict[Key, Lookup]] = {}  # team -> its waiting lookups
        self._turns: OrderedDict[object, None] = OrderedDict()  # teams with lookups waiting
        self._running: Counter = Counter()  # team -> lookups running on its share
        self._failures: OrderedDict[Key, tuple[float, BaseException]] = OrderedDict()
        self.queued = 0  # lookups waiting (one queued by two teams counts once)

    def share(self) -> int:
        """Lookups one team may run at once, keeping a share for a team that turns up."""
        active = len(self._queues.keys() | self._running.keys())
        return max(1, min(self.threads // (active + 1), self.threads // MAX_SHARE_FRACTION))

    def running(self, team) -> int:
        return self._running[team]

    def failure(self, key: Key, now: float) -> BaseException | None:
        """The failure remembered for `key`, if it has not expired."""
        remembered = self._failures.get(key)
        if remembered is None:
            return None
        if remembered[0] <= now:
            del self._failures[key]
            return None
        return remembered[1]

    def ask(self, team, key: Key, deadline: float) -> Lookup | None:
        """The lookup an attempt of `team` (waiting until `deadline`) is to wait for: the one
        queued or running for `key`, else a new one queued; None if the queues are full. The
        caller must `leave` it when it stops waiting."""
        lookup = self._lookups.get(key)
        if lookup is None:
            if not self._has_room(team):
                return None
            lookup = self._lookups[key] = Lookup(key)
            self.queued += 1
            self._enqueue(team, lookup)
        elif not lookup.started and team not in lookup.queued_by and self._has_room(team):
            # Also in this team's queue: waiting behind another team's backlog would let that
            # team hold up this one's lookup of a name they share.
            self._enqueue(team, lookup)
        lookup.waiting += 1
        lookup.deadline = max(lookup.deadline, deadline)
        return lookup

    def leave(self, lookup: Lookup) -> bool:
        """An attempt stopped waiting for `lookup`; True if it was dropped (no one waits for it
        and it has not started)."""
        lookup.waiting -= 1
        if lookup.waiting > 0 or lookup.started or self._lookups.get(lookup.key) is not lookup:
            return False
        self._drop(lookup)
        return True

    def take(self, now: float) -> tuple[Lookup | None, list[Lookup]]:
        """The lookup to run now (marked started, on its team's share), or None; and the
        lookups dropped on the way because their deadline has passed."""
        dropped: list[Lookup] = []
        share = self.share()
        for team in list(self._turns):
            if self._running[team] >= share:
                continue
            while team in self._queues:
                lookup = next(iter(self._queues[team].values()))
                self._unqueue(lookup)
                self.queued -= 1
                if lookup.waiting <= 0 or lookup.deadline <= now:
                    del self._lookups[lookup.key]
                    dropped.append(lookup)
                    continue
                lookup.started, lookup.team = True, team
                self._running[team] += 1
                if team in self._turns:
                    self._turns.move_to_end(team)  # behind every other team waiting
                return lookup, dropped
        return None, dropped

    def finished(self, lookup: Lookup, error: BaseException | None, now: float) -> None:
        """A started lookup's answer came (`error` if it failed): its thread is free."""
        self._running[lookup.team] -= 1
        if self._running[lookup.team] <= 0:
            del self._running[lookup.team]
        if self._lookups.get(lookup.key) is lookup:
            del self._lookups[lookup.key]
        if error is not None:
            self._failures.pop(lookup.key, None)
            while len(self._failures) >= self.max_failures:
                self._failures.popitem(last=False)  # the oldest, so the first to expire
            self._failures[lookup.key] = (now + self.failure_ttl, error)

    def forget(self) -> list[Lookup]:
        """Forget remembered failures and lookups in progress (the answers of those running are
        not shared any more); the queued ones, dropped."""
        queued = [lookup for lookup in self._lookups.values() if not lookup.started]
        for lookup in queued:
            self._unqueue(lookup)
        self._failures.clear()
        self._lookups.clear()
        self.queued = 0
        return queued

    def _has_room(self, team) -> bool:
        queue = self._queues.get(team)
        return self.queued < self.max_queued and (
            queue is None or len(queue) < self.max_queued_per_team
        )

    def _enqueue(self, team, lookup: Lookup) -> None:
        queue = self._queues.get(team)
        if queue is None:
            queue = self._queues[team] = OrderedDict()
            self._turns[team] = None
        queue[lookup.key] = lookup
        lookup.queued_by.add(team)

    def _unqueue(self, lookup: Lookup) -> None:
        for team in lookup.queued_by:
            queue = self._queues[team]
            del queue[lookup.key]
            if not queue:
                del self._queues[team]
                del self._turns[team]
        lookup.queued_by.clear()

    def _drop(self, lookup: Lookup) -> None:
        self._unqueue(lookup)
        if self._lookups.get(lookup.key) is lookup:
            del self._lookups[lookup.key]
        self.queued -= 1
