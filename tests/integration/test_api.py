"""Every endpoint, status and documented message, against a real PostgreSQL."""

import json
import uuid

import pytest

from asyncqueue import db, domain
from tests.support import make_team
from tests.support.tasks import insert_tasks

EXAMPLE = {
    "callbackUrl": "https://api.example.com/webhook",
    "method": "POST",
    "headers": {"Authorization": "Bearer service-token", "X-Custom-Header": "value"},
    "body": '{"action": "process", "data": {"id": 123}}',
    "maxWaitTime": 30,
    "timeout": 30,
    "maxRetries": 3,
    "retryBackoff": "exponential",
    "onCompleteUrl": "https://api.example.com/task-complete",
}


def create(client, auth, **fields):
    return client.post(
        "/v1/tasks", json={"callbackUrl": "https://api.example.com/x", **fields}, headers=auth
    )


# -- auth ---------------------------------------------------------------------------------------


def test_missing_key(client):
    response = client.get("/v1/tasks")
    assert response.status_code == 401
    assert response.get_json() == {"error": "API key required"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer aq_nope"},
        {"X-API-Key": "definitely-not-a-key"},
    ],
)
def test_malformed_key(client, headers):
    response = client.get("/v1/tasks", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "Invalid or revoked API key"}


def test_unknown_but_well_formed_key(client):
    from asyncqueue.keys import generate_key

    response = client.get("/v1/tasks", headers={"X-API-Key": generate_key()})
    assert (response.status_code, response.get_json()) == (
        401,
        {"error": "Invalid or revoked API key"},
    )


def test_both_header_styles_work(client, team):
    _, key = team
    assert client.get("/v1/tasks", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/tasks", headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("around", ["\xa0", "\x85", "\u3000"])
def test_only_http_whitespace_around_a_key_is_ignored(client, team, around):
    # str.strip() would also take a no-break space or NEL off the key, so a mangled key would
    # authenticate as the real one. Spaces and tabs are HTTP's; nothing else is.
    _, key = team
    assert client.get("/v1/tasks", headers={"X-API-Key": f" \t{key}\t "}).status_code == 200
    for headers in ({"X-API-Key": key + around}, {"Authorization": f"Bearer {key}{around}"}):
        try:
            response = client.get("/v1/tasks", headers=headers)
        except ValueError:
            continue  # (a value the test client itself cannot send)
        assert (response.status_code, response.get_json()) == (
            401,
            {"error": "Invalid or revoked API key"},
        )


def test_revocation_takes_effect_on_the_next_request(client, team, conn):
    _, key = team
    headers = {"X-API-Key": key}
    assert client.get("/v1/tasks", headers=headers).status_code == 200
    conn.execute("UPDATE api_keys SET revoked_at = now()")
    response = client.get("/v1/tasks", headers=headers)
    assert (response.status_code, response.get_json()) == (
        401,
        {"error": "Invalid or revoked API key"},
    )


def test_keys_are_stored_only_as_hashes(team, conn):
    _, key = team
    stored = conn.execute("SELECT * FROM api_keys").fetchone()
    assert key.encode() not in json.dumps({k: str(v) for k, v in stored.items()}).encode()
    assert stored["prefix"] == key[:11]


# -- create -------------------------------------------------------------------------------------


def test_create_returns_the_documented_task(client, auth, team):
    response = client.post("/v1/tasks", json=EXAMPLE, headers=auth)
    assert response.status_code == 201
    task = response.get_json()["task"]
    uuid.UUID(task["id"])
    assert task["teamId"] == str(team[0]["id"])
    assert task["status"] == "pending"
    for key, value in EXAMPLE.items():
        assert task[key] == value
    assert task["retryCount"] == 0
    assert task["createdAt"].endswith("Z") and len(task["createdAt"]) == 24
    assert "startedAt" not in task and "result" not in task


def test_create_applies_defaults(client, auth):
    task = create(client, auth).get_json()["task"]
    assert (
        task["method"],
        task["headers"],
        task["maxWaitTime"],
        task["timeout"],
        task["maxRetries"],
        task["retryBackoff"],
    ) == ("POST", {}, 30, 30, 3, "exponential")
    assert "body" not in task and "onCompleteUrl" not in task


def test_future_delay_is_delayed_and_past_delay_is_pending(client, auth):
    future = create(client, auth, delayUntil="2099-01-01T00:00:00Z")
    assert (future.status_code, future.get_json()) == (
        400,
        {"error": "delayUntil must be at most 365 days in the future"},
    )
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    task = create(client, auth, delayUntil=soon).get_json()["task"]
    assert task["status"] == "delayed"
    assert task["delayUntil"].endswith("Z")
    past = create(client, auth, delayUntil="2024-01-15T14:00:00.000Z").get_json()["task"]
    assert past["status"] == "pending"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"callbackUrl": None}, "callbackUrl is required"),
        ({"callbackUrl": "not-a-url"}, "callbackUrl must be a valid HTTP/HTTPS URL"),
        ({"method": "PATCH"}, "method must be one of: GET, POST, PUT, DELETE"),
        ({"maxRetries": 11}, "maxRetries must be a number between 0 and 10"),
        ({"delayUntil": "next tuesday"}, "delayUntil must be a valid ISO 8601 date"),
        ({"maxWaitTime": 60}, "maxWaitTime must be at most 30 seconds on the free plan"),
    ],
)
def test_create_validation_errors(client, auth, fields, message):
    response = create(client, auth, **fields)
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


