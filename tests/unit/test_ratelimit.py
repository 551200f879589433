"""Create limits (asyncqueue/ratelimit.py): the window maths in tables, and several web
processes simulated syncing through a shared table, to measure how far over the rate a team
can get."""

import random

import pytest

from asyncqueue.config import ConfigError, Settings
from asyncqueue.ratelimit import (
    SYNC_INTERVAL,
    CreateLimiter,
    TeamSync,
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
    limiter.synced(now, now, processes, {team: TeamSync(plan)})
    return limiter


def test_one_process_admits_a_seconds_worth_then_refuses_with_a_wait():
    limiter = synced_limiter({"free": 20, "pro": 500})
    admitted = [limiter.admit("t", 1000.0) is None for _ in range(30)]
    assert admitted.count(True) == 20 - 1  # the one counted before the sync
    wait = limiter.admit("t", 1000.0)
    assert 0 < wait <= 1.05


def test_a_team_whose_plan_is_not_known_yet_gets_the_most_generous_rate():
    limiter = CreateLimiter({"free": 20, "pro": 500})
    limiter.track("t", 1000.0)
    limiter.synced(1000.0, 1000.0, 1, {"t": TeamSync(None)})
    assert sum(limiter.admit("t", 1000.0) is None for _ in range(600)) == 500
    assert CreateLimiter({"free": 20, "pro": None}).unknown_plan_rate is None


def test_a_team_back_after_a_pause_while_syncs_fail_keeps_its_own_plans_rate():
    # Its counts were forgotten after FORGET_AFTER; its plan is not, so the fallback on this
    # process's own counts holds it to 20 per second, not the most generous plan's 500.
    limiter = CreateLimiter({"free": 20, "pro": 500})
    limiter.track("t", 1000.0, "free")
    limiter.synced(1000.0, 1000.0, 1, {"t": TeamSync("free")})
    limiter.synced(1011.0, 1011.0, 1, {})  # forgotten
    assert "t" not in limiter.teams
    assert sum(limiter.admit("t", 1013.0 + i / 1000) is None for i in range(600)) == 20


def test_pro_team_gets_its_rate_once_the_plan_is_known():
    limiter = synced_limiter({"free": 20, "pro": 500}, plan="pro")
    admitted = sum(limiter.admit("t", 1000.0 + i / 1000) is None for i in range(600))
    assert admitted == 500 - 1  # the one counted before the sync


def test_unlimited_plan_is_never_refused():
    limiter = synced_limiter({"free": 20, "pro": None}, plan="pro")
    assert all(limiter.admit("t", 1000.0) is None for _ in range(10_000))


@pytest.mark.parametrize(
    "mine, others, allowance, expected",
    [
        (1, 9, 0, 1),  # headroom 10, shared by traffic: (1 + 1) / (10 + 2 processes) of it
        (9, 0, 0, 10),  # nobody else serves the team: nearly all of it (9 + 1) / (9 + 2)
        (9, 0, 5, 6),  # ... but another process may still admit 5: the rest, 6 of 11
        (9, 1, 10, 0),  # what is left is all in the other process's allowance: nothing
        (1, 19, 0, 0),  # the other process has filled the second: nothing
    ],
)
def test_the_headroom_is_shared_by_recent_traffic(mine, others, allowance, expected):
    limiter = CreateLimiter({"free": 20})
    for _ in range(mine):
        limiter.admit("t", 1000.0)
    answer = TeamSync("free", {1000: others}, allowance, others)
    result = limiter.synced(1000.0, 1000.0, 2, {"t": answer})
    admitted = sum(limiter.admit("t", 1000.0) is None for _ in range(20))
    assert admitted == expected
    assert result.allowances == [("t", pytest.approx(limiter.teams["t"].share))]


def test_a_process_short_of_allowance_gets_its_part_by_requests_not_admissions():
    limiter = CreateLimiter({"free": 20})
    limiter.track("t", 1000.0)
    limiter.synced(1000.0, 1000.0, 2, {"t": TeamSync("free", {}, allowance=18, wanted=2)})
    assert [limiter.admit("t", 1000.0) is None for _ in range(10)].count(True) == 2
    # Its next sync: the other process asked for 2 and holds nothing now. This one asked for 10
    # (8 refused): (10 + 1) / (10 + 2 + 2 processes) of the headroom 18, not (2 + 1) / 6.
    limiter.synced(1000.2, 1000.2, 2, {"t": TeamSync("free", {}, allowance=0, wanted=2)})
    assert limiter.teams["t"].share == pytest.approx(18 * 11 / 14)


def test_a_team_new_to_a_process_waits_for_a_sync_while_syncs_answer():
    limiter = CreateLimiter({"free": 20})
    assert limiter.needs_sync("t", 1000.0)  # a process just started: its first sync is coming
    assert not limiter.needs_sync("t", 1001.5)  # none came: it decides on what it has
    limiter.synced(1002.0, 1002.0, 2, {})
    assert limiter.needs_sync("t", 1002.1)
    limiter.track("t", 1002.1)
    limiter.synced(1002.2, 1002.2, 2, {"t": TeamSync("free")})
    assert not limiter.needs_sync("t", 1002.3)  # synced: decided from memory
    assert limiter.needs_sync("u", 1002.3)  # another team, new here
    assert not limiter.needs_sync("u", 1004.0)  # the database is away: no waiting


def test_a_team_new_to_a_process_gets_nothing_until_a_sync_names_it():
    # It cannot know what the other processes may still admit (creates of it wait for that
    # sync; one that did not come in time is refused, with a short wait).
    limiter = CreateLimiter({"free": 20})
    limiter.synced(1000.0, 1000.0, 4, {})
    assert limiter.admit("t", 1000.05) == pytest.approx(0.15)
    result = limiter.synced(1000.1, 1000.1, 4, {"t": TeamSync("free")})
    # Its part by requests: the one refused, (1 + 1) / (1 + 4 processes) of the 20.
    assert result.allowances == [("t", pytest.approx(20 * 2 / 5))]
    assert sum(limiter.admit("t", 1000.1) is None for _ in range(20)) == 8


def test_creates_admitted_while_a_sync_commits_are_charged_to_its_allowance():
    # The counts a sync writes and the allowance it takes are of one moment; what is admitted
    # after that moment (on the old allowance, until the sync commits) uses up the new one.
    limiter = CreateLimiter({"free": 20})
    limiter.track("t", 1000.0)
    limiter.synced(1000.0, 1000.0, 1, {"t": TeamSync("free")})
    result = limiter.prepare_sync(1000.1, 1000.1, 1, {"t": TeamSync("free")})
    meanwhile = sum(limiter.admit("t", 1000.1) is None for _ in range(5))
    limiter.apply_sync(result)
    after = sum(limiter.admit("t", 1000.1) is None for _ in range(30))
    assert (meanwhile, after) == (5, 15)


def test_without_syncs_a_process_keeps_to_its_share_of_the_rate():
    limiter = synced_limiter({"free": 20}, processes=4)
    later = 1000.0 + 5  # the database has been away for 5 s
    admitted = sum(limiter.admit("t", later) is None for _ in range(20))
    assert admitted == 5


def simulate(processes: int, rate: float, offered: float, seconds: float, seed: int, skew):
    """`processes` limiters syncing every SYNC_INTERVAL (each at its own phase, one at a time as
    the advisory lock makes them) through a shared table of counts and allowances; requests at
    `offered` per second, each sent to a process chosen by `skew`; a process new to the team
    syncs before deciding, as CreateLimits waits for it. Returns the most creates admitted in
    any one-second span, and the mean rate admitted."""
    rng = random.Random(seed)
    limiters = [CreateLimiter({"free": rate}) for _ in range(processes)]
    table: dict[tuple[int, int], int] = {}  # (process, second) -> creates admitted
    asked: dict[tuple[int, int], int] = {}  # (process, second) -> creates asked for
    allowances: dict[int, float] = {}  # process -> allowance taken at its last sync

    def sync(p: int, now: float) -> None:
        limiter = limiters[p]
        for _, second, n, w in limiter.counts(now):
            table[(p, second)], asked[(p, second)] = n, w
        others: dict[int, int] = {}
        for (q, s), n in table.items():
            if q != p and s >= int(now) - 1:
                others[s] = others.get(s, 0) + n
        allowance = sum(a for q, a in allowances.items() if q != p)
        wanted = sum(w for (q, s), w in asked.items() if q != p and s >= int(now) - 1)
        result = limiter.synced(
            now, now, processes, {"t": TeamSync("free", others, allowance, wanted)}
        )
        allowances[p] = dict(result.allowances).get("t", 0.0)

    next_sync = [rng.uniform(0, SYNC_INTERVAL) for _ in range(processes)]  # their phases
    for limiter in limiters:  # running processes, synced before the team's burst begins
        limiter.synced(-0.1, -0.1, processes, {})
    admitted_at: list[float] = []
    step = 1.0 / offered
    t = start = rng.uniform(0.0, 1.0)  # the flood starts anywhere in a second
    while t < seconds:
        while min(next_sync) <= t:
            p = next_sync.index(min(next_sync))
            sync(p, next_sync[p])
            next_sync[p] += SYNC_INTERVAL
        p = skew(rng, processes)
        if limiters[p].needs_sync("t", t):
            limiters[p].track("t", t)
            sync(p, t)
        if limiters[p].admit("t", t) is None:
            admitted_at.append(t)
        t += step * rng.uniform(0.5, 1.5)
    worst, j = 0, 0
    for i, at in enumerate(admitted_at):
        while admitted_at[j] <= at - 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    return worst, len(admitted_at) / (seconds - start)


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
    # The README's promise (ratelimit.py's note): whatever the number of processes serving the
    # team at once, the most admitted in any one second stays within 2.2 x the rate: a flood
    # that starts late in a second fools the sliding window, which takes that second's creates
    # as spread over all of it (ratelimit.py's note; a finer window is the known fix). The
    # mean over the run, that first second's excess included, within 1.35 x (+1) ...
    assert worst_window <= rate * 2.2 + 1
    assert max(means) <= rate * 1.35 + 1
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
