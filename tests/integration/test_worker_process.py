"""The worker process in-process, against a real PostgreSQL and a receiver on 127.0.0.1: its
supervision (a failed part means exit 1, never alive and idle) and its ordered shutdown."""

import threading
import time

import pytest

from asyncqueue.config import Settings
from asyncqueue.worker import execute
from asyncqueue.worker.completer import Completer
from asyncqueue.worker.process import WorkerProcess
from asyncqueue.worker.runner import Runner
from tests.support import make_team, wait_for


def add_task(conn, team_id, url, **overrides) -> str:
    values = {"timeout": 30, "max_retries": 3, "max_wait_time": 60} | overrides
    return conn.execute(
        "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
        "max_retries, retry_backoff, next_run_at) VALUES (%(team)s, 'pending', %(url)s, 'POST', "
        "%(max_wait_time)s, %(timeout)s, %(max_retries)s, 'exponential', now()) RETURNING id",
        {"team": team_id, "url": url, **values},
    ).fetchone()["id"]


def status(conn, task_id) -> dict:
    return conn.execute(
        "SELECT status, retry_count, error, claim_token, next_run_at <= now() AS due "
        "FROM tasks WHERE id = %s",
        (task_id,),
    ).fetchone()


class Running:
    """A WorkerProcess run on a thread (no signal handlers); stop() returns its exit code."""

    def __init__(self, database_url, **settings):
        self.process = WorkerProcess(
            Settings(database_url=database_url, allow_private_networks=True, **settings)
        )
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.code = self.process.run(install_signals=False)

    def __enter__(self):
        self.thread.start()
        return self

    def stop(self, timeout=30):
        self.process.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        return self.code

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop()


