"""Create limits (asyncqueue/ratelimit.py): the window maths in tables, and several web
processes simulated syncing through a shared table, to measure how far over the rate a team
can get."""

import random

import pytest

from asyncqueue.config import ConfigError, Settings
from asyncqueue.ratelimit import (
    SYNC_INTERVAL,
    CreateLimiter,
    retry_after_header,
    seconds_until_room,
    window_estimate,
)


@pytest.mark.parametrize(
    "previous, current, elapsed, expected",
    [(0, 0, 0.5, 0), (20, 0, 0.0, 20), (20, 0, 0.75, 5), (10, 4, 0.5, 9)],
)
def test_window_estimate(previous, current, elapsed, expected):
    assert window_estimate(previous, current, elapsed) == pytest.approx(expected)


@pytest.mark.parametrize(
    "previous, current, elapsed, rate, expected",
    [
        (0, 5, 0.2, 20, 0.0),  # room now
        (20, 0, 0.0, 20, 0.05),  # the previous second fades: one create's worth in 1/20 s
        (0, 20, 0.5, 20, 0.5 + 0.05),  # full this second: wait for it to end and fade a bit
        (10, 20, 0.9, 20, 0.1 + 0.05),
    ],
)
def test_seconds_until_room(previous, current, elapsed, rate, expected):
    assert seconds_until_room(previous, current, elapsed, rate) == pytest.approx(expected)


@pytest.mark.parametrize("seconds, header", [(0.001, "1"), (0.5, "1"), (1.0, "1"), (1.2, "2")])
def test_retry_after_is_whole_seconds_never_zero(seconds, header):
    assert retry_after_header(seconds) == header


def synced_limiter(rates, now=1000.0, processes=1, plan="free", team="t"):
    limiter = CreateLimiter(rates)
    limiter.admit(team, now)
    limiter.synced(now, now, processes, {team: (plan, {}, 0)})
    return limiter


def test_one_process_admits_a_seconds_worth_then_refuses_with_a_wait():
    limiter = synced_limiter({"free": 20, "pro": 500})
    admitted = [limiter.admit("t", 1000.0) is None for _ in range(30)]
    assert admitted.count(True) == 20 - 1  # the one counted before the sync
    wait = limiter.admit("t", 1000.0)
    assert 0 < wait <= 1.05


def test_a_team_whose_plan_is_not_known_yet_gets_the_most_generous_rate():
    limiter = CreateLimiter({"free": 20, "pro": 500})
    limiter.synced(1000.0, 1000.0, 1, {})
    assert sum(limiter.admit("t", 1000.0) is None for _ in range(600)) == 500
    assert CreateLimiter({"free": 20, "pro": None}).unknown_plan_rate is None


def test_pro_team_gets_its_rate_once_the_plan_is_known():
    limiter = synced_limiter({"free": 20, "pro": 500}, plan="pro")
    admitted = sum(limiter.admit("t", 1000.0 + i / 1000) is None for i in range(600))
    assert admitted == 500 - 1  # the one counted before the sync


def test_unlimited_plan_is_never_refused():
    limiter = synced_limiter({"free": 20, "pro": None}, plan="pro")
    assert all(limiter.admit("t", 1000.0) is None for _ in range(10_000))


@pytest.mark.parametrize(
    "mine, others, active, expected",
    [
        (1, 9, 1, 1),  # headroom 10, shared by traffic: (1 + 1) / (10 + 2 processes) of it
        (9, 0, 0, 10),  # nobody else serves the team: nearly all of it (9 + 1) / (9 + 2)
        # Another process serves the team too: its counts may be a sync old, so it is taken to
        # have admitted at least as many as this one: half.
        (9, 1, 1, 5),
        (1, 19, 1, 0),  # the other process has filled the second: nothing
    ],
)
def test_the_headroom_is_shared_by_recent_traffic(mine, others, active, expected):
    limiter = CreateLimiter({"free": 20})
    for _ in range(mine):
        limiter.admit("t", 1000.0)
    limiter.synced(1000.0, 1000.0, 2, {"t": ("free", {1000: others}, active)})
    admitted = sum(limiter.admit("t", 1000.0) is None for _ in range(20))
    assert admitted == expected


