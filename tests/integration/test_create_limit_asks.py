"""Per-team create limits against a real PostgreSQL: a create past its process's allowance is
decided by a sync started at once, on the counts every process has written, rather than
refused while the team is within its rate."""

import threading
import time

from asyncqueue import create_limit, keys
from asyncqueue.create_limit import CreateLimits
from tests.support import wait_for

RATES = {"free": 20, "pro": 500}


def started(database_url, key, team_row) -> CreateLimits:
    """A web process's CreateLimits with its sync thread, the team's key learnt."""
    limits = CreateLimits(database_url, RATES)
    limits.start()
    wait_for(lambda: limits.limiter.synced_at > 0, timeout=10)
    limits.learn(keys.hash_key(key), team_row["id"], "free")
    return limits


def outcomes(app, limits: CreateLimits, key: str, n: int) -> list[int]:
    """n creates at once on separate threads (as many connections): 201 or 429 each."""
    codes, lock = [], threading.Lock()

    def one():
        with app.app_context():  # a refusal is a JSON response
            refusal, _ = limits.admit(keys.hash_key(key))
        with lock:
            codes.append(201 if refusal is None else refusal.status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(codes)


def test_a_process_past_its_allowance_asks_a_sync_rather_than_refuse(app, database_url, team):
    """Two processes each hold part of the team's headroom; a burst of 16 (within the 20 per
    second) reaches the first only: past its part, its creates wait for a sync, which admits
    them on the counts both have written. The rest of the second's worth goes to the second
    process; once both have synced since, the team is refused, from either (until then the
    second may still spend what is left of the allowance it took before the burst)."""
    team_row, key = team
    first = started(database_url, key, team_row)
    second = started(database_url, key, team_row)
    try:
        for limits in (first, second):  # each knows the team, holds an allowance of it
            limits.limiter.track(team_row["id"], time.monotonic())
            limits._sync_now.set()
        wait_for(
            lambda: all(lim.limiter.teams[team_row["id"]].synced for lim in (first, second)),
            timeout=10,
        )
        assert first.limiter.teams[team_row["id"]].share < 16  # its part only
        assert outcomes(app, first, key, 16) == [201] * 16
        assert outcomes(app, second, key, 4) == [201] * 4
        after = time.monotonic()
        wait_for(lambda: min(first.limiter.synced_at, second.limiter.synced_at) > after)
        assert outcomes(app, second, key, 3) == [429] * 3
        assert outcomes(app, first, key, 3) == [429] * 3
    finally:
        first.stop()
        second.stop()


def test_creates_waiting_for_a_sync_that_fails_are_decided_without_it(
    app, database_url, team, conn, monkeypatch
):
    """A create that asked does not hang on a sync that fails: it is decided on this process's
    counts, as when the database is away."""
    monkeypatch.setattr(create_limit, "ASK_TIMEOUT", 30.0)
    team_row, key = team
    limits = started(database_url, key, team_row)
    try:
        limits.limiter.track(team_row["id"], time.monotonic())
        limits._sync_now.set()
        wait_for(lambda: limits.limiter.teams[team_row["id"]].synced, timeout=10)
        conn.execute("ALTER TABLE create_allowances RENAME TO create_allowances_away")
        try:
            with limits._lock:  # spent: the next create asks
                limits.limiter.teams[team_row["id"]].share = 0
            began = time.monotonic()
            with app.app_context():
                refusal, _ = limits.admit(keys.hash_key(key))
            took = time.monotonic() - began
        finally:
            conn.execute("ALTER TABLE create_allowances_away RENAME TO create_allowances")
        # Decided on its own counts: refused until the next sync (no allowance left), within
        # the failed sync's round trip, not after ASK_TIMEOUT.
        assert refusal is not None and refusal.status_code == 429
        assert took < 10
    finally:
        limits.stop()
