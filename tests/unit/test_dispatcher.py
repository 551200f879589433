"""The dispatcher's slot table (keyed by claim) and its idle wait, without a database."""

import threading
import time
import uuid

import pytest

from asyncqueue.worker.dispatcher import FLOOR_MAX, MAX_IDLE_WAIT, idle_wait
from asyncqueue.worker.slots import SlotTable


def row(task_id=None, team_id=None) -> dict:
    return {
        "id": task_id or uuid.uuid4(),
        "claim_token": uuid.uuid4(),
        "team_id": team_id or uuid.uuid4(),
    }


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
    claims = slots.add([row() for _ in range(3)])
    assert slots.free() == 1
    for claim in claims:
        slots.call_ended(claim)  # outcomes not written yet
    assert slots.free() == 4 and slots.held() == 3
    more = slots.add([row()])
    slots.call_ended(more[0])
    assert slots.free() == 0  # as many outcomes wait as there are slots: the database lags
    slots.release(claims)
    assert slots.free() == 4 and slots.held() == 1


def test_releasing_an_old_claim_leaves_the_new_claim_of_the_same_task_alone():
    # The completer fell behind past the lease and this worker claimed the task again: the old
    # batch's release must not free the new claim's slot nor drop it from the hand-back.
    slots = SlotTable(2)
    task_id = uuid.uuid4()
    (old,) = slots.add([row(task_id)])
    slots.call_ended(old)
    (new,) = slots.add([row(task_id)])
    slots.release([old])
    assert slots.claims() == [new] and slots.running() == [new]
    assert slots.free() == 1  # the new call still holds its slot
    slots.call_ended(old)  # a late report about the old claim changes nothing either
    assert slots.running() == [new]


def test_running_calls_per_team():
    slots = SlotTable(8)
    a, b = uuid.uuid4(), uuid.uuid4()
    claims = slots.add([row(team_id=a), row(team_id=a), row(team_id=b)])
    assert slots.running_by_team() == {a: 2, b: 1}
    slots.call_ended(claims[0])
    slots.release([claims[2]])
    assert slots.running_by_team() == {a: 1}


def test_wait_until_wakes_when_the_last_call_ends():
    slots = SlotTable(2)
    (claim,) = slots.add([row()])
    threading.Timer(0.1, slots.call_ended, [claim]).start()
    started = time.monotonic()
    assert slots.wait_until(slots.no_calls_running, time.monotonic() + 10)
    assert time.monotonic() - started < 5
    (other,) = slots.add([row()])
    assert not slots.wait_until(slots.no_calls_running, time.monotonic() + 0.05)


def test_a_closed_table_takes_no_claims():
    slots = SlotTable(4)
    slots.close()
    assert slots.free() == 0
    assert slots.add([row()]) is None and slots.held() == 0


def test_a_claim_that_lands_after_shutdown_began_is_handed_back():
    """(issue 11 review, R8) The claim's rows come back after close(): they go straight back."""
    import contextlib

    from asyncqueue.worker.dispatcher import Dispatcher

    slots = SlotTable(4)
    claimed = [row(), row()]
    executed = []

    class Pool:
        @contextlib.contextmanager
        def connection(self, timeout=None):
            yield self

        def execute(self, sql, params, prepare=None):
            executed.append(params)
            if "limit" in params:
                slots.close()  # shutdown begins while the claim is in flight
                rows = claimed
            else:
                rows = []
            return type("Cursor", (), {"fetchall": lambda self: rows})()

    dispatcher = Dispatcher(
        Pool(), slots, lambda c: None, threading.Event(), worker_name="w", lease_grace=1
    )
    assert dispatcher.claim(4) == []
    assert slots.held() == 0
    assert executed[-1] == {
        "ids": [r["id"] for r in claimed],
        "claim_tokens": [r["claim_token"] for r in claimed],
    }


