"""The create-limit syncs' tables: the web processes alive, and each one's create counts and
allowances, read and written by each process's sync in one short transaction (the sync itself
is asyncqueue/api/create_limits.py's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import psycopg
from psycopg.rows import args_row
from psycopg.types.json import Jsonb

from asyncqueue import db, domain
from asyncqueue.db import fetch, query
from asyncqueue.db.rows import CreateSyncRow, TeamCreateCounts


def _sync_row(now: float, processes: int, teams: list[dict]) -> CreateSyncRow:
    return CreateSyncRow(
        now=now,
        processes=processes,
        teams=tuple(
            TeamCreateCounts(
                team_id=uuid.UUID(t["team_id"]),
                plan=t["plan"],
                allowance=float(t["allowance"]),
                others={int(tenth): n for tenth, n in t["others"].items()},  # JSON keys: text
                wanted=int(t["wanted"]),
            )
            for t in teams
        ),
    )


SYNC_ROW = args_row(_sync_row)


def connect(url: str) -> psycopg.Connection:
    """A connection for one process's syncs, with the session settings they rely on."""
    conn = db.connect(url, autocommit=True, connect_timeout=5)
    try:
        conn.execute(query("create_limits_session"))
    except BaseException:
        conn.close()
        raise
    return conn


def lock(conn) -> None:
    """Wait for this sync's turn: held until the transaction ends."""
    conn.execute(query("create_limits_lock"), {"lock": domain.CREATE_LIMITS_LOCK_ID})


def read(conn, process: str, teams: list, kept_tenths: int) -> CreateSyncRow:
    """Say `process` is alive, and read what the others did for `teams` in the last
    `kept_tenths` tenths of a second."""
    params = {"process": process, "teams": teams, "kept": kept_tenths}
    return fetch.one(conn, query("create_counts_sync"), params, SYNC_ROW)


def write(
    conn,
    process: str,
    counts: Iterable[tuple[uuid.UUID, int, int, int]],
    allowances: Iterable[tuple[uuid.UUID, float]],
) -> None:
    """Write `process`'s create counts, (team, tenth, admitted, asked for), and the allowances
    it took, (team, allowance): those of teams not listed are deleted."""
    counted = [{"team_id": str(t), "tenth": s, "n": n, "wanted": w} for t, s, n, w in counts]
    taken = [{"team_id": str(t), "allowance": a} for t, a in allowances]
    params = {"process": process, "counts": Jsonb(counted), "allowances": Jsonb(taken)}
    conn.execute(query("create_limits_write"), params)


def prune(conn) -> None:
    """Delete counts past the window, and the rows of processes gone."""
    conn.execute(query("create_counts_prune"))
