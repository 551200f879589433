"""The runner with a fake HTTP attempt: one explicit Deadline per call, outcomes passed on, the
slot freed, and a call cut by shutdown passing nothing on."""

import threading
from datetime import timedelta

from asyncqueue.worker.attempt import AttemptResult
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.runner import Runner
from asyncqueue.worker.slots import SlotTable
from tests.support import wait_for
from tests.support.tasks import NOW, claimed_row


def runner_with(attempt, slots, threads=2):
    done = []
    runner = Runner(
        slots,
        done.append,
        threading.Event(),
        threads=threads,
        body_cap=100,
        make_session=lambda: "session",
        attempt=attempt,
    )
    return runner, done


def test_a_call_gets_one_deadline_and_its_outcome_goes_on():
    seen = []

    def attempt(session, spec, deadline, body_cap, team=None):
        seen.append((session, spec, deadline, body_cap))
        teams.append(team)
        return AttemptResult(status_code=503, duration_ms=7)

    teams = []

    slots = SlotTable(2)
    runner, done = runner_with(attempt, slots)
    runner.start()
    (claim,) = slots.add([claimed_row()])
    runner.submit([claim])
    wait_for(lambda: done and not claim.running, timeout=10)
    runner.stop()
    ((session, spec, deadline, cap),) = seen
    assert session == "session" and cap == 100
    assert isinstance(deadline, Deadline) and 4 < deadline.remaining() <= 5  # the timeout
    assert spec.headers["X-AsyncQueue-Task-Id"] == str(claim.task_id)
    assert teams == [claim.team_id]  # whose share of the name lookups the call uses
    (finished,) = done
    assert finished.outcome.kind == "retry" and finished.outcome.error == "HTTP 503"
    assert (finished.status_code, finished.duration_ms) == (503, 7)
    assert slots.free() == 2 and slots.held() == 1  # the slot is free, the claim still held


def test_the_deadline_is_the_max_wait_time_when_that_comes_first():
    seen = []
    slots = SlotTable(1)
    runner, done = runner_with(
        lambda s, spec, deadline, cap, team=None: (
            seen.append(deadline) or AttemptResult(timed_out=True)
        ),
        slots,
    )
    runner.start()
    (claim,) = slots.add([claimed_row(deadline=NOW + timedelta(seconds=2))])
    runner.submit([claim])
    wait_for(lambda: done, timeout=10)
    runner.stop()
    assert seen[0].remaining() <= 2
    assert done[0].outcome.kind == "timeout"


def test_a_call_cut_by_shutdown_passes_nothing_on():
    started, cut = threading.Event(), threading.Event()

    def attempt(session, spec, deadline, body_cap, team=None):
        started.set()
        cut.wait(10)
        return AttemptResult(timed_out=True)  # what a cut call returns

    slots = SlotTable(1)
    runner, done = runner_with(attempt, slots)
    runner.start()
    (claim,) = slots.add([claimed_row()])
    runner.submit([claim])
    assert started.wait(10)
    claim.cut = True
    cut.set()
    wait_for(lambda: not claim.running, timeout=10)
    runner.stop()
    assert done == [] and slots.claims() == [claim] and not claim.outcome_queued


def test_a_call_that_starts_late_still_ends_by_the_claims_own_limit():
    """The lease was set at the claim: timeout + grace. A call that started 3 s after its claim
    (a busy thread, a slow machine) must end 5 s after the claim, not 5 s after it started, or
    the lease could run out while it is still open."""
    seen = []

    def attempt(session, spec, deadline, body_cap, team=None):
        seen.append(deadline)
        return AttemptResult(status_code=200, duration_ms=1)

    slots = SlotTable(1)
    runner, done = runner_with(attempt, slots)
    runner.start()
    (claim,) = slots.add([claimed_row()])  # timeout 5 s
    claim.claimed_monotonic -= 3.0  # claimed 3 s ago
    runner.submit([claim])
    wait_for(lambda: done, timeout=10)
    runner.stop()
    (deadline,) = seen
    assert 1.5 < deadline.remaining() <= 2.0


def test_at_low_load_one_warm_thread_makes_every_call():
    # The thread that became idle last takes the next claim: its session's keep-alive
    # connection is the one still warm (a queue would rotate through every thread's).
    names = []

    def attempt(session, spec, deadline, body_cap, team=None):
        names.append(threading.current_thread().name)
        return AttemptResult(status_code=200, duration_ms=1)

    slots = SlotTable(4)
    runner, _ = runner_with(attempt, slots, threads=4)
    runner.start()
    wait_for(lambda: len(runner._idle) == 4, message="every thread idle")
    for _ in range(6):
        (claim,) = slots.add([claimed_row()])
        runner.submit([claim])
        wait_for(lambda c=claim: not c.running, timeout=10)
        slots.release([claim])
    runner.stop()
    assert len(names) == 6 and len(set(names)) == 1


def test_busy_threads_take_the_claims_waiting_then_stop():
    # More claims than threads: the rest wait, each is run once, and stop() ends every thread
    # after the claims already submitted.
    gate = threading.Event()
    ran = []

    def attempt(session, spec, deadline, body_cap, team=None):
        gate.wait(10)
        ran.append(spec.headers["X-AsyncQueue-Task-Id"])
        return AttemptResult(status_code=200, duration_ms=1)

    slots = SlotTable(5)
    runner, _ = runner_with(attempt, slots)
    runner.start()
    claims = slots.add([claimed_row() for _ in range(5)])
    runner.submit(claims)
    runner.stop()
    gate.set()
    wait_for(lambda: len(ran) == 5, timeout=10)
    wait_for(lambda: not any(t.is_alive() for t in runner._threads), timeout=10)
    assert sorted(ran) == sorted(str(c.task_id) for c in claims)
