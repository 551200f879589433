"""One door to the database: SQL is written only in sql/ and the db package, and the typed rows
match the columns their queries return."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from asyncqueue import db
from asyncqueue.db.rows import TaskRow, column_names

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


@pytest.mark.parametrize("name", ["task_insert_for_key", "task_get", "task_list", "task_cancel"])
def test_the_api_task_queries_return_exactly_the_task_row_columns(name):
    text = db.query(name)
    listed = re.search(
        r"(?:SELECT|RETURNING)\s+(?:--[^\n]*\n)?(id, team_id,.*?completed_at)", text, re.S
    )
    assert listed, text
    columns = tuple(c.strip() for c in listed.group(1).replace("\n", " ").split(","))
    assert columns == column_names(TaskRow)
    assert "*" not in text.split("FROM")[0] or name == "task_insert_for_key"
