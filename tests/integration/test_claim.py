"""The claim, lease and fence queries under concurrency, against a real PostgreSQL."""

import contextlib
import threading
import uuid

import psycopg
import pytest

from asyncqueue import db
from asyncqueue.db.claims import finish_params, retry_params
from asyncqueue.worker.completer import Completer
from asyncqueue.worker.runner import Finished
from asyncqueue.worker.slots import SlotTable
from tests.support import make_team
from tests.support.tasks import assert_counts_match, claim, claimed_row, insert_tasks


def test_eight_claimers_take_every_task_exactly_once(conn, database_url):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 5000)
    claimed: list[list] = [[] for _ in range(8)]

    def claimer(i):
        with db.connect(database_url, autocommit=True) as own:
            while rows := claim(own, limit=25):
                claimed[i].extend(r.id for r in rows)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [task_id for ids in claimed for task_id in ids]
    assert len(everything) == 5000
    assert len(set(everything)) == 5000
    assert sum(1 for ids in claimed if ids) > 1  # the work really was shared
    left = conn.execute("SELECT count(*) AS n FROM tasks WHERE status <> 'processing'").fetchone()
    assert left["n"] == 0


def test_claim_sets_start_lease_and_token(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 1, timeout=5)
    (row,) = claim(conn, grace=2)
    task = conn.execute("SELECT * FROM tasks WHERE id = %s", (row.id,)).fetchone()
    assert task["status"] == "processing"
    assert task["started_at"] == row.claimed_at
    assert row.claim_token == task["claim_token"] is not None and row.attempts == 1
    assert task["claimed_by"] == "test:1"
    lease = (task["next_run_at"] - row.claimed_at).total_seconds()
    assert abs(lease - 7) < 0.01  # attempt timeout + grace
    assert (row.deadline - task["started_at"]).total_seconds() == 30
    assert claim(conn) == []  # held: nobody else gets it


def test_lease_is_cut_to_the_max_wait_deadline(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 1, timeout=30, max_wait_time=4)
    (row,) = claim(conn, grace=1)
    task = conn.execute("SELECT next_run_at FROM tasks WHERE id = %s", (row.id,)).fetchone()
    assert abs((task["next_run_at"] - row.claimed_at).total_seconds() - 5) < 0.01


def test_expired_lease_is_claimed_again_with_a_new_token(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 1)
    (first,) = claim(conn)
    conn.execute("UPDATE tasks SET next_run_at = now() - interval '1 second'")
    (second,) = claim(conn)
    assert second.id == first.id
    assert second.claim_token != first.claim_token
    # startedAt is the first attempt's: the maxWaitTime deadline counts from it.
    assert second.deadline == first.deadline
    assert second.attempts == 2


def test_fenced_late_write_changes_nothing(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 1)
    (stale,) = claim(conn)
    conn.execute("UPDATE tasks SET next_run_at = now() - interval '1 second'")
    (fresh,) = claim(conn)
    late = finish_params([(stale.id, stale.claim_token, "failed", {"statusCode": 500}, "late")])
    assert conn.execute(db.query("task_finish_many"), late).fetchall() == []
    assert (
        conn.execute(
            db.query("task_schedule_retry"),
            retry_params([(stale.id, stale.claim_token, None, "late", 1)]),
        ).fetchone()
        is None
    )
    fresh_outcome = (fresh.id, fresh.claim_token, "completed", {"statusCode": 200}, None)
    assert (
        len(conn.execute(db.query("task_finish_many"), finish_params([fresh_outcome])).fetchall())
        == 1
    )
    done = conn.execute("SELECT status, next_run_at FROM tasks").fetchone()
    assert done["status"] == "completed" and done["next_run_at"] is None
    row = conn.execute("SELECT status, error, retry_count FROM tasks").fetchone()
    assert row == {"status": "completed", "error": None, "retry_count": 0}


def test_retry_keeps_processing_and_counts(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 1)
    (row,) = claim(conn)
    written = conn.execute(
        db.query("task_schedule_retry"),
        retry_params([(row.id, row.claim_token, None, "HTTP 503", 2)]),
    ).fetchone()
    assert written is not None
    after = conn.execute("SELECT *, next_run_at - now() AS wait FROM tasks").fetchone()
    assert after["status"] == "processing" and after["retry_count"] == 1
    assert after["claim_token"] is None
    assert abs(after["wait"].total_seconds() - 2) < 0.05
    assert claim(conn) == []  # not before its time


