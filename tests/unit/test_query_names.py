"""Every named query the code asks for exists in sql/queries (a typo would fail only at run
time, on the path that uses it)."""

import re
from pathlib import Path

import pytest

from asyncqueue import db

ROOT = Path(__file__).resolve().parents[2]
# query("name") (db.query outside the db package), and db.tasks' _one(conn, "name", ...).
QUERY_NAME_USE = re.compile(r"""(?:\bquery\(|_one\(\s*\w+,)\s*["']([^"']+)["']""")


def names_used() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for path in sorted((ROOT / "src" / "asyncqueue").rglob("*.py")):
        for name in re.findall(QUERY_NAME_USE, path.read_text()):
            used.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return used


def test_every_query_the_code_names_exists():
    used = names_used()
    assert len(used) > 10  # the search did find the code's queries
    missing = {name: where for name, where in used.items() if name not in db.queries()}
    assert missing == {}


def test_an_included_part_is_written_once_and_used_whole():
    text = db.queries()
    assert not any(db.INCLUDE.search(q) for q in text.values())  # every include resolved
    assert "task_claim_mark" not in text  # a part is not a query
    for name in ("task_claim", "task_claim_skipping"):
        assert text[name].count("UPDATE tasks t") == 1
        assert text[name].endswith("FROM claimed")


@pytest.mark.parametrize(
    "text, parts, expected",
    [
        ("SELECT 1,\n-- include: a", {"a": "2"}, "SELECT 1,\n2"),
        ("x\n--include:  a  \ny", {"a": "1"}, "query q: '--include:  a' is not `-- include: part`"),
        ("-- include: a", {"a": "(\n-- include: b\n)", "b": "2"}, "(\n2\n)"),  # nested
        ("-- include: missing", {}, "query q includes missing, which is not a `-- part:`"),
        ("-- include: a", {"a": "-- include: a"}, "query q: part a includes itself"),
        # Lines meant as includes but not written as one would silently drop SQL.
        ("x\n    -- include: a", {"a": "1"}, "query q: '-- include: a' is not `-- include: part`"),
        ("-- Include: a", {"a": "1"}, "query q: '-- Include: a' is not `-- include: part`"),
        (
            "-- include: a -- why",
            {"a": "1"},
            "query q: '-- include: a -- why' is not `-- include: part`",
        ),
        ("--\ninclude: a", {"a": "1"}, "--\ninclude: a"),  # (no comment: left to PostgreSQL)
    ],
)
def test_includes(text, parts, expected):
    try:
        assert db._resolve_includes("q", text, parts, ()) == expected
    except RuntimeError as err:
        assert str(err) == expected


def test_a_part_nothing_includes_is_an_error(monkeypatch, tmp_path):
    (tmp_path / "x.sql").write_text("-- name: q\nSELECT 1\n\n-- part: orphan\nWHERE false\n")
    monkeypatch.setattr(db, "_sql_files", lambda folder: [tmp_path / "x.sql"])
    with pytest.raises(RuntimeError, match="SQL part orphan is included nowhere"):
        db.queries.__wrapped__()