def test_without_syncs_a_process_keeps_to_its_share_of_the_rate():
    limiter = synced_limiter({"free": 20}, processes=4)
    later = 1000.0 + 5  # the database has been away for 5 s
    admitted = sum(limiter.admit("t", later) is None for _ in range(20))
    assert admitted == 5


def simulate(processes: int, rate: float, offered: float, seconds: float, seed: int, skew):
    """`processes` limiters syncing every SYNC_INTERVAL (each at its own phase) through a shared
    table of counts; requests at `offered` per second, each sent to a process chosen by `skew`.
    Returns the most creates admitted in any one-second span."""
    rng = random.Random(seed)
    limiters = [CreateLimiter({"free": rate}) for _ in range(processes)]
    table: dict[tuple[int, int], int] = {}  # (process, second) -> count
    phases = [rng.uniform(0, SYNC_INTERVAL) for _ in range(processes)]
    next_sync = list(phases)
    for limiter in limiters:  # running processes, synced before the team's burst begins
        limiter.synced(-1.0, -1.0, processes, {})
    admitted_at: list[float] = []
    t, step = 0.0, 1.0 / offered
    while t < seconds:
        for p, limiter in enumerate(limiters):
            while next_sync[p] <= t:
                now = next_sync[p]
                for _, second, n in limiter.counts(now):
                    table[(p, second)] = n
                second = int(now)
                others: dict[int, int] = {}
                active = set()
                for (q, s), n in table.items():
                    if q != p and s >= second - 1:
                        others[s] = others.get(s, 0) + n
                        active.add(q)
                limiter.synced(now, now, processes, {"t": ("free", others, len(active))})
                next_sync[p] += SYNC_INTERVAL
        p = skew(rng, processes)
        if limiters[p].admit("t", t) is None:
            admitted_at.append(t)
        t += step * rng.uniform(0.5, 1.5)
    worst, j = 0, 0
    for i, at in enumerate(admitted_at):
        while admitted_at[j] <= at - 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    return worst, len(admitted_at) / seconds


def uniform(rng, n):
    return rng.randrange(n)


def pinned(rng, n):
    return 0  # one keep-alive client: every request to the same process


def lopsided(rng, n):
    return 0 if rng.random() < 0.8 else rng.randrange(n)


@pytest.mark.parametrize("processes", [1, 2, 4, 8])
@pytest.mark.parametrize("skew", [uniform, pinned, lopsided])
@pytest.mark.parametrize("rate", [20, 500])
def test_simulated_processes_stay_near_the_rate(processes, skew, rate):
    worst_window, means = 0, []
    for seed in range(3):
        for overload in (4, 30):  # the team sends 4 or 30 times its rate
            worst, mean = simulate(processes, rate, rate * overload, 6, seed, skew)
            worst_window, means = max(worst_window, worst), [*means, mean]
    # The README's promise (ratelimit.py's note): the most admitted in any one second grows with
    # the processes serving the team at once (1.2 x the rate with one, 1.7 x with two, at most
    # 3 x), the sustained rate stays within a quarter of the rate (+1 for rounding) ...
    assert worst_window <= rate * min(1.2 + 0.5 * (processes - 1), 3.0) + 1
    assert max(means) <= rate * 1.25 + 1
    # ... and the limit is not starved: a team over its rate gets most of it, even when all its
    # requests go to one of 8 processes.
    assert min(means) >= rate * 0.55


@pytest.mark.parametrize("raw", ["free=0.5", "pro=0.99", "free=-1"])
def test_a_create_rate_below_one_per_second_is_refused_at_start(raw):
    # Whole creates are counted per second: below 1 would refuse every create for ever.
    with pytest.raises(ConfigError) as err:
        Settings.from_env(
            {"DATABASE_URL": "postgresql://u@127.0.0.1/x", "ASYNCQUEUE_CREATE_RATE": raw}
        )
    assert str(err.value) == (
        "ASYNCQUEUE_CREATE_RATE must be plan=rate pairs whose rates are 0 (unlimited) or at least"
        f" 1 per second, or off, got {raw!r}"
    )


@pytest.mark.parametrize("raw, free", [("free=1", 1.0), ("free=0", None), ("free=2.5", 2.5)])
def test_create_rates_of_zero_or_at_least_one_are_taken(raw, free):
    env = {"DATABASE_URL": "postgresql://u@127.0.0.1/x", "ASYNCQUEUE_CREATE_RATE": raw}
    assert Settings.from_env(env).create_rates["free"] == free
