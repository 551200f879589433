"""Kill drill: 2,000 tasks, 4 worker processes, `kill -9` of a random worker every 2 s for 60 s
(each respawned): every task ends, none is lost, and duplicate deliveries stay within the tasks
that were in flight on the killed workers. ASYNCQUEUE_SOAK=1 makes it five times longer."""

import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict

from asyncqueue import db
from tests.support import report, wait_for
from tests.support.tasks import assert_counts_match

SOAK = os.environ.get("ASYNCQUEUE_SOAK") == "1"
TASKS = 10_000 if SOAK else 2_000
KILL_SECONDS = 300 if SOAK else 60
WORKERS = 4


def test_kill_9_drill(own_stack, receiver):
    worker_env = {"ASYNCQUEUE_WORKER_CONCURRENCY": "8", "ASYNCQUEUE_LOG_LEVEL": "WARNING"}
    for _ in range(WORKERS):
        own_stack.start_worker(**worker_env)
    rng = random.Random(7)
    flaky = set()
    created: list[str] = []
    create_errors = []

    def create_all():
        # Spread creation over most of the kill window so that kills land mid-callback.
        gap = (KILL_SECONDS * 0.8) / TASKS
        for _ in range(TASKS):
            if rng.random() < 0.10:
                name = uuid.uuid4().hex[:12]
                flaky.add(name)
                url = receiver.url(f"/flaky/1/{name}")
            else:
                url = receiver.url("/sleep/0.05")
            try:
                created.append(
                    own_stack.create(callbackUrl=url, timeout=2, maxWaitTime=60, maxRetries=5)["id"]
                )
            except AssertionError as exc:
                create_errors.append(str(exc))
            time.sleep(gap)  # the creates' schedule

    creator = threading.Thread(target=create_all)
    creator.start()
    kills, in_flight_on_killed = 0, 0
    end = time.monotonic() + KILL_SECONDS
    with db.connect(own_stack.database_url, autocommit=True) as conn:
        while time.monotonic() < end:
            time.sleep(2)  # the kills' schedule
            live = [w for w in own_stack.workers if w.poll() is None]
            victim = rng.choice(live)
            name = f"{os.uname().nodename}:{victim.pid}"
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            # What it held when it died: nobody can take those claims until their leases run out.
            in_flight_on_killed += conn.execute(
                "SELECT count(*) AS n FROM tasks WHERE claimed_by = %s AND claim_token IS NOT NULL "
                "AND status = 'processing'",
                (name,),
            ).fetchone()["n"]
            kills += 1
            own_stack.start_worker(**worker_env)
        creator.join()
        drain_started = time.monotonic()
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) AS n FROM tasks WHERE status IN ('pending', 'delayed', 'processing')"
                ).fetchone()["n"]
                == 0
            ),
            timeout=120,
            interval=0.5,
            message="every task to finish",
        )
        drain = time.monotonic() - drain_started
        assert_counts_match(conn)  # the trigger-kept list totals survived the kills too
        statuses = Counter(
            {
                r["status"]: r["n"]
                for r in conn.execute("SELECT status, count(*) AS n FROM tasks GROUP BY status")
            }
        )

    by_task = defaultdict(list)
    for r in receiver.requests:
        by_task[r.headers.get("X-AsyncQueue-Task-Id")].append(r)

    def deliveries(task_id):  # successful calls; a flaky task's first call got a 503
        calls = by_task[task_id]
        return len(calls) - (1 if calls and calls[0].path.startswith("/flaky/") else 0)

    lost = [t for t in created if deliveries(t) < 1]
    duplicates = sum(max(0, deliveries(t) - 1) for t in created)

    report(
        f"kill drill: {len(created)} tasks, {WORKERS} workers, {kills} kill -9 in {KILL_SECONDS} s, "
        f"statuses {dict(statuses)}, lost {len(lost)}, duplicate deliveries {duplicates} "
        f"(bound: {in_flight_on_killed} in flight on killed workers), drained in {drain:.1f} s"
    )
    assert create_errors == []
    assert len(created) == TASKS
    assert statuses == Counter({"completed": TASKS})
    assert lost == []
    assert duplicates <= in_flight_on_killed
    assert kills >= KILL_SECONDS // 2 - 1