def test_cancel_racing_claims_is_never_both(conn, database_url):
    """Hundreds of tasks, claimed and cancelled at the same time: each is exactly one of the two."""
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 400)
    ids = [r["id"] for r in conn.execute("SELECT id FROM tasks ORDER BY random()")]
    claimed, cancelled = set(), set()
    start = threading.Barrier(3)

    def claimer():
        with db.connect(database_url, autocommit=True) as own:
            start.wait()
            while rows := claim(own, limit=5):
                claimed.update(r.id for r in rows)

    def canceller():
        with db.connect(database_url, autocommit=True) as own:
            start.wait()
            for task_id in ids:
                row = own.execute(
                    db.query("task_cancel"), {"id": task_id, "team_id": team["id"]}
                ).fetchone()
                if row:
                    cancelled.add(task_id)

    threads = [
        threading.Thread(target=claimer),
        threading.Thread(target=claimer),
        threading.Thread(target=canceller),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert claimed.isdisjoint(cancelled)
    assert claimed | cancelled == set(ids)
    rows = conn.execute("SELECT status, count(*) AS n FROM tasks GROUP BY status").fetchall()
    statuses = {r["status"]: r["n"] for r in rows}
    assert statuses.get("processing", 0) == len(claimed)
    assert statuses.get("cancelled", 0) == len(cancelled)


def test_release_hands_back_only_held_claims(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 2)
    rows = claim(conn)
    released = conn.execute(
        db.query("task_release"),
        {
            "ids": [r.id for r in rows],
            "claim_tokens": [rows[0].claim_token, uuid.uuid4()],
        },
    ).fetchall()
    assert [r["id"] for r in released] == [rows[0].id]
    again = claim(conn)
    assert [r.id for r in again] == [rows[0].id]


def test_release_never_undoes_a_written_outcome_or_retry(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 2)
    retried, finished = claim(conn)
    conn.execute(
        db.query("task_schedule_retry"),
        retry_params([(retried.id, retried.claim_token, None, "HTTP 503", 60)]),
    )
    conn.execute(
        db.query("task_finish_many"),
        finish_params([(finished.id, finished.claim_token, "completed", None, None)]),
    )
    released = conn.execute(
        db.query("task_release"),
        {
            "ids": [retried.id, finished.id],
            "claim_tokens": [retried.claim_token, finished.claim_token],
        },
    ).fetchall()
    assert released == []
    rows = {r["id"]: r for r in conn.execute("SELECT *, next_run_at > now() AS later FROM tasks")}
    assert rows[retried.id]["retry_count"] == 1 and rows[retried.id]["later"]
    assert rows[finished.id]["status"] == "completed"
    assert rows[finished.id]["next_run_at"] is None


def test_insert_notifies_listeners(conn, database_url):
    team, _ = make_team(conn)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN asyncqueue_tasks")
        insert_tasks(conn, team["id"], 3)
        got = list(listener.notifies(timeout=2, stop_after=1))
    assert [n.channel for n in got] == ["asyncqueue_tasks"]


def test_batched_finish_is_fenced_row_by_row(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 3)
    rows = claim(conn)
    stale_token = uuid.uuid4()
    written = conn.execute(
        db.query("task_finish_many"),
        finish_params(
            [
                (rows[0].id, rows[0].claim_token, "completed", {"statusCode": 200}, None),
                (rows[1].id, stale_token, "completed", None, None),
                (rows[2].id, rows[2].claim_token, "failed", None, "HTTP 503"),
            ]
        ),
    ).fetchall()
    assert {r["id"] for r in written} == {rows[0].id, rows[2].id}
    by_id = {r["id"]: r for r in conn.execute("SELECT * FROM tasks")}
    assert by_id[rows[0].id]["status"] == "completed"
    assert by_id[rows[0].id]["result"] == {"statusCode": 200}
    assert by_id[rows[1].id]["status"] == "processing"  # the stale write changed nothing
    assert by_id[rows[2].id]["error"] == "HTTP 503"


def test_task_counts_follow_every_change(conn, database_url):
    team, _ = make_team(conn)
    other, _ = make_team(conn, "other")
    insert_tasks(conn, team["id"], 300)
    insert_tasks(conn, other["id"], 50, status="delayed")
    assert_counts_match(conn)

    def claimer():
        with db.connect(database_url, autocommit=True) as own:
            while rows := claim(own, limit=7):
                outcomes = [
                    (r.id, r.claim_token, "completed" if i % 3 else "failed", None, None)
                    for i, r in enumerate(rows)
                ]
                own.execute(db.query("task_finish_many"), finish_params(outcomes))

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_counts_match(conn)
    insert_tasks(conn, team["id"], 5)
    conn.execute("UPDATE tasks SET status = 'cancelled' WHERE status = 'pending'")
    conn.execute("DELETE FROM tasks WHERE status = 'failed'")
    assert_counts_match(conn)
    conn.execute("DELETE FROM teams WHERE id = %s", (other["id"],))
    assert_counts_match(conn)


def test_a_refused_outcome_does_not_hold_up_its_batch(conn, database_url):
    # jsonb cannot hold U+0000. The worker replaces NUL in what it reads, so this is defence in
    # depth: if the database still refuses one outcome, the rest of its batch is written, and
    # the refused one is recorded without its result rather than retried for ever.
    from asyncqueue.worker.completer import OUTCOME_NOT_STORED
    from asyncqueue.worker.decide import Outcome

    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 4)
    rows = claim(conn)
    outcomes = [Outcome("completed", result={"statusCode": 200, "body": "ok"})] * 4
    outcomes[1] = Outcome("completed", result={"statusCode": 200, "body": "a\x00b"})
    with completer_for(database_url) as (completer, slots):
        claims = slots.add(rows)
        completer.write([Finished(c, o) for c, o in zip(claims, outcomes, strict=True)])
        assert slots.held() == 0
    by_id = {r["id"]: r for r in conn.execute("SELECT * FROM tasks")}
    assert [by_id[r.id]["status"] for r in rows] == ["completed"] * 4
    assert by_id[rows[1].id]["result"] is None
    assert by_id[rows[1].id]["error"] == OUTCOME_NOT_STORED
    assert by_id[rows[0].id]["result"] == {"statusCode": 200, "body": "ok"}


