"""The completer against a fake pool: no claims while its writes fail, errors that are not a
lost connection are not retried for ever, and a refused retry does not cost the others theirs."""

import dataclasses
import threading
import uuid

import psycopg
import pytest
from psycopg import errors

from asyncqueue.worker.completer import Completer
from asyncqueue.worker.decide import Outcome
from asyncqueue.worker.runner import Finished
from asyncqueue.worker.slots import SlotTable
from tests.support import wait_for
from tests.support.fake_pool import FakePool
from tests.support.tasks import claimed_row, finished_row


def items(call) -> list[dict]:
    """The outcomes a write carries (its one JSON parameter)."""
    return call.params["retries" if call.name == "task_schedule_retry" else "outcomes"].obj


def rows_written(call) -> list:
    """What the write returns: the ids of the retries scheduled, or the finished tasks."""
    ids = [uuid.UUID(o["id"]) for o in items(call)]
    if call.name == "task_schedule_retry":
        return [{"id": task_id} for task_id in ids]
    return [finished_row(id=task_id) for task_id in ids]


def finished(slots, kind="completed", result=None):
    (claim,) = slots.add([claimed_row()])
    slots.call_ended(claim)
    retry_in = 1.0 if kind == "retry" else None
    return Finished(claim, Outcome(kind, result=result, retry_in=retry_in))


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr("asyncqueue.worker.completer.RETRY_DELAYS", (0.05,))


def test_no_claims_while_outcomes_wait_for_the_database():
    database_up = threading.Event()
    free_while_down: list[int] = []

    def answer(call):
        if not database_up.is_set():
            free_while_down.append(slots.free())
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return rows_written(call)

    slots = SlotTable(4)
    pool = FakePool(answer)
    completer = Completer(pool, slots, lambda r: None, threading.Event())
    item = finished(slots)
    assert slots.free() == 4
    writing = threading.Thread(target=completer.write, args=([item],))
    writing.start()
    try:
        # Three failed writes: the first finds the slots free, each retry none (the
        # dispatcher would claim nothing) for as long as the database stays away.
        wait_for(lambda: len(free_while_down) >= 3, message="three failed writes")
        assert free_while_down[:3] == [4, 0, 0]
        assert slots.free() == 0
    finally:
        database_up.set()
        writing.join(10)
    assert pool.names()[-1] == "task_finish_many"
    assert slots.free() == 4 and slots.held() == 0


def test_a_statement_timeout_is_not_retried_for_ever():
    def answer(call):
        raise errors.QueryCanceled("canceling statement due to statement timeout")

    slots = SlotTable(4)
    pool = FakePool(answer)
    completer = Completer(pool, slots, lambda r: None, threading.Event())
    with pytest.raises(errors.QueryCanceled):
        completer.write([finished(slots)])
    assert len(pool.calls) == 1


def test_a_deadlock_is_retried_a_few_times():
    failures = iter([True, True, False])

    def answer(call):
        if next(failures):
            raise errors.DeadlockDetected("deadlock detected")
        return rows_written(call)

    slots = SlotTable(4)
    pool = FakePool({"task_finish_many": answer})
    Completer(pool, slots, lambda r: None, threading.Event()).write([finished(slots)])
    assert pool.names() == ["task_finish_many"] * 3 and slots.free() == 4


def test_a_retry_the_database_refuses_does_not_cost_the_others_their_results():
    written_last = {}

    def answer(call):
        if any(i["result"] and i["result"].get("bad") for i in items(call)):
            raise psycopg.DataError("unsupported Unicode escape sequence")
        written_last.update({i["id"]: i["result"] for i in items(call)})
        return rows_written(call)

    slots = SlotTable(4)
    pool = FakePool({"task_schedule_retry": answer})
    good = [finished(slots, "retry", {"statusCode": 500}) for _ in range(2)]
    bad = finished(slots, "retry", {"bad": True})
    Completer(pool, slots, lambda r: None, threading.Event()).write([good[0], bad, good[1]])
    assert written_last[str(good[0].claim.task_id)] == {"statusCode": 500}
    assert written_last[str(good[1].claim.task_id)] == {"statusCode": 500}
    assert written_last[str(bad.claim.task_id)] is None
    assert slots.held() == 0


def test_outcomes_written_one_by_one_keep_their_oncomplete_when_a_later_one_fails():
    # A refused batch is written again one outcome at a time, each committed on its own. One of
    # those failing (here a non-retried error, even for the result-less write) must not take
    # the rows already committed, and their onComplete, down with it.
    def answer(call):
        (first, *more) = items(call)
        if more:
            raise psycopg.DataError("unsupported Unicode escape sequence")
        if first["error"] is not None or (first["result"] or {}).get("bad"):
            raise errors.InternalError("could not write block")
        done = "http://127.0.0.1:9/done"
        return [dataclasses.replace(row, on_complete_url=done) for row in rows_written(call)]

    slots = SlotTable(4)
    notified = []
    good = [finished(slots, "completed", {"statusCode": 200}) for _ in range(2)]
    bad = finished(slots, "completed", {"bad": True})
    completer = Completer(
        FakePool({"task_finish_many": answer}), slots, notified.append, threading.Event()
    )
    completer.write([good[0], bad, good[1]])
    assert [r.id for r in notified] == [good[0].claim.task_id, good[1].claim.task_id]
    assert slots.held() == 0  # the failed one is left to its lease
