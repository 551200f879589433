"""The documented task lifecycle, end to end through gunicorn, workers and a real receiver."""

import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from asyncqueue import db
from tests.support import wait_for


def unique(path: str) -> str:
    return f"{path}/{uuid.uuid4().hex[:8]}"


def test_success_delivers_method_headers_body(stack, receiver):
    path = unique("/ok")
    task = stack.create(
        callbackUrl=receiver.url(path),
        headers={"X-Custom-Header": "value"},
        body='{"orderId": 12345}',
    )
    done = stack.wait_done(task["id"])
    assert done["status"] == "completed"
    assert done["result"]["statusCode"] == 200
    assert done["result"]["body"] == '{"ok": true}'
    assert done["result"]["headers"]["content-type"] == "application/json"
    assert isinstance(done["result"]["duration"], int)
    assert done["retryCount"] == 0 and done["startedAt"] and done["completedAt"]
    (call,) = receiver.calls(path)
    assert call.method == "POST" and call.body == b'{"orderId": 12345}'
    assert call.headers["X-Custom-Header"] == "value"
    assert call.headers["X-AsyncQueue-Task-Id"] == task["id"]
    assert call.headers["X-AsyncQueue-Retry-Count"] == "0"


def test_get_sends_no_body_and_put_delete_work(stack, receiver):
    paths = {m: unique("/ok") for m in ("GET", "PUT", "DELETE")}
    tasks = {
        m: stack.create(callbackUrl=receiver.url(p), method=m, body="payload")
        for m, p in paths.items()
    }
    for method, task in tasks.items():
        assert stack.wait_done(task["id"])["status"] == "completed"
        (call,) = receiver.calls(paths[method])
        assert call.method == method
        assert call.body == (b"" if method == "GET" else b"payload")


def test_4xx_completes_without_retry(stack, receiver):
    path = unique("/status/404")
    done = stack.wait_done(stack.create(callbackUrl=receiver.url(path))["id"])
    assert done["status"] == "completed" and done["result"]["statusCode"] == 404
    assert done["retryCount"] == 0 and len(receiver.calls(path)) == 1


