"""Retention: finished tasks past ASYNCQUEUE_RETENTION_DAYS are deleted in batches, never an
unfinished one, one pruner at a time, with list totals (task_counts) right throughout."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asyncqueue import db, domain
from asyncqueue.cli import main
from asyncqueue.worker import pruner
from tests.support import make_team, wait_for
from tests.support.ops import by_status, counted, insert

BIN = Path(sys.executable).parent
FINISHED = ("completed", "failed", "timeout", "cancelled")


@pytest.fixture
def team_id(conn):
    return make_team(conn, "acme", "pro")[0]["id"]


def test_prune_deletes_only_finished_tasks_completed_before_the_cutoff(conn, pool, team_id):
    for status in FINISHED:
        insert(conn, team_id, status, 7, completed_days_ago=40)
        insert(conn, team_id, status, 2, completed_days_ago=10)
    for status in ("pending", "delayed", "processing"):
        # Unfinished rows never have completed_at; these are given an old one to prove that
        # the status alone keeps them.
        insert(conn, team_id, status, 3, completed_days_ago=400)
    result = pruner.prune(pool, 30, wait_for_lock=True, limit=5, rest_per_batch=0)
    assert result.total == 28 and dict(result.by_status) == dict.fromkeys(FINISHED, 7)
    assert by_status(conn) == {
        **dict.fromkeys(FINISHED, 2),
        **dict.fromkeys(("pending", "delayed", "processing"), 3),
    }
    assert counted(conn) == by_status(conn)  # pagination.total stays right
    assert pruner.prune(pool, 30, wait_for_lock=True).total == 0


def test_list_total_is_right_after_a_prune(conn, pool, team_id, database_url):
    from asyncqueue.api import create_app
    from asyncqueue.config import Settings

    key = make_team(conn, "other", "pro")[1]
    other = conn.execute("SELECT id FROM teams WHERE name = 'other'").fetchone()["id"]
    insert(conn, other, "completed", 12, completed_days_ago=40)
    insert(conn, other, "completed", 3, completed_days_ago=1)
    insert(conn, team_id, "completed", 5, completed_days_ago=40)
    pruner.prune(pool, 30, wait_for_lock=True, limit=4, rest_per_batch=0)
    app = create_app(Settings(database_url=database_url, db_pool_size=1))
    try:
        body = (
            app.test_client()
            .get("/v1/tasks?status=completed", headers={"X-API-Key": key})
            .get_json()
        )
    finally:
        app.extensions["asyncqueue"].database.close()
    assert body["pagination"]["total"] == 3


def test_one_pruner_at_a_time(conn, pool, team_id, database_url):
    insert(conn, team_id, "completed", 10, completed_days_ago=40)
    with db.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (domain.PRUNE_LOCK_ID,))
        result = pruner.prune(pool, 30, wait_for_lock=False)
        assert result.locked_out and result.total == 0
    assert by_status(conn) == {"completed": 10}
    assert pruner.prune(pool, 30, wait_for_lock=False).total == 10


def test_prune_skips_rows_another_transaction_holds(conn, pool, team_id, database_url):
    insert(conn, team_id, "completed", 4, completed_days_ago=40)
    held = conn.execute("SELECT id FROM tasks ORDER BY completed_at LIMIT 1").fetchone()["id"]
    with db.connect(database_url) as other, other.transaction():
        other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (held,))
        result = pruner.prune(pool, 30, wait_for_lock=True, rest_per_batch=0)
    assert result.total == 3
    assert [r["id"] for r in conn.execute("SELECT id FROM tasks")] == [held]


def test_finished_total_never_goes_down_when_rows_are_pruned(conn, pool, team_id):
    from asyncqueue.api.metrics import QueueCollector

    def finished_total():
        families = {f.name: f for f in QueueCollector(pool).collect()}
        return {s.labels["status"]: s.value for s in families["asyncqueue_tasks_finished"].samples}

    insert(conn, team_id, "completed", 6, completed_days_ago=40)
    insert(conn, team_id, "failed", 2, completed_days_ago=40)
    before = finished_total()
    pruner.prune(pool, 30, wait_for_lock=True, rest_per_batch=0)
    assert by_status(conn) == {}
    assert finished_total() == before == {"completed": 6, "failed": 2, "timeout": 0, "cancelled": 0}
    conn.execute("DELETE FROM teams WHERE id = %s", (team_id,))  # cascade: counts rows go too
    insert(conn, make_team(conn, "later")[0]["id"], "completed", 1, completed_days_ago=0)
    assert finished_total()["completed"] == 7


@pytest.fixture
def cli(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)

    def invoke(*args, env=None):
        return CliRunner().invoke(main, list(args), env=env)

    return invoke


def test_cli_prune_dry_run_counts_and_deletes_nothing(cli, conn, team_id):
    insert(conn, team_id, "completed", 5, completed_days_ago=40)
    insert(conn, team_id, "cancelled", 2, completed_days_ago=40)
    insert(conn, team_id, "failed", 2, completed_days_ago=5)
    result = cli("tasks", "prune", "--older-than", "30", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["dryRun"] is True and out["tasks"] == 7
    assert out["byStatus"] == {"cancelled": 2, "completed": 5}
    assert sum(by_status(conn).values()) == 9
    result = cli("tasks", "prune", "--older-than", "3", "--json")
    out = json.loads(result.output)
    assert out["tasks"] == 9 and out["dryRun"] is False
    assert by_status(conn) == {}


def test_cli_prune_uses_the_retention_setting_and_refuses_when_it_is_off(cli, conn, team_id):
    insert(conn, team_id, "completed", 3, completed_days_ago=40)
    insert(conn, team_id, "completed", 1, completed_days_ago=5)
    off = cli("tasks", "prune", env={"ASYNCQUEUE_RETENTION_DAYS": "0"})
    assert off.exit_code == 1 and "retention is off" in off.output
    assert sum(by_status(conn).values()) == 4
    done = cli("tasks", "prune", env={"ASYNCQUEUE_RETENTION_DAYS": "30"})
    assert done.exit_code == 0, done.output
    assert "deleted 3 finished tasks completed more than 30 days ago" in done.output
    assert cli("tasks", "prune", "--older-than", "0").exit_code == 2


@pytest.mark.parametrize("days", ["nan", "inf", "-inf", "1e308", "36501"])
def test_prune_refuses_days_no_interval_holds_in_one_line(cli, days):
    result = cli("tasks", "prune", "--older-than", days)
    assert result.exit_code == 2
    assert "a number of days above 0 and at most 36,500" in result.output
    assert isinstance(result.exception, SystemExit)  # a usage error, not a database error


def test_prune_killed_midway_loses_nothing_unfinished_and_leaves_counts_right(
    conn, team_id, database_url
):
    insert(conn, team_id, "completed", 60_000, completed_days_ago=40)
    insert(conn, team_id, "pending", 500, completed_days_ago=40)
    insert(conn, team_id, "processing", 500, completed_days_ago=40)
    proc = subprocess.Popen(
        [str(BIN / "asyncqueue"), "tasks", "prune", "--older-than", "30"],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: by_status(conn).get("completed", 0) < 60_000 - 3_000,
            timeout=60,
            interval=0.01,
            message="the prune to delete a few batches",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The server notices the dead client and rolls its open batch back: its session ends.
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
            ).fetchone()["n"]
            == 0
        ),
        timeout=10,
        message="the killed prune's session to end",
    )
    left = by_status(conn)
    assert 0 < left["completed"] < 60_000  # cut short: some batches done, some not
    assert left["pending"] == 500 and left["processing"] == 500
    assert counted(conn) == left


def test_cli_prune_shows_progress_on_a_terminal_only(conn, team_id, database_url):
    import pty

    insert(conn, team_id, "completed", 2_500, completed_days_ago=40)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [str(BIN / "asyncqueue"), "tasks", "prune", "--older-than", "30", "--json"],
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0 and json.loads(done.stdout)["tasks"] == 2_500
    assert b"\rdeleted 2,500 tasks (" in seen  # stdout stays one JSON value
    quiet = CliRunner().invoke(
        main, ["tasks", "prune", "--older-than", "30"], env={"DATABASE_URL": database_url}
    )
    assert quiet.output.startswith("deleted 0 finished tasks")
