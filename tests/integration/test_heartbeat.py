"""Worker heartbeats and `asyncqueue workers list`."""

import json

import pytest
from click.testing import CliRunner

from asyncqueue.cli import main
from asyncqueue.worker.heartbeat import FORGET_AFTER, Heartbeat
from tests.support import wait_for


@pytest.fixture
def workers_list(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)

    def invoke():
        result = CliRunner().invoke(main, ["workers", "list", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    return invoke


def test_heartbeat_keeps_a_row_fresh_and_removes_it_on_stop(pool, conn, workers_list):
    busy = [3]
    beat = Heartbeat(pool, "host-a:101", lambda: busy[0], interval=0.1)
    beat.start()
    try:
        (row,) = wait_for(workers_list, timeout=10, message="the first heartbeat")
        assert row["name"] == "host-a:101" and row["state"] == "live" and row["inFlight"] == 3
        assert row["id"] == str(beat.id) and row["pid"] > 0 and row["host"] and row["version"]
        assert row["startedAt"] and row["lastSeenAt"]
        first_seen = row["lastSeenAt"]
        busy[0] = 7
        wait_for(
            lambda: (w := workers_list()[0])["inFlight"] == 7 and w["lastSeenAt"] != first_seen,
            timeout=10,
            message="a later heartbeat",
        )
    finally:
        beat.stop()
    assert workers_list() == []
    assert not beat.thread.is_alive()


def test_silent_workers_are_marked_and_long_dead_ones_forgotten(pool, conn, workers_list):
    quiet = Heartbeat(pool, "host-b:1", lambda: 0)
    dead = Heartbeat(pool, "host-c:2", lambda: 0)
    live = Heartbeat(pool, "host-d:3", lambda: 1)
    quiet.beat()
    dead.beat()
    conn.execute(
        "UPDATE workers SET last_seen_at = now() - interval '20 seconds' WHERE id = %s",
        (quiet.id,),
    )
    conn.execute(
        "UPDATE workers SET last_seen_at = now() - make_interval(secs => %s) WHERE id = %s",
        (FORGET_AFTER + 60, dead.id),
    )
    states = {w["name"]: w["state"] for w in workers_list()}
    assert states == {"host-b:1": "silent", "host-c:2": "silent"}
    live.beat()  # any live worker's heartbeat removes the long-dead rows
    states = {w["name"]: w["state"] for w in workers_list()}
    assert states == {"host-b:1": "silent", "host-d:3": "live"}


def test_workers_list_text(database_url, monkeypatch, pool):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert CliRunner().invoke(main, ["workers", "list"]).output.strip() == "no workers"
    Heartbeat(pool, "host-e:9", lambda: 2).beat()
    text = CliRunner().invoke(main, ["workers", "list"]).output
    assert "host-e:9" in text and "live" in text and "in flight 2" in text