def test_no_claim_when_the_completer_started_failing_while_a_connection_was_awaited():
    """(issue 11 review, A5) free() is looked at again once the claim has its connection."""
    import contextlib

    from asyncqueue.worker.dispatcher import Dispatcher

    slots = SlotTable(4)
    executed = []

    class Pool:
        @contextlib.contextmanager
        def connection(self, timeout=None):
            slots.writes_failing(True)  # the database came back only now
            yield self

        def execute(self, sql, params, prepare=None):
            executed.append(params)
            return type("Cursor", (), {"fetchall": lambda self: []})()

    dispatcher = Dispatcher(
        Pool(), slots, lambda c: None, threading.Event(), worker_name="w", lease_grace=1
    )
    assert dispatcher.claim(4) == [] and executed == []


def test_a_claim_that_keeps_timing_out_ends_the_dispatcher(monkeypatch):
    """(issue 11 review, R6) A statement timeout is not a database that went away: counted as a
    failure, so repeated ones end the dispatcher (and the process exits 1), while a lost
    connection is waited out."""
    import contextlib

    from psycopg import errors

    from asyncqueue.worker import dispatcher as dispatcher_module
    from asyncqueue.worker.dispatcher import Dispatcher

    monkeypatch.setattr(dispatcher_module, "MAX_UNEXPECTED_FAILURES", 2)
    calls = []

    class Pool:
        @contextlib.contextmanager
        def connection(self, timeout=None):
            calls.append(1)
            raise errors.QueryCanceled("canceling statement due to statement timeout")
            yield

    dispatcher = Dispatcher(
        Pool(), SlotTable(4), lambda c: None, threading.Event(), worker_name="w", lease_grace=1
    )
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive() and len(calls) == 2


def test_a_worker_with_100_free_slots_claims_64_then_36_without_an_idle_look():
    """A plain claim asks for at most 64 rows when more are free (claim_plans.claim_batch): the
    rest are claimed at once in the next round, not after an idle wait."""
    import contextlib
    import re

    from asyncqueue.worker.claim_plans import KeptPlans
    from asyncqueue.worker.dispatcher import Dispatcher

    slots = SlotTable(100)
    asked: list[int] = []
    idle_looks: list[str] = []

    class Pool:
        @contextlib.contextmanager
        def connection(self, timeout=None):
            yield self

        def execute(self, sql, params=None, prepare=None):
            limit = re.search(r"LIMIT (\d+)\n", sql)
            if limit:
                asked.append(int(limit.group(1)))
                rows = [row() for _ in range(int(limit.group(1)))]
            else:
                idle_looks.append(sql)
                rows = []
            return type("Cursor", (), {"fetchall": lambda self: rows})()

    def run(claims):
        if slots.free() == 0:
            dispatcher.stopping.set()

    dispatcher = Dispatcher(Pool(), slots, run, threading.Event(), worker_name="w", lease_grace=1)
    dispatcher.plans = KeptPlans.unmanaged()  # a stall of 20 ms here must not add a DISCARD
    dispatcher.run()
    assert asked == [64, 36] and idle_looks == []


def test_a_claim_cancelled_by_a_statement_timeout_makes_the_plans_stale():
    """(attack) A kept plan bad enough that the deployment's statement_timeout cancels every claim
    must still be replaced: the failed claim counts as a slow one."""
    import contextlib

    from psycopg import errors

    from asyncqueue.worker.dispatcher import Dispatcher

    executed: list[str] = []
    cancel = [True]

    class Pool:
        @contextlib.contextmanager
        def connection(self, timeout=None):
            yield self

        def pipeline(self):
            return contextlib.nullcontext()

        def execute(self, sql, params=None, prepare=None):
            executed.append("claim" if "LIMIT" in sql else sql)
            if "LIMIT" in sql and cancel[0]:
                time.sleep(0.03)  # the timeout, longer than SLOW_CLAIM
                raise errors.QueryCanceled("canceling statement due to statement timeout")
            return type("Cursor", (), {"fetchall": lambda self: []})()

    dispatcher = Dispatcher(
        Pool(), SlotTable(4), lambda c: None, threading.Event(), worker_name="w", lease_grace=1
    )
    with pytest.raises(errors.QueryCanceled):
        dispatcher.claim(4)
    cancel[0] = False
    assert dispatcher.claim(4) == []
    assert executed == ["claim", "DISCARD PLANS", "claim"]
