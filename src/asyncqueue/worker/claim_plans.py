"""The plain claim's kept plans: the one statement a worker prepares, and when each connection
makes its plans again.

The plain claim runs on every pickup's path, so it is prepared (dispatcher.claim_rows) and
PostgreSQL may keep one generic plan of it: that saves a planning (about 0.3 ms) on every claim.
Its LIMIT is written into the text, one statement per size (claim_batch), because a generic plan
of `LIMIT $1` is made for a tenth of the table, and a join over that many rows seq-scans tasks.

A kept plan has one hazard: it is made for the table's size at the time. One made while tasks
was nearly empty (a fresh deploy, or a queue drained between bursts) seq-scans and sorts the
table, and joins by walking it, once a backlog arrives: 40 ms a claim at 20,000 due tasks, 300 ms
at 100,000. PostgreSQL makes it again only when something invalidates it (an ANALYZE or a VACUUM
of tasks, the connection's end), which can be a minute or more away. So:

* every connection's claim plans are made again after a claim that took SLOW_CLAIM or more
  (one that failed included: a statement_timeout may cancel a bad plan's claims), at most once
  per SLOW_MARK_EVERY, so that a database that is simply slow (say, behind a synchronous
  standby) costs each connection a planning a second, not one a claim;
* each connection's are made again once PLAN_MAX_AGE old if its last claim took STALE_MARGIN
  more than the fastest this worker has seen, so that a bad plan that stays under SLOW_CLAIM (a
  seq scan of a few thousand rows: 3 to 15 ms) does not last, while claims as quick as ever keep
  theirs (one pickup every ten seconds or more would otherwise pay a replan each).

Made again means `DISCARD PLANS` sent in one round trip with the claim (a pipeline), which is
then planned afresh. It drops the session's other cached plans too (the task_counts trigger's),
which are made again on that claim: it costs about 0.4 ms more than a claim planned afresh
(`python -m bench.claim_plans`).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable

from asyncqueue import db
from asyncqueue.logs import log_event
from asyncqueue.worker import metrics

log = logging.getLogger("asyncqueue.worker")

# Claims of up to this many rows are prepared each with its own literal LIMIT (claim_batch).
EXACT_CLAIM_LIMITS = 64
# Seconds a connection keeps its claim plans at most: a plan that went bad but stays under
# SLOW_CLAIM (a seq scan of a few thousand rows) lasts no longer than this. Each time costs that
# connection's next claim a planning (about 0.3 ms).
PLAN_MAX_AGE = 10.0
# A claim this slow (seconds, as seen by the worker: round trip and commit included) makes every
# connection's claim plans stale. A good plan's claim returns within about a millisecond from a
# local database, one made on an empty table 40 ms at 20,000 due tasks.
SLOW_CLAIM = 0.02
# Seconds between two such marks at most.
SLOW_MARK_EVERY = 1.0
# Seconds a claim must take beyond the fastest seen for its old plans to be made again.
STALE_MARGIN = 0.001


def claim_batch(limit: int) -> int:
    """The rows one plain claim asks for, given `limit` free slots: all of them up to
    EXACT_CLAIM_LIMITS, else the largest power of two below (the rest are claimed next round), so
    that a connection keeps at most 71 claim statements prepared (64, then 128 to 8,192 for the
    10,000 slots a worker may have), under psycopg's 100."""
    if limit <= EXACT_CLAIM_LIMITS:
        return limit
    return 1 << (limit.bit_length() - 1)


@functools.lru_cache(maxsize=128)  # claim_batch gives at most 71 limits
def plain_claim_text(limit: int) -> str:
    """task_claim with its LIMIT written in."""
    text = db.query("task_claim")
    if text.count("%(limit)s") != 1:
        raise ValueError("task_claim must take %(limit)s exactly once")
    return text.replace("%(limit)s", str(int(limit)))


class KeptPlans:
    """When each connection makes its claim plans again. Used by the dispatcher's thread only."""

    def __init__(
        self,
        max_age: float = PLAN_MAX_AGE,
        slow: float = SLOW_CLAIM,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_age = max_age
        self.slow = slow
        self._clock = clock
        # When each connection's plans were made (its first plain claim, or its last DISCARD);
        # weak, so that connections the pool closes are forgotten.
        self._made_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._stale_before = float("-inf")  # plans made before this are stale (a slow claim)
        self._last: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # its last claim's s
        self._fastest = float("inf")  # the quickest claim this worker has seen, seconds
        self.replans = 0

    @classmethod
    def unmanaged(cls) -> KeptPlans:
        """For connections that keep no plan (an operator's plan_cache_mode): never replans."""
        return cls(max_age=float("inf"), slow=float("inf"))

    def stale(self, conn) -> str | None:
        """Before a plain claim on `conn`: why its plans must be made again first ("age",
        "slow"), or None."""
        now = self._clock()
        made = self._made_at.get(conn)
        if made is None:  # its first claim: its plans are made now
            self._made_at[conn] = now
            return None
        if made < self._stale_before:
            return "slow"
        if now - made >= self.max_age and self._last.get(conn, 0.0) >= self._fastest + STALE_MARGIN:
            return "age"
        return None

    def made(self, conn, reason: str) -> None:
        """After a claim that made `conn`'s plans again (for `reason`) succeeded."""
        self._made_at[conn] = self._clock()
        self.replans += 1
        metrics.observe_claim_replan(reason)
        log_event(log, "claim plans made again", logging.DEBUG, reason=reason)

    def observe(self, conn, seconds: float) -> None:
        """After a plain claim on `conn` that took `seconds`: one of SLOW_CLAIM or more makes
        every connection's plans stale (at most once per SLOW_MARK_EVERY)."""
        self._last[conn] = seconds
        self._fastest = min(self._fastest, seconds)
        if seconds < self.slow:
            return
        now = self._clock()
        if now - self._stale_before >= SLOW_MARK_EVERY:
            self._stale_before = now
