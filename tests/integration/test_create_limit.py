"""Per-team create limits against a real PostgreSQL: the 429 answer, and two web processes
sharing one team's rate through the UNLOGGED counts table."""

import os
import signal
import threading
import time

import psycopg
import pytest

from asyncqueue import db, keys
from asyncqueue.api import create_limits
from asyncqueue.api.create_limiter import CreateLimiter
from asyncqueue.api.create_limits import CreateLimits, for_app
from asyncqueue.db import create_limits as create_limit_rows
from asyncqueue.db import teams as team_rows
from asyncqueue.teams import create_key
from tests.support import make_team, wait_for


def create(client, auth):
    return client.post("/v1/tasks", json={"callbackUrl": "https://example.com/x"}, headers=auth)


def test_creates_over_the_free_rate_are_answered_429_with_retry_after(client, auth, app):
    answers = [create(client, auth) for _ in range(40)]
    codes = [r.status_code for r in answers]
    assert codes[:20] == [201] * 20  # a second's worth at once
    refused = [r for r in answers if r.status_code == 429]
    assert refused, codes
    first = refused[0]
    assert first.is_json
    assert first.get_json()["error"].startswith(
        "Too many tasks created: the free plan allows 20 per second; retry after "
    )
    assert int(first.headers["Retry-After"]) >= 1
    # A client that waits as told (the wait is what is tested: the window is wall-clock time).
    time.sleep(float(first.headers["Retry-After"]) + 0.3)
    assert create(client, auth).status_code == 201  # room again, as Retry-After said


def test_another_team_is_not_limited_by_the_first(client, auth, conn):
    while create(client, auth).status_code != 429:
        pass
    _, other_key = make_team(conn, "other", "free")
    assert create(client, {"X-API-Key": other_key}).status_code == 201


def test_two_processes_share_one_rate_through_the_database(database_url, conn, team):
    team_row, _ = team
    first = CreateLimits(database_url, {"free": 20, "pro": 500})
    second = CreateLimits(database_url, {"free": 20, "pro": 500})
    second.process = "other-host:1:x"
    now = time.monotonic()
    with db.connect(database_url, autocommit=True) as sync_conn:
        for limiter in (first, second):
            limiter.limiter.admit(team_row["id"], now)
            limiter.sync(sync_conn)  # both alive, plan known
        admitted_first = sum(
            first.limiter.admit(team_row["id"], time.monotonic()) is None for _ in range(30)
        )
        first.sync(sync_conn)
        second.sync(sync_conn)
        answers_second = [second.limiter.admit(team_row["id"], time.monotonic()) for _ in range(30)]
    assert second.limiter.processes == 2
    assert second.limiter.teams[team_row["id"]].plan == "free"
    # The first process filled the team's second; the second saw it and refuses the rest from
    # memory (the team is surely over its rate: no sync needed to decide).
    assert admitted_first >= 15
    assert all(isinstance(a, float) and a > 0 for a in answers_second)


def test_allowances_taken_at_syncs_never_add_up_past_the_rate(database_url, team):
    """Each sync leaves alone what the other processes took at theirs: whatever the order of
    the syncs, the two processes together admit one second's worth, not one each."""
    team_id = team[0]["id"]
    first = CreateLimits(database_url, {"free": 20, "pro": 500})
    second = CreateLimits(database_url, {"free": 20, "pro": 500})
    second.process = "other-host:1:x"
    with db.connect(database_url, autocommit=True) as sync_conn:
        for limits in (first, second, first, second):  # both alive and synced, nothing admitted
            limits.limiter.track(team_id, time.monotonic())
            limits.sync(sync_conn)
        taken = {
            row["process"]: row["allowance"]
            for row in sync_conn.execute(
                "SELECT process, allowance FROM create_tenth_allowances WHERE team_id = %s",
                (team_id,),
            )
        }
        # Neither has seen the other admit anything: neither's counts say where the team's
        # traffic goes, yet what they may admit before their next syncs adds up to the rate.
        now = time.monotonic()
        admitted = sum(
            limits.limiter.admit(team_id, now) is None
            for limits in (first, second)
            for _ in range(30)
        )
    assert set(taken) == {first.process, second.process}
    assert sum(taken.values()) <= 20
    assert 0 < admitted <= 20


