"""The dispatcher without a database: its slot table (keyed by claim), its idle wait, and its
claims against a fake pool."""

import threading
import time
import uuid

import pytest
from psycopg import errors

from asyncqueue.worker.claim_plans import KeptPlans
from asyncqueue.worker.dispatcher import FLOOR_MAX, MAX_IDLE_WAIT, Dispatcher, idle_wait
from asyncqueue.worker.slots import SlotTable
from tests.support.clock import FakeClock
from tests.support.fake_pool import FakePool
from tests.support.tasks import claimed_row


@pytest.mark.parametrize(
    "seconds, next_seconds, rounds, expected",
    [
        (None, None, 0, (MAX_IDLE_WAIT, 0)),  # nothing waits at all
        (None, None, 4, (MAX_IDLE_WAIT, 0)),
        (2.5, 2.5, 0, (2.5, 0)),  # the next due time
        (2.5, 2.5, 3, (2.5, 0)),  # nothing stuck any more: the count starts again
        (90.0, 90.0, 0, (MAX_IDLE_WAIT, 0)),  # a safety net
        (0.0, None, 0, (0.0, 1)),  # due now and not claimed: look once more at once
        (-1.0, None, 1, (0.01, 2)),  # still there: held by another session, back off
        (-1.0, None, 2, (0.02, 3)),
        (-1.0, None, 5, (0.16, 6)),
        (-1.0, None, 30, (FLOOR_MAX, 31)),  # never longer than the floor's ceiling
        (-1.0, 0.3, 30, (0.3, 31)),  # ... nor past the next task coming due
        (-1.0, 0.005, 2, (0.005, 3)),
    ],
)
def test_idle_wait(seconds, next_seconds, rounds, expected):
    wait, new_rounds = idle_wait(seconds, next_seconds, rounds)
    assert (round(wait, 6), new_rounds) == expected


def test_a_held_due_row_costs_about_one_look_a_second():
    waited, rounds = 0.0, 0
    looks = 0
    while waited < 60:
        wait, rounds = idle_wait(-5.0, None, rounds)
        waited += wait
        looks += 1
    assert looks < 70


def test_free_slots_count_running_calls_and_the_write_backlog():
    slots = SlotTable(4)
    claims = slots.add([claimed_row() for _ in range(3)])
    assert slots.free() == 1
    for claim in claims:
        slots.call_ended(claim)  # outcomes not written yet
    assert slots.free() == 4 and slots.held() == 3
    more = slots.add([claimed_row()])
    slots.call_ended(more[0])
    assert slots.free() == 0  # as many outcomes wait as there are slots: the database lags
    slots.release(claims)
    assert slots.free() == 4 and slots.held() == 1


def test_releasing_an_old_claim_leaves_the_new_claim_of_the_same_task_alone():
    # The completer fell behind past the lease and this worker claimed the task again: the old
    # batch's release must not free the new claim's slot nor drop it from the hand-back.
    slots = SlotTable(2)
    task_id = uuid.uuid4()
    (old,) = slots.add([claimed_row(id=task_id)])
    slots.call_ended(old)
    (new,) = slots.add([claimed_row(id=task_id)])
    slots.release([old])
    assert slots.claims() == [new] and slots.running() == [new]
    assert slots.free() == 1  # the new call still holds its slot
    slots.call_ended(old)  # a late report about the old claim changes nothing either
    assert slots.running() == [new]


def test_running_calls_per_team():
    slots = SlotTable(8)
    a, b = uuid.uuid4(), uuid.uuid4()
    claims = slots.add([claimed_row(team_id=a), claimed_row(team_id=a), claimed_row(team_id=b)])
    assert slots.running_by_team() == {a: 2, b: 1}
    slots.call_ended(claims[0])
    slots.release([claims[2]])
    assert slots.running_by_team() == {a: 1}


