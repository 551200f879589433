"""How the worker's statements are planned (process.py, claim_plans.py) against a real
PostgreSQL: only the plain claim is prepared, and a connection whose kept claim plan went bad makes
it again."""

import threading

from asyncqueue import db
from asyncqueue.db.claims import finish_params, plain_claim_text
from asyncqueue.worker.claim_plans import KeptPlans
from asyncqueue.worker.dispatcher import Dispatcher
from asyncqueue.worker.fairness import ClaimPlan
from asyncqueue.worker.process import pool_connect_kwargs, prepare_only_when_asked
from asyncqueue.worker.slots import SlotTable
from tests.support import make_team
from tests.support.tasks import insert_tasks

NEVER = float("inf")


def worker_pool(database_url: str):
    """A pool configured as the worker's, of one connection (so every use is the same session)."""
    return db.make_pool(
        database_url,
        1,
        name="test-worker-plans",
        connect_kwargs=pool_connect_kwargs(database_url),
        configure=prepare_only_when_asked,
    )


def make_dispatcher(pool, plans: KeptPlans | None = None) -> Dispatcher:
    return Dispatcher(
        pool,
        SlotTable(64),
        run=lambda claims: None,
        wake=threading.Event(),
        worker_name="test:plans",
        lease_grace=10.0,
        plans=plans,
    )


def prepared(conn) -> list[dict]:
    return conn.execute("SELECT name, statement FROM pg_prepared_statements").fetchall()


def claim_plan(conn, name: str) -> str:
    """The plan the prepared plain claim `name` runs now (its kept plan, if it has one)."""
    rows = conn.execute(f"EXPLAIN EXECUTE {name}('test:plans', 10.0)").fetchall()
    return "\n".join(row["QUERY PLAN"] for row in rows)


def test_worker_connections_prepare_only_the_plain_claim(database_url, conn):
    team, _ = make_team(conn)
    other, _ = make_team(conn, name="other")
    insert_tasks(conn, team["id"], 30)
    insert_tasks(conn, other["id"], 10)
    with worker_pool(database_url) as pool:
        dispatcher = make_dispatcher(pool)
        claimed = [c for _ in range(6) for c in dispatcher.claim(4)]
        for _ in range(6):  # the claim past a capped team: never prepared
            claimed += dispatcher.claim(ClaimPlan(1, (team["id"],)))
        assert len(claimed) == 30
        with pool.connection() as c:
            plan_cache_mode = c.execute("SHOW plan_cache_mode").fetchone()["plan_cache_mode"]
            outcomes = [(x.task_id, x.token, "completed", None, None) for x in claimed]
            for one in outcomes:  # many runs of one text: psycopg would prepare it after five
                c.execute(db.query("task_finish_many"), finish_params([one])).fetchall()
                c.execute(db.query("task_seconds_until_due")).fetchone()
            statements = prepared(c)
    assert plan_cache_mode == "auto"
    [statement] = [s["statement"] for s in statements]  # psycopg's $n for %(name)s aside:
    assert statement.startswith(plain_claim_text(4).split("%(")[0]) and "LIMIT 4\n" in statement


def test_a_plan_made_on_an_empty_table_is_replaced_after_a_slow_claim(database_url, conn):
    # A fresh deploy: the claim's plan is made while tasks is empty, then a backlog arrives.
    # No autovacuum here: its ANALYZE would replace the plan too, at a time of its own.
    conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
    conn.execute("VACUUM ANALYZE tasks")  # as autovacuum does to a new, nearly empty table
    team, _ = make_team(conn)
    plans = KeptPlans(max_age=NEVER, slow=NEVER)  # nothing replans while the stage is set
    with worker_pool(database_url) as pool:
        dispatcher = make_dispatcher(pool, plans)
        for _ in range(8):
            assert dispatcher.claim(4) == []
        insert_tasks(conn, team["id"], 20000)
        with pool.connection() as c:
            [statement] = prepared(c)
            before = claim_plan(c, statement["name"])
        assert "Seq Scan on tasks" in before  # the hazard: it walks the whole table

        plans.slow = 0.0  # any claim is slow now (20k rows do not always take 20 ms)
        assert len(dispatcher.claim(4)) == 4  # slow: the plans are stale from now on
        assert plans.replans == 0
        assert len(dispatcher.claim(4)) == 4  # its plans are made again first
        assert plans.replans == 1
        with pool.connection() as c:
            after = claim_plan(c, prepared(c)[0]["name"])
    assert "Seq Scan on tasks" not in after
    assert "Index Scan using tasks_due" in after


def test_a_plan_is_made_again_once_it_is_older_than_the_max_age(database_url, conn):
    conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
    conn.execute("VACUUM ANALYZE tasks")
    team, _ = make_team(conn)
    now = [0.0]
    plans = KeptPlans(max_age=10.0, slow=NEVER, clock=lambda: now[0])
    with worker_pool(database_url) as pool:
        dispatcher = make_dispatcher(pool, plans)
        for _ in range(8):
            assert dispatcher.claim(4) == []
        insert_tasks(conn, team["id"], 20000)
        now[0] = 9.9
        dispatcher.claim(4)
        with pool.connection() as c:
            assert "Seq Scan on tasks" in claim_plan(c, prepared(c)[0]["name"])
        now[0] = 10.0
        dispatcher.claim(4)
        with pool.connection() as c:
            after = claim_plan(c, prepared(c)[0]["name"])
    assert plans.replans == 1
    assert "Index Scan using tasks_due" in after


def test_a_finish_write_looks_finished_tasks_up_by_id_whatever_the_statistics_say(conn):
    # Statistics taken while nothing had finished: a plain join with the status filter
    # walked every finished task through tasks_finished_completed.
    conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 4000, status="processing")
    conn.execute("UPDATE tasks SET claim_token = gen_random_uuid()")
    conn.execute("ANALYZE tasks")
    conn.execute(
        "UPDATE tasks SET status = 'completed', completed_at = now(), next_run_at = NULL, "
        "outcome_claim_token = claim_token, claim_token = NULL "
        "WHERE id IN (SELECT id FROM tasks LIMIT 3600)"
    )
    rows = conn.execute(
        "SELECT id, claim_token FROM tasks WHERE status = 'processing' LIMIT 10"
    ).fetchall()
    params = finish_params([(r["id"], r["claim_token"], "completed", None, None) for r in rows])
    plan = "\n".join(
        r["QUERY PLAN"]
        for r in conn.execute("EXPLAIN " + db.query("task_finish_many"), params).fetchall()
    )
    assert "tasks_finished_completed" not in plan
    assert len(conn.execute(db.query("task_finish_many"), params).fetchall()) == 10