@pytest.fixture
def team_id(conn):
    return make_team(conn)[0]["id"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_completer_makes_the_process_exit_non_zero(database_url, monkeypatch):
    def broken(self):
        raise RuntimeError("a bug in the completer")

    monkeypatch.setattr(Completer, "run", broken)
    with Running(database_url) as worker:
        worker.thread.join(20)
        assert not worker.thread.is_alive(), "alive with a dead completer"
        assert worker.code == 1


def test_an_unexpected_write_failure_is_survived_and_leaks_no_slot(
    conn, team_id, database_url, receiver, monkeypatch
):
    real_write = Completer.write
    failed = []

    def write_failing_once(self, batch):
        if not failed:
            failed.append(len(batch))
            raise RuntimeError("a bug that happens once")
        return real_write(self, batch)

    monkeypatch.setattr(Completer, "write", write_failing_once)
    first = add_task(conn, team_id, receiver.url("/ok/first"), timeout=1)
    with Running(database_url, worker_concurrency=1, lease_grace=0.5) as worker:
        wait_for(lambda: failed, timeout=10, message="the failing write")
        second = add_task(conn, team_id, receiver.url("/ok/second"))
        # One slot only: the second task runs only if the failed batch gave its slot back.
        wait_for(lambda: status(conn, second)["status"] == "completed", timeout=15)
        # The first comes back when its lease runs out, and completes.
        wait_for(lambda: status(conn, first)["status"] == "completed", timeout=15)
        assert worker.process.slots.held() == 0
        assert worker.stop() == 0


def test_a_runner_bug_frees_its_slot(conn, team_id, database_url, receiver, monkeypatch):
    real = Runner._attempt
    broke = []

    def attempt_failing_once(self, session, claim):
        if not broke:
            broke.append(claim.task_id)
            raise RuntimeError("a bug in the runner")
        return real(self, session, claim)

    monkeypatch.setattr(Runner, "_attempt", attempt_failing_once)
    add_task(conn, team_id, receiver.url("/ok/a"))
    with Running(database_url, worker_concurrency=1) as worker:
        wait_for(lambda: broke, timeout=10, message="the failing run")
        other = add_task(conn, team_id, receiver.url("/ok/b"))
        wait_for(lambda: status(conn, other)["status"] == "completed", timeout=15)
        assert worker.stop() == 0


def test_shutdown_cuts_open_calls_then_hands_their_tasks_back(
    conn, team_id, database_url, receiver, monkeypatch
):
    task = add_task(conn, team_id, receiver.url("/sleep/6/cut"), timeout=20)
    seen_at_hand_back = []
    with Running(database_url, shutdown_grace=0.3) as worker:
        process = worker.process
        real_hand_back = process.hand_back

        def hand_back():
            seen_at_hand_back.append(process.slots.running())
            real_hand_back()

        monkeypatch.setattr(process, "hand_back", hand_back)
        wait_for(lambda: receiver.calls("/sleep/6/cut"), timeout=10)
        started = time.monotonic()
        assert worker.stop() == 0
        stopped_in = time.monotonic() - started
    assert seen_at_hand_back == [[]]  # no call was open when tasks were handed back
    assert stopped_in < 5  # the 6 s call was cut, not waited out
    row = status(conn, task)
    assert row == {
        "status": "processing",
        "retry_count": 0,
        "error": None,
        "claim_token": None,
        "due": True,
    }


def test_a_call_that_cannot_be_cut_keeps_its_task_until_the_lease(
    conn, team_id, database_url, receiver, monkeypatch
):
    # A call still open in this process must not be handed back: another worker could start
    # the same task while this one is still calling.
    monkeypatch.setattr(execute, "cut_all_attempts", lambda: 0)
    task = add_task(conn, team_id, receiver.url("/sleep/6/uncut"), timeout=20)
    with Running(database_url, shutdown_grace=0.3) as worker:
        wait_for(lambda: receiver.calls("/sleep/6/uncut"), timeout=10)
        assert worker.stop() == 0
    row = status(conn, task)
    assert row["status"] == "processing" and row["claim_token"] is not None
    assert row["due"] is False  # held until its lease runs out


def test_shutdown_writes_a_pending_retry_before_handing_anything_back(
    conn, team_id, database_url, receiver, monkeypatch
):
    real_write = Completer.write
    writing = threading.Event()
    worker = Running(database_url, shutdown_grace=0.3)

    def write_after_the_stop(self, batch):
        # The retry's write is under way when the stop comes, and ends only after it.
        writing.set()
        worker.process.stop_requested.wait(10)
        return real_write(self, batch)

    monkeypatch.setattr(Completer, "write", write_after_the_stop)
    task = add_task(conn, team_id, receiver.url("/status/503/retry"))
    with worker:
        assert writing.wait(10), "no write began"
        assert worker.stop() == 0
    row = status(conn, task)
    assert row["retry_count"] == 1 and row["error"] == "HTTP 503"
    assert row["claim_token"] is None and row["status"] == "processing"


class Recorder:
    """A maintenance service as ops will add them: start(), stop(), and optionally alive()."""

    def __init__(self, name, events, healthy=True):
        self.name, self.events, self.healthy = name, events, healthy

    def start(self):
        self.events.append(("start", self.name))

    def stop(self):
        self.events.append(("stop", self.name))

    def alive(self):
        return self.healthy


def test_services_given_up_front_run_and_a_failed_one_means_exit_1(database_url):
    events = []
    process = WorkerProcess(
        Settings(database_url=database_url, allow_private_networks=True),
        services=[Recorder("heartbeat", events), Recorder("pruner", events, healthy=False)],
    )
    assert process.run(install_signals=False) == 1  # the pruner reports itself dead
    assert events == [
        ("start", "heartbeat"),
        ("start", "pruner"),
        ("stop", "pruner"),
        ("stop", "heartbeat"),
    ]


def test_worker_pool_connections_have_network_timeouts(database_url):
    """A database that vanishes without a word is noticed, not waited on for hours."""
    process = WorkerProcess(Settings(database_url=database_url, allow_private_networks=True))
    try:
        with process.pool.connection() as conn:
            params = conn.info.get_parameters()
    finally:
        process.pool.close(timeout=0.5)
    assert params["keepalives"] == "1" and params["keepalives_idle"] == "10"
    assert params["keepalives_interval"] == "5" and params["keepalives_count"] == "3"
    assert params["tcp_user_timeout"] == "30000", params
