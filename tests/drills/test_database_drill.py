"""Database drill: every app connection terminated every 3 s for 30 s, then PostgreSQL stopped for
10 s and started again. The API answers JSON 503 during the outage and recovers within 10 s;
workers resume by themselves; no task is lost; no process exits.

The drill runs its own embedded PostgreSQL so that it can stop it. With TEST_DATABASE_URL (a
server the tests do not own) only the termination part runs."""

import json
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import requests

from asyncqueue import db
from tests.support import report, wait_for
from tests.support.stack import Stack

TERMINATE_SECONDS = 30
OUTAGE_SECONDS = 10


@pytest.fixture
def private_server():
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    from asyncqueue.dev import embedded_pg

    server = embedded_pg.ensure_running(
        Path(tempfile.mkdtemp(prefix="asyncqueue-drill-")) / "pgdata", fast_unsafe=True
    )
    yield server
    server.destroy()


def test_database_drill(private_server, pg_admin_url, template_db, receiver, tmp_path, request):
    if private_server is None:
        from tests.support.databases import clone_database

        _, url = clone_database(pg_admin_url, template_db)
        admin_url = pg_admin_url
    else:
        admin_url = private_server.url
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE drill")
        url = private_server.url_for("drill")
        db.migrate(url)
    # INFO: each finished task's line, for explain_missing.
    stack = Stack(url, tmp_path, ASYNCQUEUE_LOG_LEVEL="INFO")
    request.addfinalizer(stack.stop)  # however the test ends: no processes left behind
    stack.start_web()
    for _ in range(2):
        stack.start_worker()

    hook = "/ok/drill-hook"
    responses: list[tuple[float, int, object]] = []  # (time, status, json body)
    created: list[str] = []
    stop_creating = threading.Event()

    def create_steadily():
        http = requests.Session()
        http.trust_env = False
        http.headers["X-API-Key"] = stack.key
        while not stop_creating.is_set():
            try:
                r = http.post(
                    stack.url("/v1/tasks"),
                    json={"callbackUrl": receiver.url("/ok"), "onCompleteUrl": receiver.url(hook)},
                    timeout=15,
                )
                body = r.json()
                responses.append((time.monotonic(), r.status_code, body))
                if r.status_code == 201:
                    created.append(body["task"]["id"])
            except (requests.RequestException, ValueError) as exc:
                responses.append((time.monotonic(), -1, repr(exc)))
            stop_creating.wait(0.05)  # the client's steady rate

    creator = threading.Thread(target=create_steadily)
    creator.start()
    terminations = 0
    end = time.monotonic() + TERMINATE_SECONDS
    while time.monotonic() < end:
        time.sleep(3)  # the drill's schedule
        with psycopg.connect(admin_url, autocommit=True) as admin:
            terminations += admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (psycopg.conninfo.conninfo_to_dict(url)["dbname"],),
            ).fetchone()[0]

    last_fault = time.monotonic()
    recovery = None
    outage_statuses: set[int] = set()
    if private_server is not None:
        private_server.stop("fast")
        down_at = time.monotonic()
        time.sleep(OUTAGE_SECONDS)  # the outage itself
        private_server.start()
        up_at = last_fault = time.monotonic()
        outage_statuses = {s for t, s, _ in responses if down_at + 3 < t < up_at}
        first_ok = wait_for(
            lambda: next((t for t, s, _ in responses if t > up_at and s == 201), None),
            timeout=30,
            interval=0.1,
            message="the API to recover",
        )
        recovery = first_ok - up_at
    # The load goes on until creates have been served again for a while after the last fault.
    wait_for(
        lambda: sum(1 for t, s, _ in list(responses) if t > last_fault and s == 201) >= 40,
        timeout=30,
        interval=0.1,
        message="creates to be served again after the faults",
    )
    stop_creating.set()
    creator.join()

    with db.connect(url, autocommit=True) as conn:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) AS n FROM tasks WHERE status <> 'completed'"
                ).fetchone()["n"]
                == 0
            ),
            timeout=60,
            interval=0.5,
            message="every task to complete",
        )
        stored = conn.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"]
        # onComplete is sent after the outcome is written: give the last ones time to arrive.
        try:
            wait_for(
                lambda: set(created) <= {e["task"]["id"] for e in receiver.json_bodies(hook)},
                timeout=20,
                interval=0.2,
                message="an onComplete for every task",
            )
        except AssertionError as timed_out:
            notified = {e["task"]["id"] for e in receiver.json_bodies(hook)}
            missing = [t for t in created if t not in notified]
            explanation = explain_missing(conn, missing, len(created), receiver, hook, tmp_path)
            raise AssertionError(f"{timed_out}\n{explanation}") from None
    calls = Counter(
        r.headers.get("X-AsyncQueue-Task-Id")
        for r in receiver.requests
        if not r.path.startswith(hook)
    )
    notices = Counter(e["task"]["id"] for e in receiver.json_bodies(hook))
    lost = [t for t in created if calls[t] < 1]
    duplicates = sum(calls[t] - 1 for t in created if calls[t] > 1)
    notices_wrong = {t: notices[t] for t in created if notices[t] != 1}
    statuses = sorted({s for _, s, _ in responses})
    errors = [b for _, s, b in responses if s == 503]
    alive = [p.poll() is None for p in [stack.web, *stack.workers]]
    recovered = f"{recovery:.1f} s" if recovery is not None else "n/a"
    report(
        f"database drill: {len(created)} tasks created, {terminations} connections terminated "
        f"over {TERMINATE_SECONDS} s, outage {OUTAGE_SECONDS if recovery is not None else 0} s, "
        f"API statuses seen {statuses}, recovery after restart "
        f"{recovered}, lost {len(lost)}, duplicate calls {duplicates}, "
        f"onComplete per task {sum(notices.values()) / max(1, len(created)):g} "
        f"({len(notices_wrong)} tasks not exactly once), processes alive {sum(alive)}/{len(alive)}"
    )
    stack.stop()
    assert set(statuses) <= {201, 503}
    assert all(
        b == {"error": "Service temporarily unavailable: database unreachable"} for b in errors
    )
    assert terminations > 0
    if recovery is not None:
        assert outage_statuses == {503}
        assert recovery <= 10
    assert stored == len(created)
    assert lost == []
    assert duplicates == 0  # no lease ran out (31 s): nothing had to be called again
    assert notices_wrong == {}
    assert all(alive)


