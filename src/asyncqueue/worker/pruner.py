"""Retention: delete finished tasks older than ASYNCQUEUE_RETENTION_DAYS, a small batch at a time.

Every worker runs a Pruner; an advisory lock taken per batch lets one prune at a time. Each batch
is its own short transaction that deletes only finished rows (SKIP LOCKED), so claims and inserts
never wait on it, and a prune cut short (kill -9, database restart) loses one uncommitted batch
and leaves task_counts right: its triggers run in the batch's transaction.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncqueue.config import Settings
from asyncqueue.db import maintenance
from asyncqueue.logs import log_event

log = logging.getLogger("asyncqueue.pruner")

BATCH_SIZE = 1_000
# How often a worker looks for expired tasks; a round runs until nothing is left to delete.
PRUNE_INTERVAL = 60.0
# After each batch, rest as long as it took: a prune then keeps at most half of one database
# connection busy, leaving claims and inserts their share of the machine.
REST_PER_BATCH = 1.0
SECONDS_PER_DAY = 86_400.0


@dataclass
class PruneResult:
    """What a prune deleted (or, for a dry run, would delete), by status."""

    by_status: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    locked_out: bool = False  # another process holds the prune lock: nothing was done

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def prune_batch(pool, older_than_days: float, *, wait_for_lock: bool, limit: int = BATCH_SIZE):
    """Delete one batch in its own transaction: a Counter of deleted rows by status, or None if
    another process holds the prune lock (and `wait_for_lock` is false)."""
    with pool.connection() as conn, conn.transaction():
        if wait_for_lock:
            maintenance.wait_prune_lock(conn)
        elif not maintenance.try_prune_lock(conn):
            return None
        return maintenance.prune_batch(conn, older_than_days * SECONDS_PER_DAY, limit)


def prune(
    pool,
    older_than_days: float,
    *,
    wait_for_lock: bool,
    stopping: threading.Event | None = None,
    progress: Callable[[PruneResult], None] | None = None,
    rest_per_batch: float = REST_PER_BATCH,
    limit: int = BATCH_SIZE,
) -> PruneResult:
    """Delete finished tasks completed more than `older_than_days` ago, batch after batch, until
    none is left, `stopping` is set, or (without `wait_for_lock`) another process prunes."""
    stopping = stopping or threading.Event()
    result = PruneResult()
    started = time.monotonic()
    while not stopping.is_set():
        batch_started = time.monotonic()
        deleted = prune_batch(pool, older_than_days, wait_for_lock=wait_for_lock, limit=limit)
        result.seconds = time.monotonic() - started
        if deleted is None:
            result.locked_out = True
            break
        result.by_status.update(deleted)
        if progress:
            progress(result)
        if sum(deleted.values()) < limit:
            break
        stopping.wait((time.monotonic() - batch_started) * rest_per_batch)
    result.seconds = time.monotonic() - started
    return result


def preview(pool, older_than_days: float) -> PruneResult:
    """What `prune` would delete now, by status, deleting nothing."""
    started = time.monotonic()
    with pool.connection() as conn:
        by_status = maintenance.prune_preview(conn, older_than_days * SECONDS_PER_DAY)
    return PruneResult(by_status, time.monotonic() - started)


class Pruner:
    """The maintenance service: every PRUNE_INTERVAL seconds (the first round within a few
    seconds of start), prune what ASYNCQUEUE_RETENTION_DAYS says has expired. Off when it is 0."""

    def __init__(self, settings: Settings, pool, *, interval: float = PRUNE_INTERVAL):
        self.settings = settings
        self.pool = pool
        self.interval = interval
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pruner", daemon=True)

    def start(self) -> None:
        if self.settings.retention_days > 0:
            self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)  # a batch is short; the thread is a daemon anyway

    def _run(self) -> None:
        # Spread workers started together, so they do not all ask for the lock at once.
        self.stopping.wait(random.uniform(0.5, 3.0))
        while not self.stopping.is_set():
            try:
                result = prune(
                    self.pool,
                    self.settings.retention_days,
                    wait_for_lock=False,
                    stopping=self.stopping,
                )
                if result.total:
                    log_event(
                        log,
                        "pruned finished tasks",
                        deleted=result.total,
                        seconds=round(result.seconds, 3),
                        older_than_days=self.settings.retention_days,
                    )
            except Exception as exc:  # database away: try again next round, never exit
                log_event(log, "prune failed; retrying later", logging.WARNING, error=str(exc))
            self.stopping.wait(self.interval)
