"""Statements run with a row factory chosen per statement: typed rows (an args_row of a class in
db/rows.py, built from the values in the order the query lists them: cheaper than by column
name), or the bare values of a one-column result."""

from __future__ import annotations

from typing import Any, TypeVar

from psycopg.rows import RowFactory, scalar_row

T = TypeVar("T")


def one(conn, sql: str, params: dict | None, rows: RowFactory[T]) -> T | None:
    """The statement's first row, typed by `rows` (None if it returns none)."""
    with conn.cursor(row_factory=rows) as cur:
        return cur.execute(sql, params).fetchone()


def many(conn, sql: str, params: dict | None, rows: RowFactory[T]) -> list[T]:
    with conn.cursor(row_factory=rows) as cur:
        return cur.execute(sql, params).fetchall()


def value(conn, sql: str, params: dict | None = None) -> Any:
    """The first column of the statement's first row (None if it returns none)."""
    with conn.cursor(row_factory=scalar_row) as cur:
        return cur.execute(sql, params).fetchone()


def values(conn, sql: str, params: dict | None = None) -> list:
    """The first column of every row the statement returns."""
    with conn.cursor(row_factory=scalar_row) as cur:
        return cur.execute(sql, params).fetchall()
