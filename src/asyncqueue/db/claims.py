"""The worker's statements on tasks: claim due ones, hand them back, schedule retries and record
outcomes, with typed rows both ways (db/rows.py)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable

from psycopg.rows import args_row
from psycopg.types.json import Jsonb

from asyncqueue.db import discard_plans, query
from asyncqueue.db.rows import ClaimedTask, FinishedTask

# Rows built from their values in the order the queries list them (tests/unit/test_db_door.py).
CLAIMED_ROW = args_row(ClaimedTask)
FINISHED_ROW = args_row(FinishedTask)


@functools.lru_cache(maxsize=128)  # the dispatcher asks for at most a few dozen limits
def plain_claim_text(limit: int) -> str:
    """task_claim with its LIMIT written in, so that PostgreSQL may keep a plan of it."""
    text = query("task_claim")
    if text.count("%(limit)s") != 1:
        raise ValueError("task_claim must take %(limit)s exactly once")
    return text.replace("%(limit)s", str(int(limit)))


def claim(conn, params: dict, *, replan: bool = False) -> list[ClaimedTask]:
    """Claim due tasks: `params` has the limit, the teams to skip, the worker's name and the
    lease's grace. task_claim (prepared, its LIMIT written in) when no team is skipped;
    task_claim_skipping, planned afresh each time (a generic plan of it may seq-scan tasks),
    otherwise. `replan` drops the session's kept plans first, in the same round trip."""
    with conn.cursor(row_factory=CLAIMED_ROW) as cur:
        if params["skip"]:
            return cur.execute(query("task_claim_skipping"), params).fetchall()
        text = plain_claim_text(params["limit"])
        if not replan:
            return cur.execute(text, params, prepare=True).fetchall()
        with conn.pipeline():
            discard_plans(conn)
            cur.execute(text, params, prepare=True)
        return cur.fetchall()


def release(conn, claims: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> list[uuid.UUID]:
    """Hand claimed tasks back, due at once: (task id, claim token) pairs; the ids released."""
    pairs = list(claims)
    rows = conn.execute(
        query("task_release"),
        {"ids": [i for i, _ in pairs], "claim_tokens": [t for _, t in pairs]},
    ).fetchall()
    return [r["id"] for r in rows]


def retry_params(retries) -> dict:
    """task_schedule_retry's parameter from (id, claim_token, result, error, delay) tuples."""
    return {
        "retries": Jsonb(
            [
                {
                    "id": str(task_id),
                    "claim_token": str(claim_token),
                    "result": result,
                    "error": error,
                    "delay": delay,
                }
                for task_id, claim_token, result, error, delay in retries
            ]
        )
    }


def finish_params(outcomes) -> dict:
    """task_finish_many's parameter from (id, claim_token, status, result, error) tuples."""
    return {
        "outcomes": Jsonb(
            [
                {
                    "id": str(task_id),
                    "claim_token": str(claim_token),
                    "status": status,
                    "result": result,
                    "error": error,
                }
                for task_id, claim_token, status, result, error in outcomes
            ]
        )
    }


def schedule_retries(conn, params: dict) -> list[uuid.UUID]:
    """Write retries (retry_params): the ids of the tasks whose claim still matched."""
    return [r["id"] for r in conn.execute(query("task_schedule_retry"), params).fetchall()]


def finish(conn, params: dict) -> list[FinishedTask]:
    """Record outcomes (finish_params): the tasks whose claim still matched, as their
    onComplete needs them."""
    with conn.cursor(row_factory=FINISHED_ROW) as cur:
        return cur.execute(query("task_finish_many"), params).fetchall()


def seconds_until_due(conn) -> tuple[float | None, float | None]:
    """Seconds until the earliest unfinished task is due (None: none is waiting), and until the
    next one after those due now (see task_seconds_until_due)."""
    row = conn.execute(query("task_seconds_until_due")).fetchone()
    seconds, next_seconds = row["seconds"], row["next_seconds"]
    return (
        None if seconds is None else float(seconds),
        None if next_seconds is None else float(next_seconds),
    )
