"""When a connection makes its kept claim plans again (claim_plans.py), and how many rows a plain
claim asks for: pure, with a fake clock and fake connections."""

import pytest
from psycopg import OperationalError

from asyncqueue.worker.claim_plans import SLOW_MARK_EVERY, KeptPlans, claim_batch, plain_claim_text


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Conn:
    def __init__(self, fail: bool = False):
        self.executed: list[str] = []
        self.fail = fail

    def execute(self, sql):
        if self.fail:
            raise OperationalError("the connection broke")
        self.executed.append(sql)


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
    clock, conn = Clock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    for _ in range(50):
        plans.refresh(conn)
        plans.observe(0.019)
        clock.now += 0.19
    assert conn.executed == [] and plans.replans == 0


def test_plans_older_than_the_max_age_are_made_again_once():
    clock, conn = Clock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    plans.refresh(conn)  # its first claim: the plans are made now
    clock.now += 10.0
    plans.refresh(conn)
    plans.refresh(conn)
    assert conn.executed == ["DISCARD PLANS"] and plans.replans == 1


def test_a_slow_claim_makes_every_connections_plans_stale_once():
    clock, first, second, later = Clock(), Conn(), Conn(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    plans.refresh(first)
    plans.refresh(second)
    clock.now += 0.5
    plans.observe(0.3)  # say, on `first`
    clock.now += 0.001
    for conn in (first, second, later, first, second, later):
        plans.refresh(conn)
    assert first.executed == second.executed == ["DISCARD PLANS"]
    assert later.executed == []  # its plans were made after the slow claim


def test_slow_claims_mark_plans_stale_at_most_once_a_second():
    # A database that is slow for everyone (a synchronous standby): a planning a second, not one
    # a claim.
    clock, conn = Clock(), Conn()
    plans = KeptPlans(max_age=1e9, slow=0.02, clock=clock)
    plans.refresh(conn)
    step = 0.05
    for _ in range(int(10 / step)):
        clock.now += step
        plans.refresh(conn)
        plans.observe(0.03)
    assert 10 / SLOW_MARK_EVERY - 1 <= plans.replans <= 10 / SLOW_MARK_EVERY + 1


def test_a_failed_discard_propagates_and_is_tried_again_next_time():
    # The claim is not made on a broken connection: the dispatcher's error handling sees it as
    # a failed claim, and nothing has been claimed.
    clock, conn = Clock(), Conn()
    plans = KeptPlans(max_age=10.0, slow=0.02, clock=clock)
    plans.refresh(conn)
    clock.now += 11
    conn.fail = True
    with pytest.raises(OperationalError):
        plans.refresh(conn)
    conn.fail = False
    plans.refresh(conn)
    assert conn.executed == ["DISCARD PLANS"] and plans.replans == 1