def test_missing_callback_url(client, auth):
    response = client.post("/v1/tasks", json={}, headers=auth)
    assert (response.status_code, response.get_json()) == (
        400,
        {"error": "callbackUrl is required"},
    )


@pytest.mark.parametrize("plan, limit", [("free", 30), ("pro", 120)])
def test_each_plan_allows_its_max_wait_time_and_not_a_millisecond_more(client, conn, plan, limit):
    # The document's plan table: free 30 s, pro 120 s.
    _, key = make_team(conn, "bigco", plan)
    at_limit = create(client, {"X-API-Key": key}, maxWaitTime=limit)
    assert at_limit.status_code == 201
    assert at_limit.get_json()["task"]["maxWaitTime"] == limit
    over = create(client, {"X-API-Key": key}, maxWaitTime=limit + 0.001)
    assert (over.status_code, over.get_json()) == (
        400,
        {"error": f"maxWaitTime must be at most {limit} seconds on the {plan} plan"},
    )


def test_malformed_json_and_wrong_shapes(client, auth):
    bad = client.post(
        "/v1/tasks", data="{not json", headers={**auth, "Content-Type": "application/json"}
    )
    assert (bad.status_code, bad.get_json()) == (400, {"error": "Malformed JSON in request body"})
    empty = client.post("/v1/tasks", data="", headers=auth)
    assert (empty.status_code, empty.get_json()) == (
        400,
        {"error": "Request body must be a JSON object"},
    )
    array = client.post("/v1/tasks", json=[1], headers=auth)
    assert array.get_json() == {"error": "Request body must be a JSON object"}


def test_auth_is_checked_before_the_body(client):
    response = client.post("/v1/tasks", data="{not json")
    assert (response.status_code, response.get_json()) == (401, {"error": "API key required"})


def test_request_body_over_one_mib_is_413(client, auth):
    body = json.dumps({"callbackUrl": "https://e.com/", "body": "x" * domain.MAX_REQUEST_BODY})
    response = client.post(
        "/v1/tasks", data=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert (response.status_code, response.get_json()) == (
        413,
        {"error": "Request body too large (limit 1048576 bytes)"},
    )


# -- get ----------------------------------------------------------------------------------------


def test_get_own_task(client, auth):
    created = create(client, auth).get_json()["task"]
    response = client.get(f"/v1/tasks/{created['id']}", headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"task": created}


def test_get_shows_results_once_known(client, auth, conn):
    created = create(client, auth).get_json()["task"]
    conn.execute(
        "UPDATE tasks SET status='completed', started_at=now(), completed_at=now(), "
        'result=\'{"statusCode": 200, "headers": {}, "body": "ok", "duration": 12}\''
    )
    task = client.get(f"/v1/tasks/{created['id']}", headers=auth).get_json()["task"]
    assert task["result"] == {"statusCode": 200, "headers": {}, "body": "ok", "duration": 12}
    assert task["startedAt"] and task["completedAt"]


def test_other_teams_task_is_access_denied(client, auth, conn):
    _, other_key = make_team(conn, "other")
    theirs = create(client, {"X-API-Key": other_key}).get_json()["task"]
    response = client.get(f"/v1/tasks/{theirs['id']}", headers=auth)
    assert (response.status_code, response.get_json()) == (403, {"error": "Access denied"})
    cancel = client.post(f"/v1/tasks/{theirs['id']}/cancel", headers=auth)
    assert (cancel.status_code, cancel.get_json()) == (403, {"error": "Access denied"})


@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "not-a-uuid", "123"])
def test_unknown_task_is_not_found(client, auth, task_id):
    response = client.get(f"/v1/tasks/{task_id}", headers=auth)
    assert (response.status_code, response.get_json()) == (404, {"error": "Task not found"})
    cancel = client.post(f"/v1/tasks/{task_id}/cancel", headers=auth)
    assert (cancel.status_code, cancel.get_json()) == (404, {"error": "Task not found"})


