"""GET /metrics on the web app: request metrics by route template, queue-wide figures from the
database, and the optional Bearer token."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asyncqueue.api import create_app
from asyncqueue.config import Settings
from asyncqueue.worker.heartbeat import Heartbeat
from tests.support import make_team
from tests.support.ops import insert


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


@pytest.fixture
def token_app(database_url):
    app = create_app(Settings(database_url=database_url, db_pool_size=2, metrics_token="s3cret"))
    yield app
    app.extensions["asyncqueue"].database.close()


def test_requests_are_counted_by_route_template_method_and_status(client, auth):
    created = client.post("/v1/tasks", json={"callbackUrl": "https://example.com/x"}, headers=auth)
    task_id = created.get_json()["task"]["id"]
    before = samples(client.get("/metrics").get_data(as_text=True))
    key = ("method", "GET"), ("route", "/v1/tasks/<task_id>"), ("status", "200")
    for _ in range(3):
        assert client.get(f"/v1/tasks/{task_id}", headers=auth).status_code == 200
    client.get("/no/such/path/12345")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    after = samples(text)
    name = "asyncqueue_http_requests_total"
    assert after[(name, key)] - before.get((name, key), 0) == 3
    assert after[(name, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] >= 1
    duration = "asyncqueue_http_request_duration_seconds_count"
    assert after[(duration, (("method", "GET"), ("route", "/v1/tasks/<task_id>")))] >= 3
    assert task_id not in text and "12345" not in text  # never a raw path


def test_queue_figures_come_from_the_database(client, conn):
    team = make_team(conn, "ops", "pro")[0]
    insert(conn, team["id"], "completed", 4, completed_days_ago=1)
    insert(conn, team["id"], "delayed", 2, completed_days_ago=None)
    conn.execute(
        "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
        "max_retries, retry_backoff, next_run_at) VALUES (%s, 'pending', 'http://127.0.0.1/x', "
        "'POST', 30, 30, 3, 'exponential', now() - interval '90 seconds')",
        (team["id"],),
    )
    from asyncqueue import db

    pool = db.make_pool(conn.info.dsn, 1, name="test-metrics")
    try:
        Heartbeat(pool, "h:1", lambda: 0).beat()
        Heartbeat(pool, "h:2", lambda: 0).beat()
    finally:
        pool.close()
    got = samples(client.get("/metrics").get_data(as_text=True))
    assert got[("asyncqueue_tasks", (("status", "completed"),))] == 4
    assert got[("asyncqueue_tasks", (("status", "delayed"),))] == 2
    assert got[("asyncqueue_tasks", (("status", "pending"),))] == 1
    assert got[("asyncqueue_tasks", (("status", "failed"),))] == 0
    assert got[("asyncqueue_tasks_finished_total", (("status", "completed"),))] == 4
    assert 90 <= got[("asyncqueue_queue_lag_seconds", ())] < 120
    assert got[("asyncqueue_workers_live", ())] == 2
    assert got[("asyncqueue_database_up", ())] == 1


def test_no_lag_when_nothing_is_due(client):
    got = samples(client.get("/metrics").get_data(as_text=True))
    assert got[("asyncqueue_queue_lag_seconds", ())] == 0


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic s3cret", "s3cret"])
def test_token_required_when_set(token_app, header):
    headers = {"Authorization": header} if header else {}
    response = token_app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert "ASYNCQUEUE_METRICS_TOKEN" in response.get_json()["error"]


def test_token_accepted(token_app):
    response = token_app.test_client().get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200 and "asyncqueue_tasks{" in response.get_data(as_text=True)


def test_request_metrics_still_served_while_the_database_is_away():
    app = create_app(Settings(database_url="postgresql://127.0.0.1:1/none", db_pool_size=1))
    try:
        text = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["asyncqueue"].database.close()
    got = samples(text)
    assert got[("asyncqueue_database_up", ())] == 0
    assert "asyncqueue_tasks{" not in text
