"""Fairness between teams, end to end: one team's flood of hanging callbacks does not stall
another team's task, and creates over a plan's rate are answered 429."""

import threading
import time
import uuid
from datetime import UTC, datetime

import requests

from asyncqueue import db
from asyncqueue.api.create_limiter import SYNC_INTERVAL, WINDOWS
from tests.support import make_team, report, wait_for
from tests.support.stack import Stack


def test_a_flood_of_hanging_callbacks_does_not_stall_another_team(own_stack, receiver):
    """Team B: 200 tasks to a receiver that hangs for 20 s; team A's task, created after them,
    starts within 1 s, with 2 workers at the default concurrency (16 each)."""
    stack = own_stack
    hang = f"/sleep/20?b={uuid.uuid4().hex}"
    with db.connect(stack.database_url, autocommit=True) as conn:
        team_b = stack.team["id"]
        _, key_a = make_team(conn, "team-a", "free")
        conn.execute(
            "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
            "max_retries, retry_backoff, next_run_at) SELECT %s, 'pending', %s, 'POST', 30, 30, "
            "0, 'exponential', now() FROM generate_series(1, 200)",
            (team_b, receiver.url(hang)),
        )
    for _ in range(2):
        stack.start_worker()
    # Both workers busy with B: every usual slot (2 x 16) holds one of B's hanging calls.
    wait_for(lambda: len(receiver.calls(hang)) >= 32, timeout=60, message="B to fill 32 slots")
    # A's create is then to meet workers at rest at their cap, not a claim still under way:
    # the case under test, so this pause is part of the scenario.
    time.sleep(0.5)
    path = f"/ok?a={uuid.uuid4().hex}"
    created = time.time()
    response = stack.http.post(
        stack.url("/v1/tasks"),
        json={"callbackUrl": receiver.url(path)},
        headers={"Authorization": f"Bearer {key_a}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    wait_for(lambda: receiver.calls(path), timeout=25, message="team A's callback")
    started = receiver.calls(path)[0].at - created
    report(
        f"fairness: team A's task started {started * 1000:.0f} ms after its create, under "
        f"team B's 200 hanging callbacks"
    )
    assert started < 1.0, f"team A's task waited {started:.1f} s behind team B's flood"
    # A delayed task of A's comes due during the flood with no notification: it starts within
    # the once-a-second look past the capped team (plus the load's slack).
    path = f"/ok?a-later={uuid.uuid4().hex}"
    due = time.time() + 2.5  # half-way between two of the once-a-second looks
    later = datetime.fromtimestamp(due, UTC).isoformat(timespec="milliseconds")
    response = stack.http.post(
        stack.url("/v1/tasks"),
        json={"callbackUrl": receiver.url(path), "delayUntil": later},
        headers={"Authorization": f"Bearer {key_a}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    wait_for(lambda: receiver.calls(path), timeout=20, message="team A's delayed callback")
    late = receiver.calls(path)[0].at - due
    report(f"fairness: team A's delayed task started {late * 1000:.0f} ms after its time")
    assert 0 <= late < 2.0
    # B never held more than its cap, `concurrency` per worker: the reserve stayed for others.
    assert len(receiver.calls(hang)) == 32


# The limit counts creates over windows of wall-clock time (of the database's clock): a team's
# earlier creates stop counting once the longest window has passed, and each process has synced.
WINDOWS_EMPTY = WINDOWS + 2 * SYNC_INTERVAL + 0.1


def bursts_each_second(stack, key: str, k: int, seconds: int) -> tuple[list[float], list]:
    """k creates at once (a fresh connection each) at the start of each of `seconds` one-second
    slots of the client's clock; a slot the client reaches late is skipped, not caught up, so
    the creates stay within k per second however the client is delayed. Returns the send times
    and every answer as (time, status)."""
    sent: list[float] = []
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()

    def send():
        with lock:
            sent.append(time.monotonic())
        with requests.Session() as session:  # a connection of its own; no proxy from the env
            session.trust_env = False
            r = post_create(session, stack, key)
        with lock:
            answers.append((time.monotonic(), r.status_code))

    first = time.monotonic() + 0.2
    for n in range(seconds):
        slot = first + n
        if time.monotonic() > slot + 0.1:
            continue  # late: skip this second
        time.sleep(max(0.0, slot - time.monotonic()))  # the client's schedule
        threads = [threading.Thread(target=send) for _ in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    return sent, answers


def post_create(session: requests.Session, stack, key: str) -> requests.Response:
    return session.post(
        stack.url("/v1/tasks"),
        json={"callbackUrl": "https://example.com/x"},
        headers={"X-API-Key": key},
        timeout=10,
    )


def most_in_one_second(times: list[float]) -> int:
    """The most of `times` in any half-open one-second span."""
    times, most, j = sorted(times), 0, 0
    for i, at in enumerate(times):
        while times[j] <= at - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def creates_from_connections(
    stack, key: str, connections: int, each: int, pause: float = 0.0
) -> list[tuple]:
    """`connections` keep-alive clients at once, each sending `each` creates with `key`
    (`pause` seconds apart): every answer as (time, status, headers, body)."""
    answers: list[tuple[float, int, dict, dict]] = []
    lock = threading.Lock()

    def send():
        session = requests.Session()
        session.trust_env = False
        for _ in range(each):
            r = post_create(session, stack, key)
            with lock:
                answers.append((time.time(), r.status_code, dict(r.headers), r.json()))
            time.sleep(pause)  # the client's rate

    threads = [threading.Thread(target=send) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_create_limit_holds_across_two_gunicorn_processes(database_url, tmp_path):
    """A free team (20/s) sending from 8 connections at once to 2 web processes: the processes
    share the team's rate through the database, and the creates refused are 429 with
    Retry-After and a JSON error. A pro team under its rate is refused nothing, nor is the free
    team sending within its rate in bursts that reach both processes."""
    stack = Stack(database_url, tmp_path, WEB_CONCURRENCY="2")
    try:
        stack.start_web()
        with db.connect(database_url, autocommit=True) as conn:
            _, key = make_team(conn, "free-team", "free")
            _, pro_key = make_team(conn, "pro-team", "pro")
        # Warm up: one create or more per connection (each may reach either process).
        creates_from_connections(stack, key, 4, 1)
        time.sleep(WINDOWS_EMPTY)
        start = time.time()
        answers = creates_from_connections(stack, key, 8, 15)
        elapsed = max(a[0] for a in answers) - start
        created = sum(1 for a in answers if a[1] == 201)
        refused = [a for a in answers if a[1] == 429]
        report(
            f"create limit: free team (20/s), 2 web processes, 120 creates from 8 connections "
            f"in {elapsed:.2f} s: {created} created, {len(refused)} refused with 429"
        )
        assert {a[1] for a in answers} <= {201, 429}
        assert refused
        _, _, headers, body = refused[0]
        assert int(headers["Retry-After"]) >= 1
        assert body["error"].startswith(
            "Too many tasks created: the free plan allows 20 per second"
        )
        # The shared rate, whichever process each create reached, including one that had not
        # served the team before the burst: docs/guarantees.md's bound through several
        # processes, at most 2.5 x the rate in any one-second span; and over the whole burst a
        # second's worth per 0.8 s, twice that for two processes (one spends the allowance it
        # took before the burst while the other's sync admits on the counts it sees).
        assert most_in_one_second([a[0] for a in answers if a[1] == 201]) <= 20 * 2.5
        assert created <= 20 * 2 + 20 * 2 * max(0.0, elapsed - 0.8)

        # The pro team (500/s) under its rate, new to both processes: 8 connections each sending
        # a create every 40 ms (at most 200/s), none refused: neither process may take the
        # whole headroom for itself, nor keep its part when the other is asked for more.
        start = time.time()
        answers = creates_from_connections(stack, pro_key, 8, 30, pause=0.04)
        rate = len(answers) / (max(a[0] for a in answers) - start)
        codes = {a[1] for a in answers}
        report(f"create limit: pro team (500/s), {len(answers)} creates at {rate:.0f}/s: {codes}")
        assert codes == {201}
        time.sleep(WINDOWS_EMPTY)

        # A free team within its rate: 10 creates at once at the start of each second, each on
        # a connection of its own (so both processes serve it), never more than 20 in any one
        # second as the client's clock sees it: none refused.
        sent, answers = bursts_each_second(stack, key, 10, 5)
        assert most_in_one_second(sent) <= 20  # within the rate, as sent
        codes = [a[1] for a in answers]
        report(f"create limit: free team, 10 at once each second: {codes.count(429)} refused")
        assert codes and set(codes) == {201}, codes

        # The release before's tables (whole seconds), read by its processes during a rolling
        # deploy, get none of these processes' counts or allowances.
        with db.connect(database_url, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT (SELECT count(*) FROM create_counts) AS old_counts,"
                " (SELECT count(*) FROM create_allowances) AS old_allowances,"
                " (SELECT count(*) FROM create_tenth_counts) AS counts"
            ).fetchone()
        assert (tables["old_counts"], tables["old_allowances"]) == (0, 0)
        assert tables["counts"] > 0
    finally:
        stack.stop()
