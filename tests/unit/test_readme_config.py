"""The README's configuration table agrees with `Settings`, both ways: every variable Settings
reads has a row, every row is a variable Settings reads or one of the few read elsewhere (which
its row says), each default shown is the one Settings applies, and no module reads another
variable from the environment behind the table's back."""

from __future__ import annotations

import ast
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

import asyncqueue
from asyncqueue.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(asyncqueue.__file__).resolve().parent

# Read where they are used, not by Settings: the variable -> the module (under the package) that
# reads it. Their rows must say so.
READ_ELSEWHERE = {
    "PROMETHEUS_MULTIPROC_DIR": "web/metrics_multiprocess.py",
    "PGOPTIONS": "db/__init__.py",
}
ELSEWHERE_MARK = "*not `Settings`*"


def table_rows(readme: str) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of each row of the table under "## Configuration"."""
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            assert len(cells) == 3, line
            rows.append((cells[0].strip("`"), cells[1], cells[2]))
    return rows


ROWS = table_rows((ROOT / "README.md").read_text())
TABLE = {name: (default, meaning) for name, default, meaning in ROWS}
SETTINGS = {f.metadata["env"]: f for f in fields(Settings)}


def test_the_table_is_found_and_names_each_variable_once():
    names = [name for name, _, _ in ROWS]
    assert len(names) > 10
    assert len(names) == len(set(names)), names


def test_every_variable_settings_reads_has_a_row():
    assert sorted(set(SETTINGS) - set(TABLE)) == []


def test_every_row_is_read_by_settings_or_marked_as_read_elsewhere():
    assert sorted(set(TABLE) - set(SETTINGS) - set(READ_ELSEWHERE)) == []
    for name, (_, meaning) in TABLE.items():
        assert (ELSEWHERE_MARK in meaning) == (name in READ_ELSEWHERE), name


def _environment_reads(path: Path) -> list[tuple[str | None, int]]:
    """(variable, line) for each `os.environ.get(X)`, `os.environ[X]` or `os.getenv(X)` in a
    module; the variable is None when it is not a string the module spells out."""
    tree = ast.parse(path.read_text())
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }

    def is_os(node, attr: str) -> bool:  # os.<attr>; a WSGI `request.environ` is no environment
        return (
            isinstance(node, ast.Attribute)
            and node.attr == attr
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )

    def named(node) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return constants.get(node.id) if isinstance(node, ast.Name) else None

    reads = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            func = node.func
            if (func.attr == "get" and is_os(func.value, "environ")) or is_os(func, "getenv"):
                key = node.args[0]
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and is_os(node.value, "environ")
        ):
            key = node.slice
        if key is not None:
            reads.append((named(key), node.lineno))
    return reads


def environment_reads() -> dict[str, str | None]:
    """("module.py:line" -> variable) for every environment read in the package."""
    return {
        f"{path.relative_to(PACKAGE).as_posix()}:{line}": name
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, line in _environment_reads(path)
    }


def test_no_module_reads_a_variable_the_table_does_not_list():
    reads = environment_reads()
    assert {where: name for where, name in reads.items() if name not in TABLE} == {}


@pytest.mark.parametrize("name, module", sorted(READ_ELSEWHERE.items()))
def test_a_variable_read_elsewhere_is_read_where_its_row_says(name, module):
    readers = {where.split(":")[0] for where, read in environment_reads().items() if read == name}
    assert module in readers, readers
    assert f"`{module}`" in TABLE[name][1]
    assert name not in SETTINGS


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_default_shown_is_the_one_settings_applies(name):
    field = SETTINGS[name]
    shown = TABLE[name][0]
    applied = getattr(Settings(database_url="postgresql://unused"), field.name)
    required = field.default is MISSING and field.default_factory is MISSING
    if shown.startswith("`"):
        # Read the way the variable would be: `false` is False, `free=20,pro=500` a dict.
        assert field.metadata["parse"](shown.split("`")[1]) == applied
    elif shown.startswith("—"):
        assert required or field.default is None, shown
        assert ("required" in shown) == required, shown
    else:
        # A default derived from others, with its value under the defaults in parentheses.
        value = re.search(r"\((\d+)\)", shown)
        assert value is not None and int(value.group(1)) == applied, shown