def test_each_release_sees_only_its_own_generations_counts(database_url, team):
    """During a rolling deploy the release before (whole seconds, create_counts and
    create_allowances) runs beside this one (tenths): neither reads or writes the other's
    counts and allowances, so neither takes the other's numbers in the wrong unit."""
    team_id = team[0]["id"]
    limits = CreateLimits(database_url, {"free": 20, "pro": 500})
    with db.connect(database_url, autocommit=True) as sync_conn:
        # A process of the release before, alive, holding the team's whole second.
        sync_conn.execute(
            "INSERT INTO web_processes (process, seen_at) VALUES ('old-host:1:x', now())"
        )
        sync_conn.execute(
            "INSERT INTO create_counts (team_id, second, process, n, wanted)"
            " VALUES (%s, extract(epoch FROM now())::bigint, 'old-host:1:x', 20, 20)",
            (team_id,),
        )
        sync_conn.execute(
            "INSERT INTO create_allowances (team_id, process, allowance)"
            " VALUES (%s, 'old-host:1:x', 20)",
            (team_id,),
        )
        limits.limiter.track(team_id, time.monotonic())
        limits.sync(sync_conn)
        admitted = sum(limits.limiter.admit(team_id, time.monotonic()) is None for _ in range(5))
        limits.sync(sync_conn)
        old = sync_conn.execute(
            "SELECT (SELECT count(*) FROM create_counts WHERE process <> 'old-host:1:x') AS counts,"
            " (SELECT count(*) FROM create_allowances WHERE process <> 'old-host:1:x') AS allowances"
        ).fetchone()
    window = limits.limiter.teams[team_id]
    assert window.others == {} and window.share > 0  # the old process's numbers are not ours
    assert admitted == 5
    assert (old["counts"], old["allowances"]) == (0, 0)  # nor are ours the old release's


def test_syncs_take_turns_under_the_lock(database_url, team):
    """A sync waits while another process's sync holds the lock, rather than read counts and
    allowances that are about to change."""
    limits = CreateLimits(database_url, {"free": 20, "pro": 500})
    limits.limiter.track(team[0]["id"], time.monotonic())
    with (
        db.connect(database_url, autocommit=True) as holder,
        db.connect(database_url, autocommit=True) as sync_conn,
    ):
        with holder.transaction():
            create_limit_rows.lock(holder)
            done = threading.Event()
            thread = threading.Thread(target=lambda: (limits.sync(sync_conn), done.set()))
            thread.start()
            assert not done.wait(0.3)  # held: the sync waits
        thread.join(5)
    assert done.is_set()
    assert limits.limiter.teams[team[0]["id"]].synced


def test_a_team_new_to_a_process_waits_for_a_sync_before_its_first_decision(database_url, team):
    team_row, key = team
    limits = CreateLimits(database_url, {"free": 20, "pro": 500})
    limits.start()
    try:
        wait_for(lambda: limits.limiter.synced_at > 0, timeout=10)  # live, no team known
        limits.learn(keys.hash_key(key), team_row["id"], "free")
        refusal, admission = limits.admit(keys.hash_key(key))  # the team's first decision here
        assert refusal is None and admission is not None
        window = limits.limiter.teams[team_row["id"]]
        assert window.synced and window.plan == "free" and window.used == 1
    finally:
        limits.stop()