def test_5xx_is_retried_with_exponential_gaps_then_fails(stack, receiver):
    path = unique("/status/503")
    task = stack.create(callbackUrl=receiver.url(path), maxRetries=3)
    done = stack.wait_done(task["id"], timeout=25)
    assert done["status"] == "failed"
    assert done["retryCount"] == 3
    assert done["error"] == "HTTP 503"
    assert done["result"]["statusCode"] == 503
    times = [c.at for c in receiver.calls(path)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 4
    for gap, expected in zip(gaps, [1, 2, 4], strict=True):
        assert expected <= gap < expected + 0.5, gaps
    assert [c.headers["X-AsyncQueue-Retry-Count"] for c in receiver.calls(path)] == [
        "0",
        "1",
        "2",
        "3",
    ]


def test_linear_backoff(stack, receiver):
    path = unique("/status/500")
    task = stack.create(callbackUrl=receiver.url(path), maxRetries=2, retryBackoff="linear")
    assert stack.wait_done(task["id"])["status"] == "failed"
    times = [c.at for c in receiver.calls(path)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, expected in zip(gaps, [1, 2], strict=True):
        assert expected <= gap < expected + 0.5, gaps


def test_nul_bytes_in_a_response_are_stored_replaced_and_do_not_hold_up_others(stack, receiver):
    # PostgreSQL's jsonb cannot hold U+0000: a response carrying NUL must still be recorded (as
    # U+FFFD), and tasks finishing beside it must not be held up or delivered twice.
    odd = unique("/nul")
    plain = [unique("/ok") for _ in range(10)]
    tasks = [stack.create(callbackUrl=receiver.url(odd))]
    tasks += [stack.create(callbackUrl=receiver.url(p)) for p in plain]
    done = [stack.wait_done(t["id"]) for t in tasks]
    assert [d["status"] for d in done] == ["completed"] * 11
    assert done[0]["result"]["body"] == '{"a": "x\ufffdy"}\ufffd'
    assert done[0]["result"]["headers"]["x-odd"] == "p\ufffdq"
    assert [len(receiver.calls(p)) for p in [odd, *plain]] == [1] * 11


def test_flaky_receiver_succeeds_on_retry(stack, receiver):
    name = uuid.uuid4().hex[:8]
    task = stack.create(callbackUrl=receiver.url(f"/flaky/1/{name}"))
    done = stack.wait_done(task["id"])
    assert done["status"] == "completed" and done["retryCount"] == 1
    assert done["result"]["statusCode"] == 200
    assert len(receiver.calls(f"/flaky/1/{name}")) == 2


def test_connection_refused(stack):
    from tests.support.stack import free_port

    task = stack.create(callbackUrl=f"http://127.0.0.1:{free_port()}/x", maxRetries=1)
    done = stack.wait_done(task["id"])
    assert done["status"] == "failed"
    assert done["error"] == "fetch failed: ECONNREFUSED"
    assert done["retryCount"] == 1 and "result" not in done


def test_attempt_timeout_is_retried(stack, receiver):
    path = unique("/sleep/3")
    task = stack.create(callbackUrl=receiver.url(path), timeout=0.5, maxRetries=1)
    done = stack.wait_done(task["id"])
    assert done["status"] == "failed"
    assert done["error"] == "attempt timed out after 0.5 s"
    assert len(receiver.calls(path)) == 2


def test_max_wait_time_ends_in_timeout(stack, receiver):
    path = unique("/sleep/10")
    started = time.monotonic()
    task = stack.create(callbackUrl=receiver.url(path), maxWaitTime=1.5, timeout=30)
    done = stack.wait_done(task["id"])
    assert done["status"] == "timeout"
    assert done["error"] == "maxWaitTime of 1.5 s exceeded"
    assert time.monotonic() - started < 5


def test_retry_past_max_wait_time_ends_in_timeout(stack, receiver):
    path = unique("/status/503")
    task = stack.create(callbackUrl=receiver.url(path), maxWaitTime=2.5, maxRetries=5)
    done = stack.wait_done(task["id"])
    assert done["status"] == "timeout"
    assert done["error"] == "maxWaitTime of 2.5 s exceeded (last attempt: HTTP 503)"
    assert len(receiver.calls(path)) == 2  # at 0 s and 1 s; the next would start at 3 s


def test_delayed_task_waits_then_runs(stack, receiver):
    path = unique("/ok")
    when = datetime.now(UTC) + timedelta(seconds=2)
    task = stack.create(callbackUrl=receiver.url(path), delayUntil=when.isoformat())
    assert task["status"] == "delayed"
    assert stack.get(task["id"])["status"] == "delayed"
    done = stack.wait_done(task["id"])
    assert done["status"] == "completed"
    (call,) = receiver.calls(path)
    assert call.at >= when.timestamp()  # not called before its time


def test_cancelled_before_run_is_never_called(stack, receiver):
    path, twin_path = unique("/ok"), unique("/ok")
    when = datetime.now(UTC) + timedelta(seconds=1)
    task = stack.create(callbackUrl=receiver.url(path), delayUntil=when.isoformat())
    twin = stack.create(callbackUrl=receiver.url(twin_path), delayUntil=when.isoformat())
    response = stack.http.post(stack.url(f"/v1/tasks/{task['id']}/cancel"))
    assert response.json()["task"]["status"] == "cancelled"
    # Positive control: the un-cancelled twin, due at the same time, is called.
    assert stack.wait_done(twin["id"])["status"] == "completed"
    assert len(receiver.calls(twin_path)) == 1
    # The cancelled one was never claimed, and nothing can claim it now: it is due no more.
    with db.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT status, attempts, next_run_at FROM tasks WHERE id = %s", (task["id"],)
        ).fetchone()
    assert row == {"status": "cancelled", "attempts": 0, "next_run_at": None}
    assert receiver.calls(path) == []


@pytest.mark.parametrize("code", [301, 302, 307])
def test_redirect_is_followed(stack, receiver, code):
    path = unique(f"/redirect/{code}")
    done = stack.wait_done(stack.create(callbackUrl=receiver.url(path))["id"])
    assert done["status"] == "completed" and done["result"]["statusCode"] == 200
    assert len(receiver.calls(path)) == 1


def test_large_response_body_is_truncated(stack, receiver):
    path = f"/big/{200_000}"
    done = stack.wait_done(stack.create(callbackUrl=receiver.url(path))["id"])
    assert done["status"] == "completed"
    assert len(done["result"]["body"]) == 65536
    assert done["result"]["bodyTruncated"] is True


def test_on_complete_on_success_and_failure(stack, receiver):
    hook_ok, hook_fail = unique("/ok/hook"), unique("/ok/hook")
    ok = stack.create(callbackUrl=receiver.url(unique("/ok")), onCompleteUrl=receiver.url(hook_ok))
    bad = stack.create(
        callbackUrl=receiver.url(unique("/status/500")),
        maxRetries=0,
        onCompleteUrl=receiver.url(hook_fail),
    )
    wait_for(lambda: receiver.calls(hook_ok) and receiver.calls(hook_fail), timeout=10)
    (event,) = [json.loads(c.body) for c in receiver.calls(hook_ok)]
    assert event["event"] == "task.completed"
    assert event["task"]["id"] == ok["id"] and event["task"]["status"] == "completed"
    assert event["task"]["result"]["statusCode"] == 200 and event["task"]["error"] is None
    assert set(event["task"]) == {
        "id",
        "status",
        "result",
        "error",
        "retryCount",
        "createdAt",
        "completedAt",
    }
    (failed,) = [json.loads(c.body) for c in receiver.calls(hook_fail)]
    assert failed["task"]["id"] == bad["id"] and failed["task"]["status"] == "failed"
    assert failed["task"]["error"] == "HTTP 500"


def test_failing_on_complete_leaves_the_task_alone(stack, receiver):
    hook = unique("/status/500")
    task = stack.create(callbackUrl=receiver.url(unique("/ok")), onCompleteUrl=receiver.url(hook))
    wait_for(lambda: receiver.calls(hook), timeout=10)
    # What is tested is that nothing more happens: watched past the first two backoffs a retry
    # would use (1 s, then 2 s).
    time.sleep(5)
    done = stack.get(task["id"])
    assert done["status"] == "completed" and done["retryCount"] == 0
    assert len(receiver.calls(hook)) == 1  # not retried


def test_kill_9_mid_callback_then_the_task_still_completes(own_stack, receiver):
    name = uuid.uuid4().hex[:8]
    path = f"/sleep/2/{name}"
    first = own_stack.start_worker()
    task = own_stack.create(callbackUrl=receiver.url(path), timeout=5, maxWaitTime=30)
    wait_for(lambda: receiver.calls(path), timeout=10, message="the first call")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    own_stack.start_worker()
    done = own_stack.wait_done(task["id"], timeout=20)  # lease: 5 s timeout + 1 s grace
    assert done["status"] == "completed"
    assert len(receiver.calls(path)) == 2  # at-least-once: the killed call, then the retry
    assert done["retryCount"] == 0


def test_sigterm_drains_in_flight_callbacks(own_stack, receiver):
    path = unique("/sleep/1.5")
    worker = own_stack.start_worker()
    task = own_stack.create(callbackUrl=receiver.url(path))
    wait_for(lambda: receiver.calls(path), timeout=10)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert own_stack.get(task["id"])["status"] == "completed"


def test_sigterm_hands_back_what_outlives_the_grace(own_stack, receiver):
    path = unique("/sleep/4")
    worker = own_stack.start_worker(ASYNCQUEUE_SHUTDOWN_GRACE="0.5")
    task = own_stack.create(callbackUrl=receiver.url(path), timeout=10)
    wait_for(lambda: receiver.calls(path), timeout=10)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    handed_back = own_stack.get(task["id"])
    assert handed_back["status"] == "processing"  # not failed
    assert handed_back["retryCount"] == 0 and "error" not in handed_back
    with db.connect(own_stack.database_url) as conn:
        row = conn.execute(
            "SELECT claim_token, next_run_at <= now() AS due FROM tasks WHERE id = %s",
            (task["id"],),
        ).fetchone()
    # Handed back: due at once with no claim, not left to its lease (10 s + 1 s grace).
    assert row == {"claim_token": None, "due": True}
    own_stack.start_worker()
    assert own_stack.wait_done(task["id"], timeout=20)["status"] == "completed"


def test_name_resolving_to_a_blocked_address_fails_without_retries(own_stack, receiver):
    own_stack.start_worker(ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="false")
    path = unique("/ok")
    task = own_stack.create(callbackUrl=f"http://localhost:{receiver.port}{path}", maxRetries=3)
    done = own_stack.wait_done(task["id"])
    assert done["status"] == "failed"
    assert done["error"].startswith("blocked destination: localhost: ")
    assert done["retryCount"] == 0
    assert receiver.calls(path) == []


def test_logs_never_hold_keys_or_bodies(stack, receiver):
    secret_body = f"body-{uuid.uuid4().hex}"
    secret_header = f"header-{uuid.uuid4().hex}"
    task = stack.create(
        callbackUrl=receiver.url(unique("/status/500")),
        body=secret_body,
        headers={"Authorization": secret_header},
        maxRetries=1,
    )
    stack.wait_done(task["id"])
    logs = "".join(p.read_text() for p in stack.log_dir.glob("*.log"))
    assert task["id"] in logs  # the worker did log this task's attempts
    for secret in (stack.key, secret_body, secret_header):
        assert secret not in logs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_worker_does_not_spin_on_a_due_row_locked_elsewhere(own_stack, receiver):
    # Another session holds a due task's row: the claim skips it, and the idle worker must not
    # look again and again (a spin costs a whole core).
    path = unique("/ok")
    worker = own_stack.start_worker()
    when = datetime.now(UTC) + timedelta(seconds=2)
    task = own_stack.create(callbackUrl=receiver.url(path), delayUntil=when.isoformat())
    with db.connect(own_stack.database_url) as holder:
        holder.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (task["id"],))
        # Measured over 3 s once the row is due and the worker's looks have backed off (to one
        # a second within about 1.3 s): the CPU used over that span is what is tested.
        time.sleep(max(0.0, when.timestamp() - time.time()) + 1.5)
        before = cpu_seconds(worker.pid)
        time.sleep(3)
        used = cpu_seconds(worker.pid) - before
        assert own_stack.get(task["id"])["status"] == "delayed"
        # Meanwhile a new task is picked up as usual: the held row holds nothing else up.
        other = own_stack.create(callbackUrl=receiver.url(unique("/ok")))
        assert own_stack.wait_done(other["id"], timeout=10)["status"] == "completed"
        holder.rollback()  # let go of the row
    assert used < 0.05 * 3, f"{used:.2f} CPU-s in 3 s"
    # Positive control: the worker was idle, not stuck; it takes the row once it is free.
    assert own_stack.wait_done(task["id"], timeout=10)["status"] == "completed"
    assert len(receiver.calls(path)) == 1


