"""Helpers for the operations tests (retention, heartbeats, metrics): rows, counts, a pool."""

import pytest

from asyncqueue import db


def insert(conn, team_id, status, n, completed_days_ago=None):
    """n tasks in `status`; finished ones completed `completed_days_ago` days ago."""
    conn.execute(
        "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
        "max_retries, retry_backoff, next_run_at, completed_at) "
        "SELECT %(team)s, %(status)s, 'http://127.0.0.1/x', 'POST', 30, 30, 3, 'exponential', "
        "CASE WHEN %(status)s IN ('completed', 'failed', 'timeout', 'cancelled') THEN NULL "
        "ELSE now() + interval '1 hour' END, "
        "now() - make_interval(days => %(days)s) - make_interval(secs => g) "
        "FROM generate_series(1, %(n)s) g",
        {"team": team_id, "status": status, "n": n, "days": completed_days_ago},
    )


def by_status(conn) -> dict:
    return {
        r["status"]: r["n"]
        for r in conn.execute("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    }


def counted(conn) -> dict:
    rows = conn.execute(
        "SELECT status, sum(n)::bigint AS n FROM task_counts GROUP BY status HAVING sum(n) <> 0"
    )
    return {r["status"]: r["n"] for r in rows}


@pytest.fixture(name="pool")
def pool_fixture(database_url):
    """A small pool on the test's database (import `pool_fixture` to use `pool`)."""
    p = db.make_pool(database_url, 2, name="test-ops")
    yield p
    p.close()
