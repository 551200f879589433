"""The fairness rule between teams in one worker (asyncqueue/worker/fairness.py), in tables."""

import pytest

from asyncqueue.worker.fairness import (
    PROBE_INTERVAL,
    RECHECK_SECONDS,
    ClaimPlan,
    TeamSlots,
    plan_claim,
    probe_due,
)

C, R = 16, 4


@pytest.mark.parametrize(
    "held, free, reserve, expected",
    [
        # Nothing running: claim a team's full concurrency at most, not the reserve too.
        ({}, C + R, R, ClaimPlan(C)),
        # A single team's drain keeps exactly `concurrency` calls in flight, as before.
        ({"b": 10}, C + R - 10, R, ClaimPlan(6)),
        ({"b": 15}, C + R - 15, R, ClaimPlan(1)),
        # B at its cap: the reserve is for the others, and B is skipped.
        ({"b": 16}, R, R, ClaimPlan(R, ("b",))),
        ({"b": 16, "a": 2}, R - 2, R, ClaimPlan(2, ("b",))),
        # The fullest uncapped team bounds the batch (it might get every row).
        ({"b": 16, "a": 3}, 1, R, ClaimPlan(1, ("b",))),
        ({"a": 12, "c": 4}, 4, R, ClaimPlan(4)),
        ({"a": 14, "c": 2}, 4, R, ClaimPlan(2)),
        # No free slot (or the dispatcher says not to claim): nothing.
        ({"b": 16, "a": 4}, 0, R, ClaimPlan(0)),
        # Reserve 0 turns the rule off: claim `free` rows of anybody, as before.
        ({"b": 16}, 0, 0, ClaimPlan(0)),
        ({"b": 10}, 6, 0, ClaimPlan(6)),
        ({}, 16, 0, ClaimPlan(16)),
        # A reserve as large as the concurrency lets two teams reach the cap: both skipped.
        ({"a": 16, "b": 16}, 4, 20, ClaimPlan(4, ("a", "b"))),
    ],
)
def test_plan_claim(held, free, reserve, expected):
    assert plan_claim(held, free, C, reserve) == expected


@pytest.mark.parametrize(
    "now, last, next_probe, notified, expected",
    [
        (10.0, 9.0, 11.0, False, False),  # nothing new, recheck not due
        (10.0, 9.0, 11.0, True, True),  # a notification: look now
        (10.0, 9.99, 11.0, True, False),  # but not twice within the interval
        (11.0, 9.0, 11.0, False, True),  # the recheck came due
        (10.0, float("-inf"), 10.0, False, True),  # the last look found work: look again
    ],
)
def test_probe_due(now, last, next_probe, notified, expected):
    assert probe_due(now, last, next_probe, notified, PROBE_INTERVAL) is expected


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def capped_slots(clock):
    slots = TeamSlots(C, R, clock=clock)
    for i in range(C):
        slots.take(f"b{i}", "B")
    return slots


def test_capped_team_is_skipped_once_then_only_when_work_may_have_come():
    clock = Clock()
    slots = capped_slots(clock)
    assert slots.capped()
    first = slots.plan(R)
    assert first == ClaimPlan(R, ("B",))  # B just reached its cap: look past it at once
    slots.claimed(first, 0)  # found nothing
    assert slots.plan(R).limit == 0  # not again straight away (a freed B slot woke us, say)
    assert slots.seconds_until_probe() == pytest.approx(RECHECK_SECONDS)
    clock.t += 0.01
    slots.notified()  # team A created a task
    assert slots.plan(R).limit == 0  # within PROBE_INTERVAL of the last look
    assert slots.seconds_until_probe() == pytest.approx(PROBE_INTERVAL - 0.01)
    clock.t += PROBE_INTERVAL
    assert slots.plan(R) == ClaimPlan(R, ("B",))
    clock.t += RECHECK_SECONDS  # a delayed task of another team may have come due
    found = slots.plan(R)
    assert found.limit == R
    slots.claimed(found, 2)  # it found work: more may wait, look again at once
    assert slots.plan(R - 2) == ClaimPlan(R - 2, ("B",))


def test_freed_slots_uncap_and_are_counted_once():
    clock = Clock()
    slots = capped_slots(clock)
    slots.take("a1", "A")
    slots.free("b0")
    slots.free("b0")  # call over, then outcome written: reported twice, freed once
    assert slots.held() == {"B": C - 1, "A": 1}
    assert not slots.capped()
    assert slots.plan(C + R - C) == ClaimPlan(1)  # B may take one more, the plain claim
    slots.free("a1")
    assert slots.held() == {"B": C - 1}


def test_reserve_zero_is_the_old_behaviour():
    slots = TeamSlots(C, 0, clock=Clock())
    for i in range(C):
        slots.take(i, "B")
    assert not slots.capped()
    assert slots.plan(3) == ClaimPlan(3)


def test_slow_probes_are_spaced_out():
    """With very many teams holding tasks a look past the capped team takes long: the next one
    waits ten times as long, so looking never takes more than a tenth of the time."""
    clock = Clock()
    slots = capped_slots(clock)
    probe = slots.plan(R)
    clock.t += 0.04  # the claim took 40 ms
    slots.claimed(probe, 0)
    slots.notified()
    assert slots.seconds_until_probe() == pytest.approx(0.4 - 0.04)
    clock.t += 0.3
    assert slots.plan(R).limit == 0
    clock.t += 0.07
    assert slots.plan(R).limit == R
