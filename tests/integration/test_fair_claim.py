"""The claim's skipping of teams at their cap, against a real PostgreSQL: the right rows, and a
plan that never walks the skipped team's backlog."""

import json

from asyncqueue import db
from tests.support import make_team
from tests.support.tasks import claim, insert_tasks


def test_skipping_a_team_takes_the_others_oldest_due_rows(conn):
    flood, _ = make_team(conn, "flood", "pro")
    small, _ = make_team(conn, "small", "free")
    other, _ = make_team(conn, "other", "free")
    insert_tasks(conn, flood["id"], 500)  # all older than the others' (see the update below)
    insert_tasks(conn, small["id"], 3)
    insert_tasks(conn, other["id"], 2)
    conn.execute(
        "UPDATE tasks SET next_run_at = next_run_at - interval '1 hour' WHERE team_id = %s",
        (flood["id"],),
    )
    assert {r.team_id for r in claim(conn, limit=4)} == {flood["id"]}  # oldest first
    got = claim(conn, limit=4, skip=[flood["id"]])
    assert len(got) == 4
    assert {r.team_id for r in got} <= {small["id"], other["id"]}
    held = conn.execute(
        "SELECT count(*) AS n FROM tasks WHERE status = 'processing' AND claim_token = ANY(%s)",
        ([r.claim_token for r in got],),
    ).fetchone()["n"]
    assert held == 4
    rest = claim(conn, limit=4, skip=[flood["id"]])
    assert len(rest) == 1  # 5 of theirs in all, none claimed twice
    assert claim(conn, limit=4, skip=[flood["id"]]) == []


def test_skip_leaves_delayed_and_running_tasks_alone(conn):
    flood, _ = make_team(conn, "flood", "pro")
    small, _ = make_team(conn, "small", "free")
    insert_tasks(conn, flood["id"], 10)
    insert_tasks(conn, small["id"], 2)
    conn.execute(
        "UPDATE tasks SET next_run_at = now() + interval '1 hour', status = 'delayed' "
        "WHERE team_id = %s",
        (small["id"],),
    )
    assert claim(conn, limit=4, skip=[flood["id"]]) == []


