"""How the worker's statements are planned (process.py, dispatcher.claim_rows): only the plain
claim is prepared and may keep a generic plan, and a slow claim makes its connection plan again."""

import threading

import pytest

from asyncqueue import db
from asyncqueue.worker import dispatcher as dispatcher_module
from asyncqueue.worker.completer import finish_params
from asyncqueue.worker.dispatcher import Dispatcher, SlotTable, claim_batch, plain_claim_text
from asyncqueue.worker.process import pool_connect_kwargs, prepare_only_when_asked
from tests.integration.test_claim import insert_tasks
from tests.support import make_team


def worker_pool(database_url: str):
    """A pool configured as the worker's, of one connection (so every use is the same session)."""
    return db.make_pool(
        database_url,
        1,
        name="test-worker-plans",
        connect_kwargs=pool_connect_kwargs(database_url),
        configure=prepare_only_when_asked,
    )


def make_dispatcher(pool, concurrency: int = 64) -> Dispatcher:
    return Dispatcher(
        pool,
        SlotTable(concurrency),
        run=lambda claims: None,
        wake=threading.Event(),
        worker_name="test:plans",
        lease_grace=10.0,
    )


def prepared(conn) -> list[dict]:
    return conn.execute(
        "SELECT name, statement, generic_plans, custom_plans FROM pg_prepared_statements"
    ).fetchall()


def claim_plan(conn, name: str) -> str:
    """The plan the prepared plain claim `name` runs now (its cached generic plan, if any)."""
    rows = conn.execute(f"EXPLAIN EXECUTE {name}('test:plans', 10.0)").fetchall()
    return "\n".join(row["QUERY PLAN"] for row in rows)


@pytest.mark.parametrize(
    "free, asked",
    [
        (1, 1),
        (7, 7),
        (16, 16),
        (64, 64),
        (65, 64),
        (127, 64),
        (128, 128),
        (200, 128),
        (10000, 8192),
    ],
)
def test_claim_batch_is_exact_up_to_64_then_a_power_of_two(free, asked):
    assert claim_batch(free) == asked


def test_the_plain_claim_has_its_limit_written_in():
    text = plain_claim_text(7)
    assert "LIMIT 7\n" in text and "%(limit)s" not in text


def test_worker_connections_prepare_only_the_plain_claim(database_url, conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 30)
    with worker_pool(database_url) as pool:
        dispatcher = make_dispatcher(pool)
        claimed = [c for _ in range(6) for c in dispatcher.claim(4)]
        assert len(claimed) == 24
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


def test_a_slow_claim_replaces_a_generic_plan_made_on_an_empty_table(
    database_url, conn, monkeypatch
):
    # A fresh deploy: the claim's plan is made while tasks is empty, then a backlog arrives.
    # No autovacuum here: its ANALYZE would replace the plan too, at a time of its own.
    conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
    conn.execute("VACUUM ANALYZE tasks")  # as autovacuum does to a new, nearly empty table
    team, _ = make_team(conn)
    with worker_pool(database_url) as pool:
        dispatcher = make_dispatcher(pool)
        for _ in range(8):
            assert dispatcher.claim(4) == []
        insert_tasks(conn, team["id"], 20000)
        with pool.connection() as c:
            [statement] = prepared(c)
            assert statement["generic_plans"] > 0  # PostgreSQL kept a generic plan
            before = claim_plan(c, statement["name"])
        assert "Seq Scan on tasks" in before  # the hazard: it walks the whole table

        # Any claim this slow makes the connection plan again (the real threshold is 20 ms,
        # which a seq scan of 20k rows does not always reach on a fast machine).
        monkeypatch.setattr(dispatcher_module, "SLOW_CLAIM", 0.0)
        assert len(dispatcher.claim(4)) == 4
        with pool.connection() as c:
            after = claim_plan(c, prepared(c)[0]["name"])
    assert "Seq Scan on tasks" not in after
    assert "Index Scan using tasks_due" in after


def test_a_quick_claim_keeps_its_plan(database_url, conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 50)
    with worker_pool(database_url) as pool:
        dispatcher = make_dispatcher(pool)
        for _ in range(8):
            dispatcher.claim(4)
        with pool.connection() as c:
            [statement] = prepared(c)
    # Eight runs: five custom plans, then the one generic plan kept and reused.
    assert statement["custom_plans"] == 5
    assert statement["generic_plans"] == 3
