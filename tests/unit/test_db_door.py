"""One door to the database: SQL is written only in sql/ and the db package, and the typed rows
match the columns their queries return."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from asyncqueue import db
from asyncqueue.db import rows
from asyncqueue.db.rows import (
    ApiKeyRow,
    ClaimedTask,
    CreateSyncRow,
    FinishedTask,
    KeyOwnerRow,
    MemberRow,
    QueueFigureRow,
    TaskRow,
    TeamCreateCounts,
    TeamRow,
    TeamSummaryRow,
    WorkerIdentity,
    WorkerRow,
    column_names,
)

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "asyncqueue"
SQL_START = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|SET|LISTEN|NOTIFY|DISCARD|CREATE|ALTER|DROP)\s"
)


def sql_literals(path: Path) -> list[str]:
    """String constants in the module that read as SQL statements (docstrings excluded)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and SQL_START.match(node.value)
    ]


OUTSIDE_DB = sorted(p for p in PACKAGE.rglob("*.py") if "db" not in p.relative_to(PACKAGE).parts)


@pytest.mark.parametrize("path", OUTSIDE_DB, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_sql_outside_sql_and_the_db_package(path):
    assert sql_literals(path) == []


def test_the_sql_finder_finds_sql(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""SELECT in a docstring is prose."""\nQ = "SELECT 1"\nx = "selection"\n')
    assert sql_literals(module) == ["SELECT 1"]


def returned_columns(text: str) -> tuple[str, ...]:
    """The names of the columns a statement returns, in order: those of its RETURNING, else of
    its outermost SELECT (a UNION's first), each its alias or the column's own name."""
    sql = re.sub(r"'[^']*'", "''", re.sub(r"--[^\n]*", "", text))
    depth, level = [], 0
    for char in sql:
        level -= char == ")"
        depth.append(level)
        level += char == "("
    words = [
        (m.group(1).upper(), m)
        for m in re.finditer(r"\b(SELECT|RETURNING|FROM)\b", sql, re.I)
        if depth[m.start()] == 0
    ]
    starts = [m for word, m in words if word == "RETURNING"] or [
        m for word, m in words if word == "SELECT"
    ]
    start = starts[0].end()
    end = next((m.start() for word, m in words if word == "FROM" and m.start() > start), len(sql))
    items, last = [], start
    for i in range(start, end):
        if sql[i] == "," and depth[i] == 0:
            items.append(sql[last:i])
            last = i + 1
    items.append(sql[last:end])
    names = []
    for item in items:
        item = item.strip().rstrip(";").strip()
        alias = re.search(r"\bAS\s+(\w+)$", item, re.I)
        names.append(alias.group(1) if alias else re.search(r"(\w+|\*)$", item).group(1))
    return tuple(names)


@pytest.mark.parametrize(
    "text, columns",
    [
        ("SELECT a, t.b, f(x, y) AS c FROM t", ("a", "b", "c")),
        ("SELECT *, now() - x AS age FROM t", ("*", "age")),
        ("WITH w AS (SELECT z FROM t) SELECT (SELECT 1 FROM w) AS one", ("one",)),
        (
            "INSERT INTO t (a) SELECT a FROM u RETURNING -- why\n id, 'x,y' AS label",
            ("id", "label"),
        ),
        ("SELECT 'a' AS k, 1 AS v FROM t UNION ALL SELECT 'b', 2", ("k", "v")),
    ],
)
def test_returned_columns(text, columns):
    assert returned_columns(text) == columns


# Each query whose rows a db function types, and the row class it types them with (args_row:
# by position, so the order matters as much as the names).
ROW_QUERIES = [
    ("task_insert_for_key", TaskRow),
    ("task_get", TaskRow),
    ("task_list", TaskRow),
    ("task_cancel", TaskRow),
    ("task_claim", ClaimedTask),
    ("task_claim_skipping", ClaimedTask),
    ("task_finish_many", FinishedTask),
    ("team_create", TeamRow),
    ("team_find", TeamRow),
    ("team_lock", TeamRow),
    ("team_set_plan", TeamRow),
    ("team_list", TeamSummaryRow),
    ("member_add", MemberRow),
    ("member_remove", MemberRow),
    ("member_list", MemberRow),
    ("key_create", ApiKeyRow),
    ("key_list", ApiKeyRow),
    ("key_revoke", ApiKeyRow),
    ("key_authenticate", KeyOwnerRow),
    ("worker_list", WorkerRow),
    ("queue_figures", QueueFigureRow),
    ("create_counts_sync", CreateSyncRow),
]
# Row classes read from inside another row, or written, rather than the columns of a query.
NESTED = {TeamCreateCounts, WorkerIdentity}


@pytest.mark.parametrize("name, row_class", ROW_QUERIES, ids=[name for name, _ in ROW_QUERIES])
def test_each_query_returns_exactly_its_row_class_columns(name, row_class):
    assert returned_columns(db.query(name)) == column_names(row_class)


def test_every_row_class_is_checked_against_its_queries():
    classes = {
        cls
        for _, cls in inspect.getmembers(rows, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__ == rows.__name__
    }
    unchecked = classes - NESTED - {cls for _, cls in ROW_QUERIES}
    assert not unchecked, f"add (query name, row class) to ROW_QUERIES for {unchecked}"
