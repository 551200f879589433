"""Retention's deletes, the queue-wide figures /metrics reports, and the migrations a database
has (for /readyz)."""

from __future__ import annotations

from collections import Counter

from psycopg.rows import args_row, tuple_row

from asyncqueue import domain
from asyncqueue.db import fetch, query
from asyncqueue.db.rows import QueueFigureRow

QUEUE_FIGURE = args_row(QueueFigureRow)


def try_prune_lock(conn) -> bool:
    """Take the prune lock until the transaction ends, unless another process holds it."""
    return fetch.value(conn, query("prune_lock_try"), {"lock": domain.PRUNE_LOCK_ID})


def wait_prune_lock(conn) -> None:
    """Take the prune lock until the transaction ends, waiting for it if need be."""
    conn.execute(query("prune_lock_wait"), {"lock": domain.PRUNE_LOCK_ID})


def prune_batch(conn, older_than_seconds: float, limit: int) -> Counter[str]:
    """Delete up to `limit` finished tasks completed more than `older_than_seconds` ago,
    oldest first, passing over rows another transaction holds: how many, by status."""
    params = {"older_than_seconds": older_than_seconds, "limit": limit}
    return Counter(fetch.values(conn, query("prune_batch"), params))


def prune_preview(conn, older_than_seconds: float) -> Counter[str]:
    """How many finished tasks were completed more than `older_than_seconds` ago, by status."""
    params = {"older_than_seconds": older_than_seconds}
    return Counter(dict(fetch.many(conn, query("prune_preview"), params, tuple_row)))


def queue_figures(conn, silent_after: float) -> list[QueueFigureRow]:
    """Every queue-wide figure, read in one round trip (workers count as live when their
    heartbeat is at most `silent_after` seconds old)."""
    return fetch.many(conn, query("queue_figures"), {"silent_after": silent_after}, QUEUE_FIGURE)


def applied_migrations(conn) -> set[str]:
    """The versions of the migrations the database has (psycopg.errors.UndefinedTable if it
    has never been migrated)."""
    return set(fetch.values(conn, query("schema_migration_versions")))