# -- list ---------------------------------------------------------------------------------------


def test_list_is_team_scoped_sorted_and_paginated(client, auth, conn):
    ids = [create(client, auth).get_json()["task"]["id"] for _ in range(5)]
    _, other_key = make_team(conn, "other")
    create(client, {"X-API-Key": other_key})

    page = client.get("/v1/tasks?limit=2", headers=auth).get_json()
    assert [t["id"] for t in page["tasks"]] == ids[::-1][:2]
    assert page["pagination"] == {"total": 5, "limit": 2, "offset": 0, "hasMore": True}

    last = client.get("/v1/tasks?limit=2&offset=4", headers=auth).get_json()
    assert [t["id"] for t in last["tasks"]] == ids[:1]
    assert last["pagination"] == {"total": 5, "limit": 2, "offset": 4, "hasMore": False}

    ascending = client.get("/v1/tasks?sortOrder=asc", headers=auth).get_json()
    assert [t["id"] for t in ascending["tasks"]] == ids


def test_list_ties_on_created_at_are_broken_stably(client, auth, conn):
    for _ in range(6):
        create(client, auth)
    conn.execute("UPDATE tasks SET created_at = '2024-01-15T10:30:00Z'")
    seen = []
    for offset in range(0, 6, 2):
        page = client.get(f"/v1/tasks?limit=2&offset={offset}", headers=auth).get_json()
        seen += [t["id"] for t in page["tasks"]]
    assert len(set(seen)) == 6


def test_list_filters_by_status(client, auth):
    keep = create(client, auth).get_json()["task"]
    gone = create(client, auth).get_json()["task"]
    client.post(f"/v1/tasks/{gone['id']}/cancel", headers=auth)
    pending = client.get("/v1/tasks?status=pending&limit=10", headers=auth).get_json()
    assert [t["id"] for t in pending["tasks"]] == [keep["id"]]
    assert pending["pagination"] == {"total": 1, "limit": 10, "offset": 0, "hasMore": False}
    cancelled = client.get("/v1/tasks?status=cancelled", headers=auth).get_json()
    assert [t["id"] for t in cancelled["tasks"]] == [gone["id"]]


# docs/api.md's 400 messages for the list's parameters.
BAD_STATUS = (
    "status must be one of: pending, delayed, processing, completed, failed, timeout, cancelled"
)
BAD_LIMIT = "limit must be a whole number of at least 1"
BAD_OFFSET = "offset must be a whole number of at least 0"
BAD_SORT_ORDER = "sortOrder must be one of: asc, desc"


@pytest.mark.parametrize(
    "query, message",
    [
        ("status=done", BAD_STATUS),
        ("limit=0", BAD_LIMIT),
        ("limit=x", BAD_LIMIT),
        ("offset=-5", BAD_OFFSET),
        ("offset=10000001", "offset must be at most 10000000"),
        ("sortOrder=sideways", BAD_SORT_ORDER),
    ],
)
def test_list_bad_parameters_are_400(client, auth, query, message):
    response = client.get(f"/v1/tasks?{query}", headers=auth)
    assert (response.status_code, response.get_json()) == (400, {"error": message})


