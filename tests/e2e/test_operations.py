"""Operating it, end to end: /metrics on gunicorn (2 processes, with a token), a worker's own
metrics port, its heartbeat row, and retention run by the worker itself."""

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from asyncqueue import db
from tests.support import wait_for
from tests.support.databases import stack_on_a_clone
from tests.support.ops import by_status, counted, insert
from tests.support.stack import BIN, free_port

TOKEN = "e2e-metrics-token"
WEB_METRICS = {
    "asyncqueue_http_requests_total",
    "asyncqueue_http_request_duration_seconds_bucket",
    "asyncqueue_http_request_duration_seconds_count",
    "asyncqueue_http_request_duration_seconds_sum",
    "asyncqueue_tasks",
    "asyncqueue_tasks_finished_total",
    "asyncqueue_queue_lag_seconds",
    "asyncqueue_workers_live",
    "asyncqueue_database_up",
}
WORKER_METRICS = {
    "asyncqueue_worker_attempts_total",
    "asyncqueue_worker_callback_duration_seconds_bucket",
    "asyncqueue_worker_callback_duration_seconds_count",
    "asyncqueue_worker_in_flight",
    "asyncqueue_worker_claim_batch_size_bucket",
    "asyncqueue_worker_outcome_batch_size_bucket",
}


def scrape(url: str, token: str | None = TOKEN) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(response.text)
        for s in f.samples
    }


@pytest.fixture(scope="module")
def ops_stack(pg_admin_url, template_db):
    with stack_on_a_clone(
        pg_admin_url, template_db, WEB_CONCURRENCY="2", ASYNCQUEUE_METRICS_TOKEN=TOKEN
    ) as stack:
        # Finished long ago, before any worker runs: the worker's pruner should delete these.
        with db.connect(stack.database_url, autocommit=True) as conn:
            insert(conn, stack.team["id"], "completed", 2_500, completed_days_ago=45)
            insert(conn, stack.team["id"], "failed", 30, completed_days_ago=45)
            insert(conn, stack.team["id"], "completed", 20, completed_days_ago=2)
        stack.metrics_port = free_port()
        stack.start_web()
        stack.start_worker(ASYNCQUEUE_WORKER_METRICS_PORT=str(stack.metrics_port))
        yield stack


def workers_json(stack) -> list:
    out = subprocess.run(
        [str(BIN / "asyncqueue"), "workers", "list", "--json"],
        env={**os.environ, "DATABASE_URL": stack.database_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid`, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def healthz_served_by_process(stack) -> dict[int, float]:
    """GET /healthz answers counted by each gunicorn process, from the files each writes to its
    master's metrics directory (web/metrics_multiprocess.py), one per process."""
    parent = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.gettempdir())
    (directory,) = parent.glob(f"asyncqueue-metrics-{stack.web.pid}-*")
    served: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        for metric in MultiProcessCollector.merge([str(path)]):
            for sample in metric.samples:
                labels = sample.labels
                if sample.name == "asyncqueue_http_requests_total" and (
                    labels["route"] == "/healthz" and labels["status"] == "200"
                ):
                    served[pid] = served.get(pid, 0.0) + sample.value
    return served


def test_every_metric_is_served_and_counts_every_gunicorn_process(ops_stack, receiver):
    stack = ops_stack
    for i in range(3):
        stack.wait_done(stack.create(callbackUrl=receiver.url(f"/ok/ops{i}"))["id"])
    stack.wait_done(stack.create(callbackUrl=receiver.url("/status/503"), maxRetries=1)["id"])
    processes = children(stack.web.pid)
    assert len(processes) == 2  # WEB_CONCURRENCY

    def every_process_served() -> bool:
        for _ in range(20):  # a connection each: whichever process accepts it answers
            assert requests.get(stack.url("/healthz"), timeout=5).status_code == 200
        served = healthz_served_by_process(stack)
        return all(served.get(pid, 0) > 0 for pid in processes)

    wait_for(every_process_served, timeout=30, message="/healthz answered by both processes")
    web = wait_for(
        lambda: (
            (m := scrape(stack.url("/metrics"))) and m[("asyncqueue_workers_live", ())] == 1 and m
        ),
        timeout=20,
        message="the worker's heartbeat on /metrics",
    )
    assert not WEB_METRICS - {name for name, _ in web}
    healthz = ("method", "GET"), ("route", "/healthz"), ("status", "200")
    # Each scrape is answered by one process; it counts every process's requests.
    served = healthz_served_by_process(stack)
    assert set(served) == processes
    assert web[("asyncqueue_http_requests_total", healthz)] == sum(served.values())
    assert web[("asyncqueue_database_up", ())] == 1
    assert not any("team" in dict(labels) for _, labels in web)

    worker = scrape(f"http://127.0.0.1:{stack.metrics_port}/metrics")
    assert not WORKER_METRICS - {name for name, _ in worker}
    assert worker[("asyncqueue_worker_attempts_total", (("outcome", "completed"),))] >= 3
    assert worker[("asyncqueue_worker_attempts_total", (("outcome", "retry"),))] >= 1
    assert worker[("asyncqueue_worker_attempts_total", (("outcome", "failed"),))] >= 1
    assert worker[("asyncqueue_worker_callback_duration_seconds_count", ())] >= 5


def test_metrics_refuse_a_missing_or_wrong_token(ops_stack):
    refused = {
        "error": "Metrics require the token in ASYNCQUEUE_METRICS_TOKEN, sent as "
        "'Authorization: Bearer <token>'"
    }
    for headers in ({}, {"Authorization": "Bearer nope"}):
        web = requests.get(ops_stack.url("/metrics"), headers=headers, timeout=5)
        assert (web.status_code, web.json()) == (401, refused)
        worker = requests.get(
            f"http://127.0.0.1:{ops_stack.metrics_port}/metrics", headers=headers, timeout=5
        )
        assert (worker.status_code, worker.json()) == (401, refused)


def test_the_worker_prunes_expired_tasks_by_itself(ops_stack):
    expired = "SELECT count(*) AS n FROM tasks WHERE completed_at < now() - interval '30 days'"
    recent = "SELECT count(*) AS n FROM tasks WHERE completed_at > now() - interval '3 days'"
    with db.connect(ops_stack.database_url, autocommit=True) as conn:
        wait_for(
            lambda: conn.execute(expired).fetchone()["n"] == 0,
            timeout=60,
            interval=0.2,
            message="the worker's pruner",
        )
        assert conn.execute(recent).fetchone()["n"] >= 20  # younger than the retention: kept
        assert counted(conn) == by_status(conn)
    finished = scrape(ops_stack.url("/metrics"))
    assert finished[("asyncqueue_tasks_finished_total", (("status", "failed"),))] >= 30
    assert finished[("asyncqueue_tasks_finished_total", (("status", "completed"),))] >= 2_520


def test_workers_list_shows_the_worker_and_its_row_goes_when_it_stops(ops_stack):
    (row,) = workers_json(ops_stack)
    worker = ops_stack.workers[0]
    assert row["state"] == "live" and row["pid"] == worker.pid
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=30)
    assert workers_json(ops_stack) == []