def plan_of(conn, skip) -> dict:
    query = db.query("task_claim_skipping" if skip else "task_claim")
    rows = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + query,
        {"limit": 16, "grace": 10, "worker": "explain", "skip": skip},
    ).fetchone()
    conn.rollback()
    return rows["QUERY PLAN"][0]["Plan"]


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def rows_read(node: dict) -> float:
    """Rows a node produced or threw away, over all its loops."""
    loops = node.get("Actual Loops", 1)
    return (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops


def test_plans_single_team_scans_tasks_due_and_skipping_never_walks_the_backlog(database_url):
    with db.connect(database_url) as conn:
        flood, _ = make_team(conn, "flood", "pro")
        small, _ = make_team(conn, "small", "free")
        insert_tasks(conn, flood["id"], 50_000)
        insert_tasks(conn, small["id"], 1)
        conn.commit()
        conn.execute("ANALYZE tasks")
        conn.commit()
        single = list(nodes(plan_of(conn, [])))
        scans = {n.get("Index Name") for n in single if n.get("Actual Loops")}
        assert "tasks_due" in scans and "tasks_team_due" not in scans
        skipping = list(nodes(plan_of(conn, [flood["id"]])))
        assert "tasks_team_due" in {n.get("Index Name") for n in skipping}
        # No node comes anywhere near the flood's 50,000 rows.
        big = [n for n in skipping if rows_read(n) >= 100]
        assert not big, json.dumps(big)[:3000]


def test_two_workers_skipping_at_once_each_get_rows_while_work_waits(conn, database_url):
    # Two claims in flight together: the first holds its rows (transaction open) while the
    # second probes. The second must pass over the first's rows and take the next ones.
    flood, _ = make_team(conn, "flood", "pro")
    insert_tasks(conn, flood["id"], 100)
    for n in range(6):
        team, _ = make_team(conn, f"small{n}", "free")
        insert_tasks(conn, team["id"], 8)  # 48 due rows of other teams
    conn.commit()
    with db.connect(database_url) as first, db.connect(database_url) as second:
        got_first = claim(first, limit=4, skip=[flood["id"]])  # transaction left open
        got_second = claim(second, limit=4, skip=[flood["id"]])
        first.commit()
        second.commit()
    assert len(got_first) == 4
    assert len(got_second) == 4
    assert not {r.id for r in got_first} & {r.id for r in got_second}
    assert flood["id"] not in {r.team_id for r in got_first + got_second}


def worker_settings(url: str, *names: str) -> list[str]:
    """The settings a worker pool connection to `url` runs with."""
    from asyncqueue.worker.process import pool_connect_kwargs

    with db.connect(url, **pool_connect_kwargs(url)) as worker:
        return [worker.execute(f"SHOW {name}").fetchone()[name] for name in names]


def with_options(url: str, options: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={options.replace(' ', '%20').replace('=', '%3D')}"


def test_worker_pool_connections_plan_as_postgresql_decides(database_url, conn):
    # Even where the database forces generic plans: unprepared statements would get them too
    # (see PLAN_CACHE_AUTO).
    dbname = conn.execute("SELECT current_database() AS d").fetchone()["d"]
    conn.execute(f'ALTER DATABASE "{dbname}" SET plan_cache_mode = force_generic_plan')
    assert worker_settings(database_url, "plan_cache_mode") == ["auto"]


def test_an_operator_may_choose_the_plan_cache_mode_in_the_database_url(database_url):
    # force_custom_plan: every claim planned afresh, no plan kept.
    url = with_options(database_url, "-c plan_cache_mode=force_custom_plan")
    assert worker_settings(url, "plan_cache_mode") == ["force_custom_plan"]


def test_worker_pool_keeps_the_database_urls_own_options(database_url):
    # A deployment's options (a search_path, a statement_timeout) are not replaced by ours.
    url = with_options(database_url, "-c application_name=mine")
    assert worker_settings(url, "application_name", "plan_cache_mode") == ["mine", "auto"]


TEAM_DUE = (
    "CREATE INDEX tasks_team_due ON public.tasks USING btree (team_id, next_run_at) WHERE "
    "(status = ANY (ARRAY['pending'::text, 'delayed'::text, 'processing'::text]))"
)


def table_shape(conn, table: str) -> dict:
    """A table's persistence, columns (name, type, not null) and primary key."""
    info = conn.execute(
        "SELECT c.relpersistence AS persistence,"
        " pg_get_constraintdef(k.oid) AS primary_key"
        " FROM pg_class c JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'"
        " WHERE c.oid = %s::regclass",
        (table,),
    ).fetchone()
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return {**info, "columns": [tuple(c.values()) for c in columns]}


# What 0006 makes besides the index (later migrations change create_counts again).
MADE_BY_0006 = {
    "create_counts": {
        "persistence": "u",  # UNLOGGED
        "primary_key": "PRIMARY KEY (team_id, second, process)",
        "columns": [
            ("team_id", "uuid", True),
            ("process", "text", True),
            ("second", "bigint", True),
            ("n", "integer", True),
        ],
    },
    "web_processes": {
        "persistence": "u",
        "primary_key": "PRIMARY KEY (process)",
        "columns": [("process", "text", True), ("seen_at", "timestamp with time zone", True)],
    },
}


def test_migration_0006_keeps_a_tasks_team_due_built_by_hand_first(database_url):
    # As docs/operations.md says for large tables: build the index CONCURRENTLY, then migrate.
    # The migration must keep that index (building it again would lock tasks for the build)
    # and still make everything else it makes.
    with db.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP INDEX tasks_team_due")
        conn.execute("DROP TABLE create_counts, web_processes")
        conn.execute("DELETE FROM schema_migrations WHERE version = '0006_fairness'")
        conn.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_team_due ON tasks (team_id, next_run_at)"
            " WHERE status IN ('pending', 'delayed', 'processing')"
        )
        by_hand = conn.execute("SELECT 'tasks_team_due'::regclass::oid AS oid").fetchone()["oid"]
    assert db.migrate(database_url) == ["0006_fairness"]
    with db.connect(database_url, autocommit=True) as conn:
        index = conn.execute(
            "SELECT i.indexrelid AS oid, i.indisvalid AS valid,"
            " pg_get_indexdef(i.indexrelid) AS definition"
            " FROM pg_index i WHERE i.indexrelid = 'tasks_team_due'::regclass"
        ).fetchone()
        assert index == {"oid": by_hand, "valid": True, "definition": TEAM_DUE}
        assert {t: table_shape(conn, t) for t in MADE_BY_0006} == MADE_BY_0006
        versions = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
        assert "0006_fairness" in versions