def test_list_limit_is_capped_at_100(client, auth, team, conn):
    insert_tasks(conn, team[0]["id"], 105)
    page = client.get("/v1/tasks?limit=1000", headers=auth).get_json()
    assert len(page["tasks"]) == 100
    assert page["pagination"] == {"total": 105, "limit": 100, "offset": 0, "hasMore": True}
    rest = client.get("/v1/tasks?limit=1000&offset=100", headers=auth).get_json()
    assert len(rest["tasks"]) == 5
    assert rest["pagination"] == {"total": 105, "limit": 100, "offset": 100, "hasMore": False}


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_pending_and_delayed(client, auth):
    from datetime import UTC, datetime, timedelta

    for fields in ({}, {"delayUntil": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}):
        created = create(client, auth, **fields).get_json()["task"]
        response = client.post(f"/v1/tasks/{created['id']}/cancel", headers=auth)
        assert response.status_code == 200
        task = response.get_json()["task"]
        assert task["status"] == "cancelled" and task["completedAt"]


@pytest.mark.parametrize("status", ["processing", "completed", "failed", "timeout", "cancelled"])
def test_cancel_refuses_other_statuses(client, auth, conn, status):
    created = create(client, auth).get_json()["task"]
    conn.execute("UPDATE tasks SET status = %s", (status,))
    response = client.post(f"/v1/tasks/{created['id']}/cancel", headers=auth)
    assert response.status_code == 409
    assert response.get_json() == {
        "error": f"Task cannot be cancelled: its status is {status}; "
        "only pending or delayed tasks can be cancelled"
    }


# -- errors, spec -------------------------------------------------------------------------------


def test_unknown_route_and_wrong_method_are_json(client, auth):
    assert (client.get("/nope").status_code, client.get("/nope").get_json()) == (
        404,
        {"error": "Not found"},
    )
    response = client.delete("/v1/tasks", headers=auth)
    assert (response.status_code, response.get_json()) == (405, {"error": "Method not allowed"})
    assert "POST" in response.headers["Allow"]


def test_terminated_connections_are_replaced(client, auth, conn):
    create(client, auth)
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    # The pool notices the dead connections and replaces them: no error for the caller.
    assert client.get("/v1/tasks", headers=auth).status_code == 200


def test_openapi_document_describes_the_api(client):
    doc = client.get("/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/v1/tasks", "/v1/tasks/{id}", "/v1/tasks/{id}/cancel"}
    new_task = doc["components"]["schemas"]["NewTask"]
    assert new_task["required"] == ["callbackUrl"]
    assert new_task["properties"]["maxRetries"]["maximum"] == 10


def test_named_queries_all_load():
    assert {"task_claim", "task_finish_many", "task_insert_for_key", "key_authenticate"} <= set(
        db.queries()
    )


def test_unreachable_database_is_json_503():
    import socket

    from asyncqueue.api import create_app
    from asyncqueue.config import Settings

    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(database_url=f"postgresql://x@127.0.0.1:{port}/x?connect_timeout=1"))
    response = app.test_client().get("/v1/tasks", headers={"X-API-Key": "k"})
    assert response.status_code == 503
    assert response.get_json() == {"error": "Service temporarily unavailable: database unreachable"}
    app.extensions["asyncqueue"].database.close()


@pytest.mark.parametrize(
    "raw, message",
    [
        ('{"callbackUrl": "https://e.com/\\ud800"}', "Malformed JSON in request body"),
        (
            '{"callbackUrl": "https://e.com/", "body": "a\\u0000b"}',
            "body must not contain NUL characters",
        ),
        (
            '{"callbackUrl": "https://e.com/", "delayUntil": "0001-01-01T00:00:00+01:00"}',
            "delayUntil must be a valid ISO 8601 date",
        ),
    ],
)
def test_text_postgres_cannot_store_is_a_400_not_a_500(client, auth, raw, message):
    response = client.post(
        "/v1/tasks", data=raw, headers={**auth, "Content-Type": "application/json"}
    )
    assert (response.status_code, response.get_json()) == (400, {"error": message})


def test_early_years_are_zero_padded(client, auth):
    task = create(client, auth, delayUntil="0434-07-29T19:02:58.904Z").get_json()["task"]
    assert task["delayUntil"] == "0434-07-29T19:02:58.904Z"