def explain_missing(conn, missing, created: int, receiver, hook, log_dir: Path) -> str:
    """What is known of the tasks created without an onComplete when the wait ended: their rows
    (which worker claimed them), the calls made for them, onCompletes that came later, and the
    log lines that name them, then every warning or error that is not routine."""
    lines = [f"{len(missing)} of {created} tasks had no onComplete"]
    shown = missing[:10]
    for task_id in shown:
        row = conn.execute(
            "SELECT status, attempts, retry_count, claimed_by, created_at, completed_at,"
            " next_run_at, claim_token, outcome_claim_token FROM tasks WHERE id = %s",
            (task_id,),
        ).fetchone()
        calls = [
            r.at for r in receiver.requests if r.headers.get("X-AsyncQueue-Task-Id") == task_id
        ]
        late = [r.at for r in receiver.calls(hook) if json.loads(r.body)["task"]["id"] == task_id]
        lines.append(f"  {task_id}: row {row}, calls at {calls}, onComplete since at {late}")
    routine = (
        "claim failed",
        "listen connection lost",
        "error connecting",
        "heartbeat failed",
        "discarding closed connection",
        "recording outcomes failed",
        "prune failed",
        "create limit sync failed",
        "database unavailable",
    )
    logs = {log.name: log.read_text(errors="replace").splitlines() for log in log_dir.glob("*.log")}
    for name, log_lines in sorted(logs.items()):
        lines += [f"  {name}: {line[:400]}" for line in log_lines if any(t in line for t in shown)]
    for name, log_lines in sorted(logs.items()):
        lines += [
            f"  {name}: {line[:400]}"
            for line in log_lines
            if not any(r in line for r in routine)
            and not any(t in line for t in shown)
            and ('"level": "info"' not in line and '"level": "debug"' not in line)
            and "[INFO]" not in line
        ]
    return "\n".join(lines[:300])
