"""/healthz is liveness (no database); /readyz is readiness (database answers, schema current)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid

import psycopg
import pytest

from asyncqueue import db
from asyncqueue.api import create_app
from asyncqueue.config import Settings
from asyncqueue.readiness import schema_readiness
from tests.support import wait_for
from tests.support.databases import with_dbname

KNOWN = ["0001_initial", "0002_claimed_by", "0003_task_counts"]


@pytest.mark.parametrize(
    "applied, ready, body",
    [
        (set(KNOWN), True, {"status": "ready", "schema": "0003_task_counts"}),
        (
            {*KNOWN, "0009_future"},
            True,
            {"status": "ready", "schema": "0003_task_counts", "newerMigrations": ["0009_future"]},
        ),
        (
            {"0001_initial"},
            False,
            {
                "error": "database schema behind: missing 0002_claimed_by, 0003_task_counts "
                "(run `asyncqueue db migrate`)",
                "missing": ["0002_claimed_by", "0003_task_counts"],
            },
        ),
        (
            None,
            False,
            {
                "error": "database schema not migrated: run `asyncqueue db migrate`",
                "missing": KNOWN,
            },
        ),
    ],
)
def test_schema_readiness(applied, ready, body):
    assert schema_readiness(KNOWN, applied) == (ready, body)


def _app(url: str):
    return create_app(Settings(database_url=url, db_pool_size=1))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_on_a_migrated_database(database_url):
    app = _app(database_url)
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 200
        latest = db.migration_version(db.migration_files()[-1])
        assert response.get_json() == {"status": "ready", "schema": latest}
    finally:
        app.extensions["asyncqueue"].database.close()


def test_not_ready_while_a_migration_is_missing(database_url, conn):
    latest = db.migration_version(db.migration_files()[-1])
    conn.execute("DELETE FROM schema_migrations WHERE version = %s", (latest,))
    app = _app(database_url)
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["missing"] == [latest]
        assert body["error"].startswith(f"database schema behind: missing {latest}")
    finally:
        app.extensions["asyncqueue"].database.close()


def test_not_ready_on_a_database_never_migrated(pg_admin_url):
    name = f"aq_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    app = _app(with_dbname(pg_admin_url, name))
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["error"].startswith("database schema not migrated")
    finally:
        app.extensions["asyncqueue"].database.close()
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_unreachable_database_liveness_200_readiness_503():
    app = _app(f"postgresql://x@127.0.0.1:{_closed_port()}/x?connect_timeout=1")
    try:
        client = app.test_client()
        live = client.get("/healthz")
        assert (live.status_code, live.get_json()) == (200, {"status": "ok"})
        started = time.monotonic()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json() == {"error": "database unreachable", "database": "unreachable"}
        assert time.monotonic() - started < 30  # bounded by the pool's timeout (2 s), never a hang
    finally:
        app.extensions["asyncqueue"].database.close()


def test_readiness_does_not_hang_on_a_server_that_never_answers():
    """A port that accepts connections but never speaks (a hung server or a black hole)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or writes
        port = silent.getsockname()[1]
        app = _app(f"postgresql://x@127.0.0.1:{port}/x")
        try:
            client = app.test_client()
            assert client.get("/healthz").status_code == 200
            started = time.monotonic()
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.get_json()["error"] == "database unreachable"
            # docs/operations.md: within the pool's 2 s timeout (plus this loaded machine's scheduling slack)
            assert time.monotonic() - started < 2.5
        finally:
            app.extensions["asyncqueue"].database.close()


def test_readiness_follows_a_database_stop_and_restart(tmp_path):
    """PostgreSQL stopped under a running app: /readyz says 503 (bounded), /healthz stays 200,
    and /readyz is 200 again after the restart, without restarting the app."""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs a PostgreSQL of its own to stop")
    from asyncqueue.dev import embedded_pg

    server = embedded_pg.ensure_running(tmp_path / "pgdata", fast_unsafe=True)
    app = None
    try:
        db.migrate(server.url)
        app = _app(server.url)
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        server.stop()
        started = time.monotonic()
        down = client.get("/readyz")
        assert (down.status_code, down.get_json()["error"]) == (503, "database unreachable")
        assert time.monotonic() - started < 30
        assert client.get("/healthz").status_code == 200
        server.start()
        wait_for(
            lambda: client.get("/readyz").status_code == 200,
            timeout=60,
            interval=0.5,
            message="/readyz to recover after the restart",
        )
    finally:
        if app is not None:
            app.extensions["asyncqueue"].database.close()
        server.destroy()


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the backend may be gone by then
        os.kill(pid, signal.SIGCONT)


def _stopped(pool):
    """The pooled connection's backend, stopped (SIGSTOP): it accepts bytes, never answers."""
    with pool.connection() as conn:
        pid = conn.info.backend_pid
    os.kill(pid, signal.SIGSTOP)
    # Woken in any case after a while, so a hang (the defect) fails the test rather than hangs it.
    resume = threading.Timer(8.0, _resume, (pid,))
    resume.daemon = True
    resume.start()
    return pid


def test_readiness_and_metrics_answer_in_bound_when_the_backend_stops_answering(database_url):
    app = create_app(Settings(database_url=database_url, db_pool_size=1))
    client = app.test_client()
    pool = app.extensions["asyncqueue"].pool()
    stopped = []
    try:
        assert client.get("/readyz").status_code == 200
        stopped.append(_stopped(pool))
        started = time.monotonic()
        ready = client.get("/readyz")
        assert time.monotonic() - started < 2.0  # docs/operations.md: within 2 s, never a hang
        assert (ready.status_code, ready.get_json()["error"]) == (503, "database unreachable")
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)  # a new connection
        stopped.append(_stopped(pool))
        started = time.monotonic()
        scrape = client.get("/metrics")
        assert time.monotonic() - started < 2.0
        assert scrape.status_code == 200
        assert "asyncqueue_database_up 0.0" in scrape.get_data(as_text=True)
    finally:
        for pid in stopped:
            _resume(pid)
        app.extensions["asyncqueue"].database.close()
