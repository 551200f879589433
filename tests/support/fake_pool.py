"""A connection pool without a database, for unit tests of the worker's threads.

Each statement sent is recorded as a Call named for the SQL it came from: a named query of
sql/queries by its name (the plain claim, whose LIMIT is written into its text, as "task_claim"),
anything else by its own text. A test says what each statement returns, or raises, by name, so
it states its database in the queries' terms and not by matching SQL text.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from asyncqueue import db


@dataclass
class Call:
    name: str
    params: dict | None
    sql: str
    prepare: bool | None = None

    @property
    def limit(self) -> int | None:
        """The LIMIT written into a plain claim's text (None for any other statement)."""
        match = _plain_claim().fullmatch(self.sql)
        return int(match.group(1)) if match else None


@functools.cache
def _names() -> dict[str, str]:
    return {text: name for name, text in db.queries().items()}


@functools.cache
def _plain_claim() -> re.Pattern:
    """task_claim with any number written in for %(limit)s (db.claims.plain_claim_text)."""
    text = re.escape(db.query("task_claim"))
    return re.compile(text.replace(re.escape("%(limit)s"), r"(\d+)"))


def statement_name(sql: str) -> str:
    if sql in _names():
        return _names()[sql]
    if _plain_claim().fullmatch(sql):
        return "task_claim"
    return sql.strip()


# What a statement returns: rows, or a function of the Call giving rows (it may raise).
Answer = list | Callable[[Call], list]


class FakePool:
    """Stands in for psycopg_pool.ConnectionPool: connection() lends the same connection each
    time. `answers` maps statement names to an Answer (unnamed ones return no rows), or is one
    function of the Call for every statement. `on_connection` runs each time a connection is
    asked for, before it is lent: it may change the world meanwhile, or raise as a pool whose
    database is away does."""

    def __init__(
        self,
        answers: dict[str, Answer] | Callable[[Call], list] | None = None,
        *,
        on_connection: Callable[[], None] | None = None,
    ):
        self.answers = answers if answers is not None else {}
        self.on_connection = on_connection
        self.calls: list[Call] = []
        self.connections = 0  # times a connection was asked for
        self._lock = threading.Lock()
        self._conn = FakeConnection(self)

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None):
        with self._lock:
            self.connections += 1
        if self.on_connection is not None:
            self.on_connection()
        yield self._conn

    def names(self) -> list[str]:
        """The statements sent so far, by name, in order."""
        with self._lock:
            return [call.name for call in self.calls]

    def run(self, sql: str, params: dict | None, prepare: bool | None) -> FakeCursor:
        call = Call(statement_name(sql), params, sql, prepare)
        with self._lock:
            self.calls.append(call)
        answer = self.answers if callable(self.answers) else self.answers.get(call.name, [])
        return FakeCursor(answer(call) if callable(answer) else answer)


class FakeConnection:
    """What a pool's connection offers the worker: execute, pipeline, transaction, cursor."""

    def __init__(self, pool: FakePool):
        self.pool = pool

    def execute(self, sql: str, params: dict | None = None, prepare: bool | None = None):
        return self.pool.run(sql, params, prepare)

    def pipeline(self):
        return contextlib.nullcontext()

    def transaction(self):
        return contextlib.nullcontext()

    def cursor(self, *args, **kwargs):
        return FakeCursor([], self.pool)


class FakeCursor:
    def __init__(self, rows: list, pool: FakePool | None = None):
        self.rows = list(rows)
        self._pool = pool

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql: str, params: dict | None = None, prepare: bool | None = None):
        self.rows = self._pool.run(sql, params, prepare).rows
        return self

    def fetchall(self) -> list:
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None
