"""The tasks as the API reads and writes them, through typed rows (db/rows.py)."""

from __future__ import annotations

import uuid

from psycopg.rows import args_row

from asyncqueue.db import fetch, query
from asyncqueue.db.rows import TaskRow

# Rows built from their values in the order the queries list them (tests/unit/test_db_door.py
# checks it), cheaper than by column name.
TASK_ROW = args_row(TaskRow)
# The list's two variants are chosen from these fixed fragments, never from input.
STATUS_FILTER = {False: "", True: "AND status = %(status)s"}
DIRECTION = {"asc": "ASC", "desc": "DESC"}


def _one(conn, name: str, params: dict) -> TaskRow | None:
    return fetch.one(conn, query(name), params, TASK_ROW)


def insert_for_key(conn, params: dict) -> TaskRow | None:
    """Insert a task for the key whose hash is in `params` (None: no live key, or maxWaitTime
    over its team's plan; task_insert_for_key in sql/queries/tasks.sql)."""
    return _one(conn, "task_insert_for_key", params)


def get(conn, task_id: uuid.UUID) -> TaskRow | None:
    return _one(conn, "task_get", {"id": task_id})


def cancel(conn, task_id: uuid.UUID, team_id: uuid.UUID) -> TaskRow | None:
    """The task, cancelled; None if it is not the team's or no longer pending or delayed."""
    return _one(conn, "task_cancel", {"id": task_id, "team_id": team_id})


def list_page(
    conn, team_id: uuid.UUID, *, status: str | None, sort_order: str, limit: int, offset: int
) -> tuple[list[TaskRow], int]:
    """One page of the team's tasks and the total they are a page of, from one snapshot."""
    fill = {"status_filter": STATUS_FILTER[status is not None], "direction": DIRECTION[sort_order]}
    args = {"team_id": team_id, "status": status, "limit": limit, "offset": offset}
    with conn.transaction():
        conn.execute(query("transaction_repeatable_read"))
        rows = fetch.many(conn, query("task_list").format(**fill), args, TASK_ROW)
        total = conn.execute(query("task_count").format(**fill), args).fetchone()["n"]
    return rows, total
