"""The `asyncqueue` command through click's runner, against a real database."""

import json
import threading

import pytest
from click.testing import CliRunner

from asyncqueue import db
from asyncqueue.cli import main


@pytest.fixture
def run(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)

    def invoke(*args):
        result = CliRunner().invoke(main, list(args))
        return result

    return invoke


def out(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_migrate_is_idempotent(run, database_url):
    assert out(run("db", "migrate", "--json")) == {"applied": []}  # the template was migrated
    with db.connect(database_url) as conn:
        versions = [r["version"] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [p.stem for p in db.migration_files()]


def test_concurrent_migrations_are_safe(pg_admin_url):
    import uuid

    import psycopg

    from tests.support.databases import drop_database, with_dbname

    name = f"aq_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(pg_admin_url, name)
    results, errors = [], []

    def migrate():
        try:
            results.append(db.migrate(url))
        except Exception as exc:  # pragma: no cover - the failure is the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drop_database(pg_admin_url, name)
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(db.migration_files())]


def test_teams(run):
    team = out(run("teams", "create", "acme", "--json"))
    assert (team["name"], team["plan"]) == ("acme", "free")
    pro = out(run("teams", "create", "bigco", "--plan", "pro", "--json"))
    assert pro["plan"] == "pro"
    listed = out(run("teams", "list", "--json"))
    assert [t["name"] for t in listed] == ["acme", "bigco"]
    assert listed[0]["members"] == 0 and listed[0]["activeKeys"] == 0
    moved = out(run("teams", "set-plan", team["id"], "pro", "--json"))
    assert moved["plan"] == "pro"
    duplicate = run("teams", "create", "acme")
    assert duplicate.exit_code != 0
    assert "already exists" in duplicate.output
    missing = run("teams", "set-plan", "nobody", "pro")
    assert missing.exit_code != 0 and "no team with id or name 'nobody'" in missing.output
    assert "Traceback" not in missing.output


def test_members_and_the_free_plan_limit(run):
    run("teams", "create", "acme")
    assert out(run("members", "add", "acme", "a@example.com", "--json"))["email"] == "a@example.com"
    out(run("members", "add", "acme", "B@Example.com", "--json"))
    third = run("members", "add", "acme", "c@example.com")
    assert third.exit_code == 1
    assert "free plan, which allows 2 members" in third.output
    assert [m["email"] for m in out(run("members", "list", "acme", "--json"))] == [
        "a@example.com",
        "b@example.com",
    ]
    out(run("teams", "set-plan", "acme", "pro", "--json"))
    out(run("members", "add", "acme", "c@example.com", "--json"))
    refused = run("teams", "set-plan", "acme", "free")
    assert refused.exit_code == 1 and "has 3 members" in refused.output
    out(run("members", "remove", "acme", "c@example.com", "--json"))
    assert run("members", "remove", "acme", "c@example.com").exit_code == 1
    assert run("members", "add", "acme", "not-an-email").exit_code == 1


def test_keys_and_the_free_plan_limit(run, database_url):
    team = out(run("teams", "create", "acme", "--json"))
    created = out(run("keys", "create", "acme", "--name", "ci", "--json"))
    assert created["teamId"] == team["id"] and created["key"].startswith("aq_")
    second = run("keys", "create", "acme")
    assert second.exit_code == 1
    assert "free plan, which allows 1 active API key" in second.output
    listed = out(run("keys", "list", "acme", "--json"))
    assert len(listed) == 1 and "key" not in listed[0] and listed[0]["name"] == "ci"
    assert created["key"] not in run("keys", "list", "acme").output
    revoked = out(run("keys", "revoke", created["id"], "--json"))
    assert revoked["revokedAt"] is not None
    out(run("keys", "create", "acme", "--json"))  # the revoked key no longer counts
    assert run("keys", "revoke", "00000000-0000-0000-0000-000000000000").exit_code == 1


def test_key_created_by_cli_authenticates(run, database_url):
    from asyncqueue.api import create_app
    from asyncqueue.config import Settings

    run("teams", "create", "acme")
    key = out(run("keys", "create", "acme", "--json"))["key"]
    app = create_app(Settings(database_url=database_url))
    assert app.test_client().get("/v1/tasks", headers={"X-API-Key": key}).status_code == 200
    app.extensions["asyncqueue"].database.close()


def test_errors_are_one_line_without_traceback(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(main, ["teams", "list"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "DATABASE_URL is not set" in result.output


@pytest.mark.parametrize(
    "args", [["teams", "list"], ["teams", "create", "x"], ["workers", "list"], ["tasks", "prune"]]
)
def test_a_database_not_migrated_is_one_line_saying_what_to_do(pg_admin_url, monkeypatch, args):
    import uuid

    import psycopg

    from tests.support.databases import drop_database, with_dbname

    name = f"aq_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        monkeypatch.setenv("DATABASE_URL", with_dbname(pg_admin_url, name))
        result = CliRunner().invoke(main, args)
    finally:
        drop_database(pg_admin_url, name)
    assert result.exit_code == 1, result.output
    assert result.output.strip().count("\n") == 0, result.output
    assert "run `asyncqueue db migrate`" in result.output


def test_task_counts_migration_counts_existing_tasks(pg_admin_url):
    """0003 on a database that already has tasks: the counts start right."""
    import uuid

    import psycopg

    from tests.support import make_team
    from tests.support.databases import drop_database, with_dbname
    from tests.support.tasks import assert_counts_match, insert_tasks

    name = f"aq_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(pg_admin_url, name)
    try:
        with db.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations (version text PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for path in db.migration_files()[:2]:
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations VALUES (%s)", (path.stem,))
            team = conn.execute(db.query("team_create"), {"name": "old", "plan": "free"}).fetchone()
            insert_tasks(conn, team["id"], 40)
            insert_tasks(conn, team["id"], 2, status="delayed")
        assert db.migrate(url) == [p.stem for p in db.migration_files()[2:]]
        with db.connect(url, autocommit=True) as conn:
            assert_counts_match(conn)
            make_team(conn, "new")
    finally:
        drop_database(pg_admin_url, name)