def test_unexpected_failure_is_json_500_with_a_request_id(app, auth, monkeypatch):
    from asyncqueue.api import tasks

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tasks, "task_to_json", explode)
    response = app.test_client().post(
        "/v1/tasks", json={"callbackUrl": "https://e.com/"}, headers=auth
    )
    assert response.status_code == 500
    request_id = response.headers["X-Request-Id"]
    assert response.get_json() == {"error": f"Internal server error (request id {request_id})"}


def test_create_after_backends_were_terminated_still_succeeds(client, auth, conn):
    create(client, auth)  # the pool now holds a connection
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    response = create(client, auth)
    assert response.status_code == 201
    assert conn.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 2


def test_unknown_key_with_a_bad_body_is_401_not_400(client):
    from asyncqueue.keys import generate_key

    headers = {"X-API-Key": generate_key(), "Content-Type": "application/json"}
    for body in ('{"method": "PATCH"}', "{not json"):
        response = client.post("/v1/tasks", data=body, headers=headers)
        assert (response.status_code, response.get_json()) == (
            401,
            {"error": "Invalid or revoked API key"},
        )


# -- hostile input is a JSON 4xx, never a 500 ---------------------------------------------------


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            '{"callbackUrl": "https://e.com/", "maxRetries": 1%s}' % ("0" * 400),
            "maxRetries must be a number between 0 and 10",
        ),
        (
            '{"callbackUrl": "https://e.com/", "timeout": 1%s}' % ("0" * 4000),
            "timeout must be a number of seconds from 0.001 to 120",
        ),
        (
            '{"callbackUrl": "https://e.com/", "maxWaitTime": 1%s}' % ("0" * 308),
            "maxWaitTime must be a number of seconds of at least 0.001",
        ),
        ("[" * 100_000 + "]" * 100_000, "Request body is nested too deeply"),
        (
            '{"callbackUrl": "https://e.com/", "body": %s}'
            % ('{"a":' * 100_000 + "1" + "}" * 100_000),
            "Request body is nested too deeply",
        ),
        (
            '{"callbackUrl": "https://e.com/", "timeout": 1e-320}',
            "timeout must be a number of seconds from 0.001 to 120",
        ),
    ],
    ids=[
        "maxRetries-401-digits",
        "timeout-4001-digits",
        "maxWaitTime-309-digits",
        "array-100000-deep",
        "object-100000-deep",
        "timeout-1e-320",
    ],
)
def test_huge_numbers_and_deep_nesting_are_400_not_500(client, auth, raw, message, caplog):
    response = client.post(
        "/v1/tasks", data=raw, headers={**auth, "Content-Type": "application/json"}
    )
    assert (response.status_code, response.get_json()) == (400, {"error": message})
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_hostile_bodies_with_a_forged_key_are_401_before_any_lookup_of_them(client):
    from asyncqueue.keys import generate_key

    headers = {"X-API-Key": generate_key(), "Content-Type": "application/json"}
    for raw in ("[" * 100_000, '{"maxRetries": 1%s}' % ("0" * 400)):
        response = client.post("/v1/tasks", data=raw, headers=headers)
        assert (response.status_code, response.get_json()) == (
            401,
            {"error": "Invalid or revoked API key"},
        )


def _chunked_post(client, auth, body: bytes):
    """POST without a Content-Length, as a chunked request reaches the app from gunicorn."""
    import io

    return client.post(
        "/v1/tasks",
        input_stream=io.BytesIO(body),
        headers={**auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_chunked_body_over_the_limit_is_413_not_cut(client, auth, conn):
    valid = json.dumps({"callbackUrl": "https://e.com/", "body": "x" * 1000}).encode()
    body = (
        valid + b" " * (domain.MAX_REQUEST_BODY - len(valid)) + b"y" * (2 * domain.MAX_REQUEST_BODY)
    )
    response = _chunked_post(client, auth, body)
    assert (response.status_code, response.get_json()) == (
        413,
        {"error": "Request body too large (limit 1048576 bytes)"},
    )
    assert conn.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0


def test_chunked_body_at_the_limit_is_accepted(client, auth):
    valid = json.dumps({"callbackUrl": "https://e.com/"}).encode()
    body = valid + b" " * (domain.MAX_REQUEST_BODY - len(valid))
    assert _chunked_post(client, auth, body).status_code == 201


@pytest.mark.parametrize(
    "headers, message",
    [
        (
            {"X-A": "a\x01b"},
            "headers value for X-A must not contain control characters (tab is allowed)",
        ),
        ({"X-A": " lead"}, "headers value for X-A must not start with a space or tab"),
        (
            {"X-A": "\u20ac"},
            "headers value for X-A must contain only Latin-1 characters (up to U+00FF)",
        ),
    ],
)
def test_header_values_the_worker_cannot_send_are_400(client, auth, headers, message):
    response = create(client, auth, headers=headers)
    assert (response.status_code, response.get_json()) == (400, {"error": message})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1./x",
        "http://0x7f000001./x",
        "http://127\u30020\u30020\u30021/x",
        "http://\uff11\uff12\uff17.0.0.1/x",
        "http://\u2460\u2461\u2466.0.0.1/x",
    ],
)
def test_literal_loopback_in_disguise_is_refused_at_creation(client, auth, url):
    response = create(client, auth, callbackUrl=url)
    assert (response.status_code, response.get_json()) == (
        400,
        {
            "error": "callbackUrl must not point to a private or reserved address (127.0.0.1 is loopback)"
        },
    )


