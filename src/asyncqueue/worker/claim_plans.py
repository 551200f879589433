"""When a worker's connections make their claim plans again.

The plain claim runs on every pickup, so it is prepared (db/claims.py) and PostgreSQL
may keep a generic plan of it, which saves a planning on every claim. Its LIMIT is written into
the text, one statement per size (claim_batch): a generic plan of `LIMIT $1` expects a tenth of
the table and seq-scans it.

A kept plan suits the table it was made on: one made on a nearly empty table walks the whole
backlog once one arrives, and PostgreSQL replans only after an ANALYZE, a VACUUM or a new
connection. So a connection's plans are made again (`DISCARD PLANS`, pipelined with the claim):

* after a claim that took SLOW_CLAIM or more (a failed one too: a statement_timeout may cancel a
  bad plan's claims), at most once per SLOW_MARK_EVERY, so that a database that is merely slow
  costs each connection a planning a second, not one a claim;
* once PLAN_MAX_AGE old, if its last claim took STALE_MARGIN more than the fastest seen, so that a
  bad plan under SLOW_CLAIM does not last while a good one is kept.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable

from asyncqueue.logs import log_event
from asyncqueue.worker import metrics

log = logging.getLogger("asyncqueue.worker")

# Claims of up to this many rows are prepared each with its own literal LIMIT (claim_batch).
EXACT_CLAIM_LIMITS = 64
# Seconds a connection keeps its claim plans at most (a bad plan under SLOW_CLAIM lasts no
# longer); each replan costs that connection's next claim a planning.
PLAN_MAX_AGE = 10.0
# A claim this slow (seconds, round trip and commit included) makes every connection's claim
# plans stale: a good plan's claim takes about a millisecond, a bad one's tens.
SLOW_CLAIM = 0.02
SLOW_MARK_EVERY = 1.0  # seconds between two such marks, at least
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