def test_wait_until_wakes_when_the_last_call_ends():
    slots = SlotTable(2)
    (claim,) = slots.add([claimed_row()])
    looked, woke = threading.Event(), []

    def no_calls_running():
        looked.set()  # called with the table locked: call_ended below waits until we wait
        return slots.no_calls_running()

    waiter = threading.Thread(
        target=lambda: woke.append(slots.wait_until(no_calls_running, time.monotonic() + 60)),
        daemon=True,
    )
    waiter.start()
    assert looked.wait(10)
    slots.call_ended(claim)
    waiter.join(10)  # well before the deadline: woken, not timed out
    assert woke == [True]
    (other,) = slots.add([claimed_row()])
    assert not slots.wait_until(slots.no_calls_running, time.monotonic() + 0.05)


def test_a_closed_table_takes_no_claims():
    slots = SlotTable(4)
    slots.close()
    assert slots.free() == 0
    assert slots.add([claimed_row()]) is None and slots.held() == 0


def dispatcher_with(pool, slots=None, run=lambda claims: None, **kwargs) -> Dispatcher:
    return Dispatcher(
        pool,
        slots or SlotTable(4),
        run,
        threading.Event(),
        worker_name="w",
        lease_grace=1,
        **kwargs,
    )


def test_a_claim_that_lands_after_shutdown_began_is_handed_back():
    """The claim's rows come back after close(): they go straight back."""
    slots = SlotTable(4)
    claimed = [claimed_row(), claimed_row()]

    def claim_while_shutdown_begins(call):
        slots.close()
        return claimed

    pool = FakePool({"task_claim": claim_while_shutdown_begins})
    assert dispatcher_with(pool, slots).claim(4) == []
    assert slots.held() == 0
    assert pool.names() == ["task_claim", "task_release"]
    assert pool.calls[-1].params == {
        "ids": [r.id for r in claimed],
        "claim_tokens": [r.claim_token for r in claimed],
    }


def test_no_claim_when_the_completer_started_failing_while_a_connection_was_awaited():
    """free() is looked at again once the claim has its connection."""
    slots = SlotTable(4)
    pool = FakePool(on_connection=lambda: slots.writes_failing(True))  # the database came back
    assert dispatcher_with(pool, slots).claim(4) == [] and pool.calls == []


def test_a_claim_that_keeps_timing_out_ends_the_dispatcher(monkeypatch):
    """A statement timeout is not a database that went away: counted as a failure, so repeated
    ones end the dispatcher (and the process exits 1), while a lost connection is waited out."""
    from asyncqueue.worker import dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "MAX_UNEXPECTED_FAILURES", 2)

    def time_out():
        raise errors.QueryCanceled("canceling statement due to statement timeout")

    pool = FakePool(on_connection=time_out)
    thread = threading.Thread(target=dispatcher_with(pool).run, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive() and pool.connections == 2


def test_a_worker_with_100_free_slots_claims_64_then_36_without_an_idle_look():
    """A plain claim asks for at most 64 rows when more are free (claim_plans.claim_batch): the
    rest are claimed at once in the next round, not after an idle wait."""
    slots = SlotTable(100)
    pool = FakePool({"task_claim": lambda call: [claimed_row() for _ in range(call.limit)]})

    def run(claims):
        if slots.free() == 0:
            dispatcher.stopping.set()

    # Plans never made again: a stall here must not add a DISCARD PLANS.
    dispatcher = dispatcher_with(pool, slots, run, plans=KeptPlans.unmanaged())
    dispatcher.run()
    assert pool.names() == ["task_claim", "task_claim"]
    assert [call.limit for call in pool.calls] == [64, 36]


def test_a_claim_cancelled_by_a_statement_timeout_makes_the_plans_stale():
    """A kept plan bad enough that the deployment's statement_timeout cancels every claim must
    still be replaced: the failed claim counts as a slow one."""
    cancel = [True]

    def claim(call):
        if cancel[0]:
            raise errors.QueryCanceled("canceling statement due to statement timeout")
        return []

    # Every claim counts as slow, so all that matters is whether the failed one is counted at
    # all; each reading of the clock is a second later than the last.
    plans = KeptPlans(slow=0.0, clock=FakeClock(step=1.0))
    pool = FakePool({"task_claim": claim})
    dispatcher = dispatcher_with(pool, plans=plans)
    with pytest.raises(errors.QueryCanceled):
        dispatcher.claim(4)
    cancel[0] = False
    assert dispatcher.claim(4) == []
    assert pool.names() == ["task_claim", "discard_plans", "task_claim"]
