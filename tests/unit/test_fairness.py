"""The fairness rule between teams in one worker (asyncqueue/worker/fairness.py), in tables."""

import pytest

from asyncqueue.worker.fairness import (
    PROBE_INTERVAL,
    PROBE_SPACING,
    RECHECK_SECONDS,
    ClaimPlan,
    TeamSlots,
    plan_claim,
    probe_due,
)
from tests.support.clock import FakeClock

C, R = 16, 4


@pytest.mark.parametrize(
    "held, free, reserve, expected",
    [
        # Nothing running: claim a team's full concurrency at most, not the reserve too.
        ({}, C + R, R, ClaimPlan(C)),
        # A single team's drain keeps exactly `concurrency` calls in flight.
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
        # Reserve 0 turns the rule off: claim `free` rows of anybody.
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


HELD_B = {"B": C}  # team B holds every usual slot of this worker


def team_slots(reserve: int = R) -> tuple[TeamSlots, FakeClock]:
    clock = FakeClock()
    return TeamSlots(C, reserve, clock=clock), clock


def test_capped_team_is_skipped_once_then_only_when_work_may_have_come():
    slots, clock = team_slots()
    assert slots.capped(HELD_B)
    first = slots.plan(R, HELD_B)
    assert first == ClaimPlan(R, ("B",))  # B just reached its cap: look past it at once
    slots.claimed(first, 0)  # found nothing
    assert slots.plan(R, HELD_B).limit == 0  # not again straight away (a freed B slot woke us)
    assert slots.seconds_until_probe() == pytest.approx(RECHECK_SECONDS)
    clock.now += 0.01
    slots.notified()  # team A created a task
    assert slots.plan(R, HELD_B).limit == 0  # within PROBE_INTERVAL of the last look
    assert slots.seconds_until_probe() == pytest.approx(PROBE_INTERVAL - 0.01)
    clock.now += PROBE_INTERVAL
    assert slots.plan(R, HELD_B) == ClaimPlan(R, ("B",))
    clock.now += RECHECK_SECONDS  # a delayed task of another team may have come due
    found = slots.plan(R, HELD_B)
    assert found.limit == R
    slots.claimed(found, 2)  # it found work: more may wait, look again at once
    assert slots.plan(R - 2, {**HELD_B, "A": 2}) == ClaimPlan(R - 2, ("B",))


def test_a_freed_slot_uncaps_the_team():
    slots, _ = team_slots()
    held = {"B": C - 1, "A": 1}
    assert not slots.capped(held)
    assert slots.plan(R, held) == ClaimPlan(1)  # B may take one more: the plain claim


def test_reserve_zero_turns_the_rule_off():
    slots, _ = team_slots(reserve=0)
    assert not slots.capped(HELD_B)
    assert slots.plan(3, HELD_B) == ClaimPlan(3)


def test_slow_probes_are_spaced_out():
    """With very many teams holding tasks a look past the capped team takes long: the next one
    waits ten times as long, so looking never takes more than a tenth of the time."""
    slots, clock = team_slots()
    probe = slots.plan(R, HELD_B)
    took = 0.04
    clock.now += took
    slots.claimed(probe, 0)
    slots.notified()
    assert slots.seconds_until_probe() == pytest.approx(PROBE_SPACING * took - took)
    clock.now += 0.3
    assert slots.plan(R, HELD_B).limit == 0
    clock.now += 0.07
    assert slots.plan(R, HELD_B).limit == R
