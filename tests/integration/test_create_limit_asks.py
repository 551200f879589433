"""Per-team create limits against a real PostgreSQL: a create past its process's allowance is
decided by a sync started at once, on the counts every process has written, rather than
refused while the team is within its rate."""

import threading
import time
from collections import Counter

from asyncqueue import keys
from asyncqueue.api import create_limiter, create_limits
from asyncqueue.api.create_limiter import KEPT_TENTHS, window_tenths
from asyncqueue.api.create_limits import CreateLimits
from tests.support import wait_for

RATES = {"free": 20, "pro": 500}


def started(database_url, key, team_row) -> CreateLimits:
    """A web process's CreateLimits with its sync thread, the team's key learnt."""
    limits = CreateLimits(database_url, RATES)
    limits.start()
    wait_for(lambda: limits.limiter.synced_at > 0, timeout=10)
    limits.learn(keys.hash_key(key), team_row["id"], "free")
    return limits


def outcomes(app, limits: CreateLimits, key: str, n: int) -> tuple[list[int], list[int]]:
    """n creates at once on separate threads (as many connections): 201 or 429 each, and the
    tenths the admitted ones were counted in."""
    codes, tenths, lock = [], [], threading.Lock()

    def one():
        with app.app_context():  # a refusal is a JSON response
            refusal, admission = limits.admit(keys.hash_key(key))
        with lock:
            codes.append(201 if refusal is None else refusal.status_code)
            if admission is not None:
                tenths.append(admission[1])

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(codes), tenths


def known_alike(processes: list[CreateLimits], team_id, admitted: Counter) -> bool:
    """Whether each process knows the team's creates as made: its own and the others' as of
    their last syncs, by tenth (those still kept by all: KEPT_TENTHS since the last sync)."""
    seen, last = [], []
    for limits in processes:
        with limits._lock:
            window = limits.limiter.teams[team_id]
            seen.append(Counter(window.mine) + Counter(window.others))
            last.append(limits.limiter.tenth_at(limits.limiter.synced_at))
    kept = max(last) - KEPT_TENTHS

    def recent(counts: Counter) -> Counter:
        return Counter({s: n for s, n in counts.items() if s > kept and n})

    return all(recent(counts) == recent(admitted) for counts in seen)


def synced_in_turn(*processes: CreateLimits) -> None:
    """Until each process has synced after the others' syncs that wrote what they had admitted
    by now: two rounds of syncs that read after this call (the syncs take turns)."""
    for _ in range(2):
        after = time.monotonic()
        wait_for(lambda after=after: min(p.limiter.synced_at for p in processes) > after)


def within_the_rule(admitted: Counter, rate: int) -> bool:
    """No more than m x rate creates counted in any window_tenths(m) tenths, m = 1, 2."""
    return all(
        sum(admitted[s] for s in range(tenth - window_tenths(m) + 1, tenth + 1)) <= m * rate
        for tenth in admitted
        for m in (1, 2)
    )


def test_a_process_past_its_allowance_asks_a_sync_rather_than_refuse(app, database_url, team):
    """Two processes each hold part of the team's headroom; a burst of 16 (within the 20 per
    second) reaches the first only: past its part, its creates wait for a sync, which admits
    them on the counts both have written. The rest of the second's worth goes to the second
    process; once both have synced since, each knows all 20, and what either admits then
    keeps the team within the rule (refused while the 20 are in the 0.8 s window), however
    long all this took."""
    team_row, key = team
    team_id = team_row["id"]
    first = started(database_url, key, team_row)
    second = started(database_url, key, team_row)
    try:
        for limits in (first, second):  # each knows the team, holds an allowance of it
            limits.limiter.track(team_id, time.monotonic())
            limits._sync_now.set()
        wait_for(
            lambda: all(lim.limiter.teams[team_id].synced for lim in (first, second)),
            timeout=10,
        )
        assert first.limiter.teams[team_id].share < 16  # its part only
        codes, tenths = outcomes(app, first, key, 16)
        assert codes == [201] * 16
        codes, more = outcomes(app, second, key, 4)
        assert codes == [201] * 4
        admitted = Counter(tenths + more)
        synced_in_turn(first, second)
        assert known_alike([first, second], team_id, admitted)
        for limits in (second, first):
            late = outcomes(app, limits, key, 3)[1]
            admitted.update(late)
            assert within_the_rule(admitted, 20), admitted
            synced_in_turn(first, second)
        assert known_alike([first, second], team_id, admitted)
    finally:
        first.stop()
        second.stop()


def test_a_create_past_its_allowance_waits_out_a_failed_sync(
    app, database_url, team, conn, caplog, monkeypatch
):
    """One failed sync (a lock wait that timed out, a dropped connection) is no reason to refuse
    a team within its rate: a create past its allowance waits for the next sync that answers,
    which admits it."""
    monkeypatch.setattr(create_limiter, "STALE_AFTER", 60.0)  # however slow the retries
    team_row, key = team
    team_id = team_row["id"]
    limits = started(database_url, key, team_row)
    answers = []
    try:
        limits.limiter.track(team_id, time.monotonic())
        limits._sync_now.set()
        wait_for(lambda: limits.limiter.teams[team_id].synced, timeout=10)
        conn.execute("ALTER TABLE create_tenth_allowances RENAME TO create_tenth_allowances_away")
        try:
            wait_for(lambda: "create limit sync failed" in caplog.text, timeout=10)
            with limits._lock:  # spent: the next create asks
                limits.limiter.teams[team_id].share = 0

            def create():
                with app.app_context():
                    answers.append(limits.admit(keys.hash_key(key))[0])

            thread = threading.Thread(target=create)
            thread.start()
            wait_for(lambda: answers or limits.limiter.teams[team_id].asking, timeout=10)
            # It waits through the failing syncs (retried every 0.2 s or more), not answered.
            wait_for(lambda: answers or limits.limiter.synced_at < time.monotonic() - 0.5)
        finally:
            conn.execute(
                "ALTER TABLE create_tenth_allowances_away RENAME TO create_tenth_allowances"
            )
        thread.join(30)
        assert answers == [None]  # admitted by the sync after the failed ones
    finally:
        limits.stop()


def test_creates_waiting_for_syncs_that_keep_failing_are_decided_once_syncs_are_stale(
    app, database_url, team, conn, monkeypatch
):
    """A create that asked does not hang on syncs that fail: once none has answered for
    STALE_AFTER it is decided on this process's counts, as when the database is away."""
    monkeypatch.setattr(create_limits, "ASK_TIMEOUT", 30.0)
    team_row, key = team
    limits = started(database_url, key, team_row)
    try:
        limits.limiter.track(team_row["id"], time.monotonic())
        limits._sync_now.set()
        wait_for(lambda: limits.limiter.teams[team_row["id"]].synced, timeout=10)
        conn.execute("ALTER TABLE create_tenth_allowances RENAME TO create_tenth_allowances_away")
        try:
            with limits._lock:  # spent: the next create asks
                limits.limiter.teams[team_row["id"]].share = 0
            began = time.monotonic()
            with app.app_context():
                refusal, admission = limits.admit(keys.hash_key(key))
            took = time.monotonic() - began
            stale = limits.limiter.stale_at()
        finally:
            conn.execute(
                "ALTER TABLE create_tenth_allowances_away RENAME TO create_tenth_allowances"
            )
        # Decided alone on its own counts (nothing made yet: admitted), once syncs were stale,
        # not after ASK_TIMEOUT.
        assert refusal is None and admission is not None
        assert began + took >= stale
        assert took < 10
    finally:
        limits.stop()