def test_bracketed_host_that_is_not_ipv6_is_refused(client, auth):
    response = create(client, auth, callbackUrl="http://[v1.x]/")
    assert (response.status_code, response.get_json()) == (
        400,
        {"error": "callbackUrl must be a valid HTTP/HTTPS URL"},
    )


@pytest.mark.parametrize(
    "query, message",
    [
        ("sortOrder=", BAD_SORT_ORDER),
        ("status=", BAD_STATUS),
        ("limit=", BAD_LIMIT),
        ("offset=", BAD_OFFSET),
    ],
)
def test_empty_list_parameters_are_400(client, auth, query, message):
    response = client.get(f"/v1/tasks?{query}", headers=auth)
    assert (response.status_code, response.get_json()) == (400, {"error": message})


def _new_task_validator(client):
    import jsonschema_rs  # schemathesis's validator

    doc = client.get("/v1/openapi.json").get_json()
    return jsonschema_rs.Draft202012Validator(doc["components"]["schemas"]["NewTask"])


@pytest.mark.parametrize(
    "fields",
    [
        {field: None}
        for field in (
            "method",
            "headers",
            "body",
            "maxWaitTime",
            "timeout",
            "delayUntil",
            "maxRetries",
            "retryBackoff",
            "onCompleteUrl",
        )
    ]
    + [{"headers": {"X-Token": "caf\u00e9\tok"}}, {"timeout": 0.001}],
)
def test_what_the_document_allows_the_api_accepts(client, auth, fields):
    payload = {"callbackUrl": "https://example.com/x", **fields}
    assert _new_task_validator(client).is_valid(payload)
    assert client.post("/v1/tasks", json=payload, headers=auth).status_code == 201


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"headers": {"Bad Name": "x"}}, "headers has an invalid header name: 'Bad Name'"),
        ({"headers": {"hOsT": "x"}}, "headers must not set hOsT: the HTTP client sets it"),
        (
            {"headers": {"X-A": " lead"}},
            "headers value for X-A must not start with a space or tab",
        ),
        (
            {"headers": {"X-A": "a\x01b"}},
            "headers value for X-A must not contain control characters (tab is allowed)",
        ),
        (
            {"headers": {"X-A": "\u20ac"}},
            "headers value for X-A must contain only Latin-1 characters (up to U+00FF)",
        ),
        ({"timeout": 1e-320}, "timeout must be a number of seconds from 0.001 to 120"),
        ({"retryBackoff": "fibonacci"}, "retryBackoff must be one of: linear, exponential"),
    ],
)
def test_what_the_document_forbids_the_api_refuses(client, auth, fields, message):
    payload = {"callbackUrl": "https://example.com/x", **fields}
    assert not _new_task_validator(client).is_valid(payload)
    response = client.post("/v1/tasks", json=payload, headers=auth)
    assert (response.status_code, response.get_json()) == (400, {"error": message})


def test_the_document_forbids_empty_list_parameters(client):
    doc = client.get("/v1/openapi.json").get_json()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/v1/tasks"]["get"]["parameters"]}
    assert "" not in params["sortOrder"]["enum"] and "" not in params["status"]["enum"]
    assert None not in params["status"]["enum"]
