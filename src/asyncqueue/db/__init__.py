"""The one door to the database: connections, the named queries in sql/queries, and the
migrations runner. No SQL is written outside sql/ and this package; typed rows are in rows.py
and the API's task statements in tasks.py.

sql/ is installed as the package `asyncqueue.sql` (see setup.py), so it is found through the
package wherever it is installed, never through the working directory.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

import psycopg
import psycopg.sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from asyncqueue import domain

MIGRATION_NAME = re.compile(r"^[0-9]{4}_.*\.sql$")
MIGRATION_LOCK_ID = domain.MIGRATION_LOCK_ID


BLOCK = re.compile(r"^-- (name|part): ", re.M)
INCLUDE = re.compile(r"^-- include: (\S+)$", re.M)
# Any line that mentions include: in a comment; each must be exactly an INCLUDE line, or the SQL
# it meant to pull in would be silently missing.
LOOKS_LIKE_INCLUDE = re.compile(r"^.*--.*\binclude\s*:.*$", re.M | re.I)


@cache
def queries() -> dict[str, str]:
    """Every `-- name: x` block of sql/queries/*.sql, by name. A line `-- include: y` in a block
    stands for the text of the `-- part: y` block (SQL two queries share, written once); a part
    is not a query of its own."""
    blocks: dict[str, tuple[str, str]] = {}
    for path in _sql_files("queries"):
        pieces = BLOCK.split(path.read_text())[1:]
        for kind, block in zip(pieces[::2], pieces[1::2], strict=True):
            name, _, text = block.partition("\n")
            name = name.strip()
            if name in blocks:
                raise RuntimeError(f"query {name} is defined twice")
            blocks[name] = (kind, text.strip().rstrip(";"))
    parts = {name: text for name, (kind, text) in blocks.items() if kind == "part"}
    resolved = {
        name: _resolve_includes(name, text, parts, ())
        for name, (kind, text) in blocks.items()
        if kind == "name"
    }
    used = {m.group(1) for _, text in blocks.values() for m in INCLUDE.finditer(text)}
    unused = sorted(set(parts) - used)
    if unused:
        raise RuntimeError(f"SQL part {unused[0]} is included nowhere")
    return resolved


def _resolve_includes(name: str, text: str, parts: dict[str, str], within: tuple) -> str:
    for line in LOOKS_LIKE_INCLUDE.findall(text):
        if not INCLUDE.fullmatch(line):
            raise RuntimeError(f"query {name}: {line.strip()!r} is not `-- include: part`")

    def include(match: re.Match) -> str:
        part = match.group(1)
        if part not in parts:
            raise RuntimeError(f"query {name} includes {part}, which is not a `-- part:`")
        if part in within:
            raise RuntimeError(f"query {name}: part {part} includes itself")
        return _resolve_includes(name, parts[part], parts, (*within, part))

    return INCLUDE.sub(include, text)


def query(name: str) -> str:
    return queries()[name]


def connect(url: str, **kwargs) -> psycopg.Connection:
    """A connection with dict rows and the keepalives (KEEPALIVE_CONNECT_KWARGS), which
    `kwargs` may override."""
    return psycopg.connect(url, row_factory=dict_row, **{**KEEPALIVE_CONNECT_KWARGS, **kwargs})


def own_options(url: str) -> str | None:
    """The `options` connection parameter `url` would use by itself (its own, or PGOPTIONS)."""
    return psycopg.conninfo.conninfo_to_dict(url).get("options") or os.environ.get("PGOPTIONS")


def options_adding(url: str, option: str) -> str:
    """The `options` connection parameter for `url` with `option` added: passed as a keyword,
    `options` replaces the URL's own (or PGOPTIONS), which a deployment may rely on (say, a
    search_path), so they are kept before it."""
    own = own_options(url)
    return f"{own} {option}" if own else option


# A database that vanishes without closing the connection (a dead machine, a dropped route) is
# noticed within about 25 s by the keepalives, and a write stuck unacknowledged within 30 s,
# rather than after the kernel's defaults (hours): the pool then reconnects.
KEEPALIVE_CONNECT_KWARGS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms
}


@contextmanager
def answered_within(conn: psycopg.Connection, seconds: float) -> Iterator[None]:
    """Run statements on `conn` that must be answered within `seconds`, or fail.

    Server-side, a statement_timeout (set LOCAL, in a transaction) ends a slow query and keeps
    the connection. But a backend that stops answering altogether (stopped, swapped out, a hung
    machine whose kernel still acknowledges) never acts on a statement_timeout or a cancel, and
    keepalives see a live peer: so past the deadline the socket is shut down from a timer, the
    waiting call fails with OperationalError and the pool discards the broken connection."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))  # shutting down the dup ends both
    lock, done = threading.Lock(), [False]

    def give_up() -> None:
        with lock:
            if not done[0]:
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds + 0.25, give_up)  # the server's own timeout goes first
    timer.daemon = True
    timer.start()
    try:
        with conn.transaction():
            set_statement_timeout(conn, seconds)
            yield
    finally:
        with lock:
            done[0] = True
        timer.cancel()
        sock.close()


def set_statement_timeout(conn: psycopg.Connection, seconds: float) -> None:
    """A statement timeout for the rest of the current transaction."""
    conn.execute(query("statement_timeout_local"), {"ms": str(int(seconds * 1000))})


def discard_plans(conn: psycopg.Connection) -> None:
    conn.execute(query("discard_plans"))


def listen(conn: psycopg.Connection, channel: str) -> None:
    conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))


def make_pool(
    url: str,
    size: int,
    *,
    name: str,
    timeout: float = 30.0,
    configure: Callable | None = None,
    connect_kwargs: dict | None = None,
) -> ConnectionPool:
    """An open pool of autocommit connections, with the keepalives; callers open transactions
    explicitly. `connect_kwargs` are extra libpq connection parameters."""

    def _configure(conn: psycopg.Connection) -> None:
        conn.autocommit = True
        if configure:
            configure(conn)

    return ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        name=name,
        kwargs={"row_factory": dict_row, **KEEPALIVE_CONNECT_KWARGS, **(connect_kwargs or {})},
        configure=_configure,
        # No ping before each use (a round trip per checkout): callers retry or re-check what
        # a dead connection breaks, and the pool drops connections found broken.
        reconnect_timeout=3600,
        timeout=timeout,
        open=True,
    )


def _sql_files(folder: str) -> list[Traversable]:
    # Looked up when first needed, not at import, so a process that imported the wrong copy of
    # the package gets asyncqueue.installed's one-line answer instead of an import traceback.
    return sorted(
        (f for f in files("asyncqueue.sql").joinpath(folder).iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )


def migration_files() -> list[Traversable]:
    """The numbered migrations, in order (each has .name, .stem and .read_text())."""
    return [f for f in _sql_files("migrations") if MIGRATION_NAME.match(f.name)]


def migration_version(path: Traversable) -> str:
    return path.name.removesuffix(".sql")


def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied, in order, each in its own transaction.

    A session advisory lock serialises concurrent runs (two release phases, or a web and a
    worker starting together): the second waits, then finds nothing left to do.
    """
    applied_now: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute(query("migration_lock"), {"lock": MIGRATION_LOCK_ID})
        try:
            conn.execute(query("schema_migrations_create"))
            done = {r["version"] for r in conn.execute(query("schema_migration_versions"))}
            for path in migration_files():
                version = migration_version(path)
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute(query("schema_migration_record"), {"version": version})
                applied_now.append(version)
        finally:
            conn.execute(query("migration_unlock"), {"lock": MIGRATION_LOCK_ID})
    return applied_now
