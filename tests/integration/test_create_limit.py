"""Per-team create limits against a real PostgreSQL: the 429 answer, and two web processes
sharing one team's rate through the UNLOGGED counts table."""

import time

from asyncqueue import db
from asyncqueue.create_limit import CreateLimits, for_app
from tests.support import make_team


def create(client, auth):
    return client.post("/v1/tasks", json={"callbackUrl": "https://example.com/x"}, headers=auth)


def test_creates_over_the_free_rate_are_answered_429_with_retry_after(client, auth, app):
    answers = [create(client, auth) for _ in range(40)]
    codes = [r.status_code for r in answers]
    assert codes[:20] == [201] * 20  # a second's worth at once
    refused = [r for r in answers if r.status_code == 429]
    assert refused, codes
    first = refused[0]
    assert first.is_json
    assert first.get_json()["error"].startswith(
        "Too many tasks created: the free plan allows 20 per second; retry after "
    )
    assert int(first.headers["Retry-After"]) >= 1
    time.sleep(float(first.headers["Retry-After"]) + 0.3)
    assert create(client, auth).status_code == 201  # room again, as Retry-After said


def test_another_team_is_not_limited_by_the_first(client, auth, conn):
    while create(client, auth).status_code != 429:
        pass
    _, other_key = make_team(conn, "other", "free")
    assert create(client, {"X-API-Key": other_key}).status_code == 201


def test_two_processes_share_one_rate_through_the_database(database_url, conn, team):
    team_row, _ = team
    first = CreateLimits(database_url, {"free": 20, "pro": 500})
    second = CreateLimits(database_url, {"free": 20, "pro": 500})
    second.process = "other-host:1:x"
    now = time.monotonic()
    with db.connect(database_url, autocommit=True) as sync_conn:
        for limiter in (first, second):
            limiter.limiter.admit(team_row["id"], now)
            limiter.sync(sync_conn)  # both alive, plan known
        admitted_first = sum(
            first.limiter.admit(team_row["id"], time.monotonic()) is None for _ in range(30)
        )
        first.sync(sync_conn)
        second.sync(sync_conn)
        admitted_second = sum(
            second.limiter.admit(team_row["id"], time.monotonic()) is None for _ in range(30)
        )
    assert second.limiter.processes == 2
    assert second.limiter.teams[team_row["id"]].plan == "free"
    # The first process filled the team's second; the second saw it and admits nothing more.
    assert admitted_first >= 15
    assert admitted_second == 0


def test_off_means_no_limit(app, client, auth):
    for_app(app).enabled = False
    assert all(create(client, auth).status_code == 201 for _ in range(40))