@contextlib.contextmanager
def completer_for(database_url, notified=None):
    """A completer on its own pool (not started: tests call write() directly)."""
    pool = db.make_pool(database_url, 2, name="test-completer")
    slots = SlotTable(16)
    try:
        yield (
            Completer(
                pool, slots, (notified if notified is not None else []).append, threading.Event()
            ),
            slots,
        )
    finally:
        pool.close()


def test_a_repeated_finish_returns_what_its_first_run_wrote(conn):
    # The reply to an outcome write can be lost after the write committed; the repeat must find
    # the row (so its onComplete is still sent), change nothing, and still refuse stale claims.
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 2)
    rows = claim(conn)
    params = finish_params(
        [(r.id, r.claim_token, "completed", {"statusCode": 200}, None) for r in rows]
    )
    first = conn.execute(db.query("task_finish_many"), params).fetchall()
    again = conn.execute(db.query("task_finish_many"), params).fetchall()
    assert {r["id"] for r in first} == {r["id"] for r in again} == {r.id for r in rows}
    assert sorted(first, key=lambda r: r["id"]) == sorted(again, key=lambda r: r["id"])
    stale = conn.execute(
        db.query("task_finish_many"),
        finish_params([(rows[0].id, uuid.uuid4(), "failed", None, "late")]),
    ).fetchall()
    assert stale == []


def test_a_repeated_retry_counts_once_and_is_still_found(conn):
    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 1)
    (row,) = claim(conn)
    params = retry_params([(row.id, row.claim_token, None, "HTTP 503", 5)])
    first = conn.execute(db.query("task_schedule_retry"), params).fetchall()
    again = conn.execute(db.query("task_schedule_retry"), params).fetchall()
    assert [r["id"] for r in first] == [r["id"] for r in again] == [row.id]
    after = conn.execute("SELECT retry_count, claim_token, error FROM tasks").fetchone()
    assert after == {"retry_count": 1, "claim_token": None, "error": "HTTP 503"}


class LostReply:
    """A pool whose first connection commits the write, then fails as a lost reply would."""

    def __init__(self, pool):
        self.pool, self.lost = pool, 0

    @contextlib.contextmanager
    def connection(self, **kwargs):
        with self.pool.connection(**kwargs) as conn:
            if self.lost:
                yield conn
                return
            self.lost += 1

            class Committed:
                def execute(self, query, params):
                    conn.execute(query, params)
                    raise psycopg.OperationalError("server closed the connection unexpectedly")

                def cursor(self, **kwargs):
                    return contextlib.nullcontext(self)

            yield Committed()


def test_a_lost_reply_to_an_outcome_write_still_sends_the_on_complete(conn, database_url):
    from asyncqueue.worker.decide import Outcome

    team, _ = make_team(conn)
    insert_tasks(conn, team["id"], 1)
    conn.execute("UPDATE tasks SET on_complete_url = 'http://127.0.0.1/done'")
    rows = claim(conn)
    notified: list = []
    with completer_for(database_url, notified) as (completer, slots):
        completer.pool = LostReply(completer.pool)
        (c,) = slots.add(rows)
        completer.write([Finished(c, Outcome("completed", result={"statusCode": 200}))])
        assert completer.pool.lost == 1  # the first reply was lost
    assert [n.id for n in notified] == [rows[0].id]
    assert conn.execute("SELECT status FROM tasks").fetchone()["status"] == "completed"


def test_only_connection_errors_are_retried(database_url):
    from asyncqueue.worker.decide import Outcome

    calls = []

    class Broken:
        @contextlib.contextmanager
        def connection(self, **kwargs):
            calls.append(1)
            raise psycopg.ProgrammingError("a bug, not an outage")
            yield

    with completer_for(database_url) as (completer, slots):
        completer.pool = Broken()
        (c,) = slots.add([claimed_row()])
        with pytest.raises(psycopg.ProgrammingError):
            completer.write([Finished(c, Outcome("completed"))])
    assert len(calls) == 1
