"""Task rows: as a claim returns them (for tests without a database), and in a database (due
tasks inserted in bulk, the dispatcher's claim, the trigger-kept counts checked)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from asyncqueue.db.rows import ClaimedTask, FinishedTask
from asyncqueue.worker.dispatcher import claim_rows
from asyncqueue.worker.fairness import ClaimPlan

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def claimed_row(**overrides) -> ClaimedTask:
    """A row as task_claim returns it, claimed at NOW."""
    fields = {
        "id": uuid.uuid4(),
        "claim_token": uuid.uuid4(),
        "team_id": uuid.uuid4(),
        "attempts": 1,
        "retry_count": 0,
        "max_retries": 3,
        "retry_backoff": "exponential",
        "max_wait_time": 30.0,
        "timeout": 5.0,
        "claimed_at": NOW,
        "deadline": NOW + timedelta(seconds=30),
        "headers": {"X-Custom": "v"},
        "method": "POST",
        "callback_url": "http://127.0.0.1:9/x",
        "body": "b",
        "result": None,
    } | overrides
    return ClaimedTask(**fields)


def finished_row(**overrides) -> FinishedTask:
    """A row as task_finish_many returns it."""
    fields = {
        "id": uuid.uuid4(),
        "team_id": uuid.uuid4(),
        "status": "completed",
        "error": None,
        "retry_count": 0,
        "created_at": NOW,
        "completed_at": NOW + timedelta(seconds=1),
        "on_complete_url": None,
        "result": None,
    } | overrides
    return FinishedTask(**fields)


def insert_tasks(conn, team_id, n, **overrides):
    """n tasks of the team, due a second ago."""
    values = {"max_wait_time": 30, "timeout": 30, "status": "pending"} | overrides
    conn.execute(
        "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
        "max_retries, retry_backoff, next_run_at) "
        "SELECT %(team)s, %(status)s, 'http://127.0.0.1/x', 'POST', %(max_wait_time)s, "
        "%(timeout)s, 3, 'exponential', now() - interval '1 second' FROM generate_series(1, %(n)s)",
        {"team": team_id, "n": n, **values},
    )


def claim(conn, limit=10, grace=10.0, skip=()):
    """The dispatcher's claim: task_claim, or task_claim_skipping past the teams in `skip`."""
    plan = ClaimPlan(limit, tuple(skip))
    return claim_rows(conn, plan, worker="test:1", grace=grace)


def assert_counts_match(conn):
    """The trigger-kept counts agree with counting the tasks themselves."""
    counted = {
        (r["team_id"], r["status"]): r["n"]
        for r in conn.execute("SELECT team_id, status, count(*) AS n FROM tasks GROUP BY 1, 2")
    }
    kept = {
        (r["team_id"], r["status"]): r["n"]
        for r in conn.execute(
            "SELECT team_id, status, sum(n) AS n FROM task_counts GROUP BY 1, 2 HAVING sum(n) <> 0"
        )
    }
    assert kept == counted
