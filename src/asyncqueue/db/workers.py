"""The workers table: each worker's heartbeat row, and the list operators read from it."""

from __future__ import annotations

import uuid
from dataclasses import asdict

from psycopg.rows import args_row

from asyncqueue.db import fetch, query
from asyncqueue.db.rows import WorkerIdentity, WorkerRow

WORKER = args_row(WorkerRow)


def beat(conn, identity: WorkerIdentity, in_flight: int) -> None:
    """Write the worker's row: created on its first beat, its last_seen_at and in_flight
    refreshed on every other."""
    conn.execute(query("worker_beat"), {**asdict(identity), "in_flight": in_flight})


def forget_dead(conn, seconds: float) -> None:
    """Delete the rows of workers silent for longer than `seconds` (they died without
    deleting their own)."""
    conn.execute(query("worker_forget_dead"), {"seconds": seconds})


def remove(conn, worker_id: uuid.UUID) -> None:
    conn.execute(query("worker_remove"), {"id": worker_id})


def all_workers(conn) -> list[WorkerRow]:
    """Every worker's row, by host, pid and start."""
    return fetch.many(conn, query("worker_list"), None, WORKER)