def test_a_sync_that_fails_changes_nothing_the_others_see(database_url, team):
    """The allowance is taken on only once written: a sync whose write fails leaves this
    process on its last allowance, the one the others saw."""
    team_id = team[0]["id"]
    limits = CreateLimits(database_url, {"free": 20, "pro": 500})
    with db.connect(database_url, autocommit=True) as sync_conn:
        limits.limiter.track(team_id, time.monotonic())
        limits.sync(sync_conn)
        before = limits.limiter.teams[team_id].share
        assert limits.limiter.admit(team_id, time.monotonic()) is None
        sync_conn.execute(
            "ALTER TABLE create_tenth_allowances RENAME TO create_tenth_allowances_away"
        )
        try:
            with pytest.raises(psycopg.Error):
                limits.sync(sync_conn)
        finally:
            sync_conn.execute(
                "ALTER TABLE create_tenth_allowances_away RENAME TO create_tenth_allowances"
            )
        window = limits.limiter.teams[team_id]
        assert (window.share, window.used) == (before, 1)
        rows = sync_conn.execute(
            "SELECT allowance FROM create_tenth_allowances WHERE team_id = %s", (team_id,)
        ).fetchall()
    assert [r["allowance"] for r in rows] == [pytest.approx(before)]


def test_off_means_no_limit(app, client, auth):
    for_app(app).enabled = False
    assert all(create(client, auth).status_code == 201 for _ in range(40))


def _limited_to_20_per_second(app):
    # Set before the first request: the limiter is remade from these rates on first use.
    for_app(app).limiter = CreateLimiter({"free": 20, "pro": 20})


def test_a_revoked_key_gets_401_and_uses_up_none_of_the_teams_budget(app, client, conn):
    _limited_to_20_per_second(app)
    team_row, first_key = make_team(conn, "two-keys", "pro")
    second_key = create_key(conn, team_row["id"], "second")[0]
    first_row = team_rows.api_keys(conn, team_row["id"])[0]
    for key in (first_key, second_key):
        assert create(client, {"X-API-Key": key}).status_code == 201  # both keys known here
    team_rows.revoke_key(conn, str(first_row.id))
    codes = [create(client, {"X-API-Key": first_key}).status_code for _ in range(60)]
    assert codes == [401] * 60
    assert create(client, {"X-API-Key": second_key}).status_code == 201


def test_refused_bodies_use_up_none_of_the_teams_budget(app, client, auth):
    _limited_to_20_per_second(app)
    assert create(client, auth).status_code == 201  # the key is known: later creates counted
    bad = [
        client.post("/v1/tasks", json={"callbackUrl": "ftp://x"}, headers=auth).status_code
        for _ in range(60)
    ]
    assert bad == [400] * 60
    assert create(client, auth).status_code == 201


def test_a_key_refused_with_401_is_forgotten_and_401_wins_over_429(app, client, conn):
    _limited_to_20_per_second(app)
    team_row, key = make_team(conn, "revoked-at-limit", "pro")
    while create(client, {"X-API-Key": key}).status_code != 429:
        pass
    conn.execute("UPDATE api_keys SET revoked_at = now() WHERE team_id = %s", (team_row["id"],))
    assert create(client, {"X-API-Key": key}).status_code == 401  # not 429
    assert keys.hash_key(key) not in for_app(app)._team_of_key


def test_the_oldest_keys_are_forgotten_first_when_the_table_is_full(app, monkeypatch):
    monkeypatch.setattr(create_limits, "KEYS_REMEMBERED", 3)
    limits = for_app(app)
    monkeypatch.setattr(limits, "_ensure_syncing", lambda: None)
    for n in range(5):
        limits.learn(keys.hash_key(f"key-{n}"), n, "free")
    assert sorted(limits._team_of_key.values()) == [2, 3, 4]


def test_a_sync_whose_backend_stops_answering_is_abandoned(database_url, team, monkeypatch):
    """A stopped backend (or a hung host) must not hold the sync thread, and the lock, for
    ever: the sync fails after SYNC_DEADLINE and the thread goes on (with a new connection)."""
    monkeypatch.setattr(create_limits, "SYNC_DEADLINE", 0.5)
    limits = CreateLimits(database_url, {"free": 20, "pro": 500})
    limits.limiter.track(team[0]["id"], time.monotonic())
    with db.connect(database_url, autocommit=True) as sync_conn:
        pid = sync_conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError):
                limits.sync(sync_conn)
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
    assert took < 5  # the deadline and its margin, not for ever
