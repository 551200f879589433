"""The release before this one still works on the newest schema: during a rolling deploy its
processes run against a database the new release has already migrated, so every migration must
leave the schema usable by them.

"The release before" is the code at the first parent of the commit that added the newest migration
(or HEAD, while that migration is not committed yet). Its named queries (sql/queries) must all
still be accepted by PostgreSQL on a database migrated to the newest migration: parsed and analysed
against the tables, columns, functions and types there. Its inserts must give every column the
newest schema requires (NOT NULL, no default), which parsing alone would not show. Its migrations
must be here unchanged, since databases already carry them. Needs a git clone with its history;
skipped otherwise (an sdist, a shallow clone)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from asyncqueue import db

ROOT = Path(__file__).resolve().parents[2]

# The named-query files' format (as every release so far writes it): `-- name: x` starts a
# query, `-- part: y` a piece of SQL that queries pull in with a line `-- include: y`.
BLOCK = re.compile(r"^-- (name|part): ", re.M)
INCLUDE = re.compile(r"^-- include: (\S+)$", re.M)
# psycopg's placeholders, named or not, and its escaped percent sign.
PLACEHOLDER = re.compile(r"%\((\w+)\)[sbt]|%[sbt]|%%")
# Optional clauses filled in by the code from fixed strings (an ORDER BY direction, a filter).
TEMPLATE_FIELD = re.compile(r"\{\w+\}")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def previous_release() -> str:
    """The commit of the release before this one; skips the test where history is missing."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        top = git("rev-parse", "--show-toplevel").strip()
    except subprocess.CalledProcessError:
        pytest.skip("not run from a git clone (an sdist?): no release before to compare with")
    if Path(top).resolve() != ROOT:
        pytest.skip(f"{ROOT} is not the top of its own git clone")
    if git("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.skip("a shallow clone: the release before is not in its history")
    newest = f"sql/migrations/{db.migration_files()[-1].name}"
    added = git("log", "--diff-filter=A", "--format=%H", "--", newest).split()
    if not added:
        return git("rev-parse", "HEAD").strip()  # the newest migration is not committed yet
    try:
        return git("rev-parse", "--verify", "--quiet", f"{added[0]}^1").strip()
    except subprocess.CalledProcessError:
        pytest.skip(f"{newest} came with the first commit: there is no release before")


def sql_files_at(commit: str, folder: str) -> dict[str, str]:
    names = git("ls-tree", "--name-only", commit, f"{folder}/").split()
    return {
        Path(name).name: git("show", f"{commit}:{name}") for name in names if name.endswith(".sql")
    }


def named_queries(texts: list[str]) -> dict[str, str]:
    blocks: dict[str, tuple[str, str]] = {}
    for text in texts:
        pieces = BLOCK.split(text)[1:]
        for kind, block in zip(pieces[::2], pieces[1::2], strict=True):
            name, _, body = block.partition("\n")
            blocks[name.strip()] = (kind, body.strip().rstrip(";"))
    parts = {name: body for name, (kind, body) in blocks.items() if kind == "part"}

    def resolve(body: str) -> str:
        return INCLUDE.sub(lambda m: resolve(parts[m.group(1)]), body)

    return {name: resolve(body) for name, (kind, body) in blocks.items() if kind == "name"}


def as_prepared(text: str) -> str:
    """psycopg's placeholders as PostgreSQL's $n; template fields left empty."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        name = match.group(1) or f"#{len(names)}"  # each unnamed one a parameter of its own
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return PLACEHOLDER.sub(number, TEMPLATE_FIELD.sub("", text))


def test_the_release_befores_queries_run_on_the_newest_schema(conn):
    commit = previous_release()
    queries = named_queries(list(sql_files_at(commit, "sql/queries").values()))
    assert queries, f"no named queries in sql/queries at {commit}"
    refused = {}
    for name, text in sorted(queries.items()):
        # Parse only (the extended protocol's Parse, parameter types left to the server): the
        # statement is analysed against the schema, and nothing is run.
        result = conn.pgconn.prepare(b"", as_prepared(text).encode())
        if result.error_message:
            refused[name] = result.error_message.decode(errors="replace").strip()
    listed = "".join(f"\n{name}: {error}" for name, error in refused.items())
    assert not refused, f"the newest schema refuses queries of {commit[:12]}:{listed}"


def statements(sql: str) -> list[str]:
    """A migration's text without its comment lines and blank lines (a comment may be edited)."""
    return [
        line.rstrip()
        for line in sql.splitlines()
        if line.strip() and not line.lstrip().startswith("--")
    ]


def test_the_release_befores_migrations_are_kept_unchanged():
    commit = previous_release()
    before = sql_files_at(commit, "sql/migrations")
    now = {f.name: f.read_text() for f in db.migration_files()}
    assert before, f"no migrations at {commit}"
    changed = sorted(
        name for name, text in before.items() if statements(now.get(name, "")) != statements(text)
    )
    assert changed == [], f"migrations changed or gone since {commit[:12]}: {changed}"


INSERT = re.compile(r"INSERT INTO (\w+)(?:\s+AS\s+\w+)?\s*\(([^)]*)\)", re.I)


def test_the_release_befores_inserts_give_every_column_the_newest_schema_requires(conn):
    # Parsing does not see what only running would: a column the newest schema requires (NOT
    # NULL, no default) that the release before does not write refuses its inserts.
    commit = previous_release()
    queries = named_queries(list(sql_files_at(commit, "sql/queries").values()))
    required: dict[str, set[str]] = {}
    for row in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_nullable = 'NO' "
        "AND column_default IS NULL AND is_identity = 'NO' AND is_generated = 'NEVER'"
    ):
        required.setdefault(row["table_name"], set()).add(row["column_name"])
    inserts = [(name, m) for name, text in queries.items() for m in INSERT.finditer(text)]
    assert inserts, f"no INSERT found in the queries of {commit[:12]}"
    missing = {
        f"{name} into {m.group(1)}": sorted(
            required.get(m.group(1), set()) - {c.strip() for c in m.group(2).split(",")}
        )
        for name, m in inserts
    }
    assert {k: v for k, v in missing.items() if v} == {}
