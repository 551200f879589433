"""Test databases: clones of the migrated template, dropped afterwards, and the service's
processes on one (tests/support/stack.py)."""

from __future__ import annotations

import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.support.stack import Stack


def with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def clone_database(pg_admin_url: str, template: str) -> tuple[str, str]:
    name = f"aq_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name, with_dbname(pg_admin_url, name)


def drop_database(pg_admin_url: str, name: str) -> None:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def stack_on_a_clone(pg_admin_url: str, template_db: str, prefix: str = "asyncqueue-e2e-", **env):
    """A Stack (nothing started yet) on a fresh clone of the migrated template database, with
    `env` for its processes; stopped, and the clone dropped, afterwards."""
    name, url = clone_database(pg_admin_url, template_db)
    s = Stack(url, Path(tempfile.mkdtemp(prefix=prefix)), **env)
    try:
        yield s
    finally:
        s.stop()
        drop_database(pg_admin_url, name)
