"""Stale worker drill: a worker paused (SIGSTOP) past its lease while another finishes its tasks;
on SIGCONT its late results write nothing, and each task gets exactly one onComplete."""

import json
import os
import signal
import time
import uuid

from asyncqueue import db
from tests.support import report, wait_for

TASKS = 5


def test_stale_worker_writes_nothing(own_stack, receiver):
    run = uuid.uuid4().hex[:8]
    paused = own_stack.start_worker(ASYNCQUEUE_LEASE_GRACE="0.5")
    hook = f"/ok/hook-{run}"
    tasks = [
        own_stack.create(
            callbackUrl=receiver.url(f"/sleep/0.8/{run}/{i}"),
            timeout=1.5,
            onCompleteUrl=receiver.url(hook),
        )
        for i in range(TASKS)
    ]
    wait_for(
        lambda: len(receiver.calls(f"/sleep/0.8/{run}/")) == TASKS,
        timeout=10,
        message="the first worker's calls",
    )
    os.killpg(paused.pid, signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        own_stack.start_worker(ASYNCQUEUE_LEASE_GRACE="0.5")
        done = [own_stack.wait_done(t["id"], timeout=20) for t in tasks]
        assert all(d["status"] == "completed" for d in done)
        wait_for(lambda: len(receiver.calls(hook)) == TASKS, timeout=10)
    finally:
        os.killpg(paused.pid, signal.SIGCONT)
    paused_for = time.monotonic() - paused_at

    def fenced() -> int:
        logs = "".join(p.read_text() for p in own_stack.log_dir.glob("worker-*.log"))
        return logs.count("stale claim")

    # The stale worker wakes, finishes its calls and tries to record each, refused every time.
    wait_for(lambda: fenced() >= TASKS, timeout=15, message="the stale worker's late writes")
    after = [own_stack.get(t["id"]) for t in tasks]
    assert after == done  # nothing the stale worker did changed any task
    events = [json.loads(c.body)["task"]["id"] for c in receiver.calls(hook)]
    assert sorted(events) == sorted(t["id"] for t in tasks)  # exactly one each
    with db.connect(own_stack.database_url) as conn:
        attempts = [r["attempts"] for r in conn.execute("SELECT attempts FROM tasks")]
    assert paused.poll() is None  # it carried on after SIGCONT
    assert fenced() == TASKS  # it did try to record every task, and was refused each time
    report(
        f"stale worker drill: {TASKS} tasks, first worker paused {paused_for:.1f} s (leases 2 s), "
        f"attempts per task {sorted(attempts)}, late writes tried {fenced()}, applied 0, "
        f"onComplete per task {len(events) / TASKS:g}"
    )