def test_a_finished_task_logs_one_line_at_info_saying_what_happened(stack, receiver):
    # At the default level a task writes one line, carrying what its claim, attempt and
    # outcome would say: a line per step costs throughput.
    task = stack.create(callbackUrl=receiver.url(unique("/ok")))
    stack.wait_done(task["id"])
    line = wait_for(
        lambda: [
            json.loads(line)
            for p in stack.log_dir.glob("worker-*.log")
            for line in p.read_text().splitlines()
            if task["id"] in line
        ],
        timeout=10,
    )
    (entry,) = line
    assert entry["level"] == "info" and entry["message"] == "task finished"
    assert entry["status"] == "completed" and entry["status_code"] == 200
    assert entry["attempt"] == 1 and entry["retry_count"] == 0
    assert isinstance(entry["duration_ms"], int)


def test_one_teams_slow_on_complete_receivers_do_not_delay_another_teams(own_stack, receiver):
    # More slow onComplete receivers than the notifier has threads: without a share per team
    # they would hold every thread, and the other team's event would wait for one to end.
    import requests

    from asyncqueue.worker.notifier import THREADS
    from tests.support import make_team

    share = THREADS // 4  # the most one team may have open (Notifier.share)
    run = uuid.uuid4().hex[:8]
    own_stack.start_worker()
    slow_hook = f"/sleep/5/slow-{run}"  # each delivery held open 5 s
    for _ in range(THREADS + 4):
        own_stack.create(callbackUrl=receiver.url("/ok"), onCompleteUrl=receiver.url(slow_hook))
    wait_for(lambda: len(receiver.calls(slow_hook)) >= share, timeout=15, message="slow hooks")
    first_slow = min(c.at for c in receiver.calls(slow_hook))
    with db.connect(own_stack.database_url, autocommit=True) as conn:
        _, other_key = make_team(conn, "other", "pro")
    other = requests.Session()
    other.trust_env = False
    quick_hook = f"/ok/quick-{run}"
    response = other.post(
        own_stack.url("/v1/tasks"),
        json={"callbackUrl": receiver.url("/ok"), "onCompleteUrl": receiver.url(quick_hook)},
        headers={"X-API-Key": other_key},
        timeout=10,
    )
    assert response.status_code == 201
    (quick,) = wait_for(lambda: receiver.calls(quick_hook), timeout=30)
    # Delivered while the slow team's first deliveries were still open, and by then the slow
    # team had started no more than its share.
    assert quick.at - first_slow < 4.5, quick.at - first_slow
    slow_before_quick = [c for c in receiver.calls(slow_hook) if c.at < quick.at]
    assert len(slow_before_quick) <= share, len(slow_before_quick)
