"""When a connection makes its kept claim plans again (claim_plans.py), how many rows a plain
claim asks for, and whose plan_cache_mode the worker uses: pure, with a fake clock."""

import pytest

from asyncqueue.db.claims import plain_claim_text
from asyncqueue.worker.claim_plans import (
    PLAN_MAX_AGE,
    SLOW_MARK_EVERY,
    KeptPlans,
    claim_batch,
)
from asyncqueue.worker.process import (
    kept_plans_for,
    operator_plan_cache_mode,
    pool_connect_kwargs,
)
from tests.support.clock import FakeClock


class Conn:
    """A connection, as far as KeptPlans sees one: something to key by."""


def claim(plans: KeptPlans, conn, seconds: float = 0.001, ok: bool = True) -> str | None:
    """What the dispatcher does around one plain claim; the reason it replanned, if it did."""
    replan = plans.stale(conn)
    plans.observe(conn, seconds)
    if replan and ok:
        plans.made(conn, replan)
    return replan


@pytest.mark.parametrize(
    "free, asked",
    [(0, 0), (1, 1), (7, 7), (16, 16), (64, 64), (65, 64), (127, 64), (128, 128), (200, 128)]
    + [(10000, 8192)],
)
def test_claim_batch_is_exact_up_to_64_then_a_power_of_two(free, asked):
    assert claim_batch(free) == asked


def test_the_plain_claim_has_its_limit_written_in():
    text = plain_claim_text(7)
    assert "LIMIT 7\n" in text and "%(limit)s" not in text


def test_a_connection_keeps_its_plans_while_they_are_young_and_claims_quick():
    clock, conn = FakeClock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    reasons = []
    for _ in range(50):
        reasons.append(claim(plans, conn, seconds=0.019))
        clock.now += 0.19
    assert reasons == [None] * 50 and plans.replans == 0


def test_old_plans_whose_claims_got_slower_are_made_again_once():
    clock, conn = FakeClock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    assert claim(plans, conn, seconds=0.0005) is None  # its first claim: the plans are made now
    clock.now += 9.9
    assert claim(plans, conn, seconds=0.004) is None  # slower (a seq scan), but young
    clock.now += 0.1
    assert [claim(plans, conn), claim(plans, conn)] == ["age", None]
    assert plans.replans == 1


def test_old_plans_whose_claims_are_as_quick_as_ever_are_kept():
    # One pickup every 15 s: no replan (it would cost each pickup a planning).
    clock, conn = FakeClock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    reasons = []
    for i in range(20):
        reasons.append(claim(plans, conn, seconds=0.0005 + (i % 3) * 0.0003))
        clock.now += 15
    assert reasons == [None] * 20


def test_a_slow_claim_makes_every_connections_plans_stale_once():
    clock, first, second, later = FakeClock(), Conn(), Conn(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    claim(plans, first)
    claim(plans, second)
    clock.now += 0.5
    claim(plans, first, seconds=0.3)  # slow: stale from now on, everywhere
    clock.now += 0.001
    reasons = [claim(plans, conn) for conn in (first, second, later, first, second, later)]
    assert reasons == ["slow", "slow", None, None, None, None]  # `later` made its plans after


def test_a_claim_that_failed_slowly_counts_as_slow():
    clock, conn = FakeClock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    claim(plans, conn)
    clock.now += 0.3
    claim(plans, conn, seconds=0.3, ok=False)  # say, cancelled by a statement_timeout
    clock.now += 0.001
    assert claim(plans, conn) == "slow"


def test_slow_claims_mark_plans_stale_at_most_once_a_second():
    # A database that is slow for everyone (a synchronous standby): a planning a second, not one
    # a claim.
    clock, conn = FakeClock(), Conn()
    plans = KeptPlans(max_age=1e9, slow=0.02, clock=clock)
    claim(plans, conn)
    step = 0.05
    for _ in range(int(10 / step)):
        clock.now += step
        claim(plans, conn, seconds=0.03)
    assert 10 / SLOW_MARK_EVERY - 1 <= plans.replans <= 10 / SLOW_MARK_EVERY + 1


def test_a_replan_whose_claim_failed_is_tried_again_next_time():
    clock, conn = FakeClock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    claim(plans, conn, seconds=0.0005)
    claim(plans, conn, seconds=0.005)
    clock.now += 11
    assert claim(plans, conn, seconds=0.005, ok=False) == "age"  # it failed: nothing was made
    assert claim(plans, conn) == "age"
    assert claim(plans, conn) is None and plans.replans == 1


def test_unmanaged_plans_are_never_made_again():
    conn = Conn()
    plans = KeptPlans.unmanaged()
    reasons = [claim(plans, conn, seconds=5.0) for _ in range(3)]
    assert reasons == [None, None, None]


@pytest.mark.parametrize(
    "options, mode",
    [
        (None, None),
        ("-c search_path=app", None),
        ("-c plan_cache_mode=force_custom_plan", "force_custom_plan"),
        ("-c PLAN-CACHE-MODE=Force_Custom_Plan", "force_custom_plan"),
        ("-c search_path=app -c plan_cache_mode = auto", "auto"),
    ],
)
def test_the_operators_plan_cache_mode_is_read_however_it_is_spelt(options, mode, monkeypatch):
    monkeypatch.delenv("PGOPTIONS", raising=False)
    url = "postgresql://u@127.0.0.1/db"
    if options:
        url = f"{url}?options={options.replace(' ', '%20').replace('=', '%3D')}"
    assert operator_plan_cache_mode(url) == mode
    assert ("options" in pool_connect_kwargs(url)) == (mode is None)


def test_the_claims_plans_are_not_managed_where_the_operator_chose_another_mode(monkeypatch):
    monkeypatch.delenv("PGOPTIONS", raising=False)
    base = "postgresql://u@127.0.0.1/db"
    custom = f"{base}?options=-c%20plan_cache_mode%3Dforce_custom_plan"
    auto = f"{base}?options=-c%20plan_cache_mode%3Dauto"
    assert kept_plans_for(base).max_age == PLAN_MAX_AGE
    assert kept_plans_for(auto).max_age == PLAN_MAX_AGE
    assert kept_plans_for(custom).max_age == float("inf")
    assert kept_plans_for(custom).slow == float("inf")


def test_pgoptions_counts_as_the_operators_choice(monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c plan_cache_mode=force_custom_plan")
    url = "postgresql://u@127.0.0.1/db"
    assert operator_plan_cache_mode(url) == "force_custom_plan"
    assert "options" not in pool_connect_kwargs(url)
