"""Fairness between teams and create limits, measured (hooked into bench/harness.py's run):

* single-team dispatch (fast and 50 ms receivers) and create, before and after, in the same run
  and alternating: "before" is the worker with ASYNCQUEUE_FAIRNESS_RESERVE=0 (the claim as it
  was) and a web process with ASYNCQUEUE_CREATE_RATE=off; "after" is the defaults (the bench
  team is pro; its rate is raised above what the bench can send, so create measures the
  limiter's cost, not its refusals);
* team A's start delay while team B floods: B's tasks call a receiver that hangs, A creates a
  task through the API after them; from the start of A's create request to its callback;
* the claim's EXPLAIN ANALYZE with a large due backlog of one team, both ways (no team skipped,
  which is the single-team plan, and that team skipped).

All traffic stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from asyncqueue import db
from asyncqueue.teams import create_key
from bench.loadgen import RawClient

# Per mode: (B's tasks, B's receiver hang in s, A's tasks, due rows for EXPLAIN)
FLOOD = {"tiny": (60, 3, 3, 2_000), "quick": (200, 8, 5, 50_000), "full": (200, 20, 10, 200_000)}
NO_FAIRNESS = {"ASYNCQUEUE_FAIRNESS_RESERVE": "0"}
NO_CREATE_LIMIT = {"ASYNCQUEUE_CREATE_RATE": "off"}


class HangingReceiver:
    """Answers every request after `seconds` (one thread per request), on 127.0.0.1."""

    def __init__(self, seconds: float):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.arrived += 1
                time.sleep(seconds)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

        receiver = self
        self.lock = threading.Lock()
        self.arrived = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hang"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def measure(bench) -> dict:
    """Everything above; `bench` is harness.Bench, started."""
    out: dict = {}
    sizes, mode = bench.sizes, bench.results.get("mode", "full")
    runs: dict[str, list[dict]] = {}
    fast = (sizes.dispatch_tasks, "/fast")
    slow = (sizes.slow_tasks, "/slow")
    before_web, before_port = _spawn_web(bench, NO_CREATE_LIMIT)
    try:
        # Before and after alternate, and which goes first alternates too: the second drain of a
        # pair runs on the dead rows the first left in the table, so a fixed order would favour
        # one side. An even number of rounds, at least four.
        rounds = max(4, sizes.repeats + sizes.repeats % 2)
        for i in range(rounds):
            pairs = (
                (
                    ("dispatch_before", NO_FAIRNESS, lambda: bench.measure_dispatch(*fast)),
                    ("dispatch_after", {}, lambda: bench.measure_dispatch(*fast)),
                ),
                (
                    ("dispatch_50ms_before", NO_FAIRNESS, lambda: bench.measure_dispatch(*slow)),
                    ("dispatch_50ms_after", {}, lambda: bench.measure_dispatch(*slow)),
                ),
                (
                    ("create_before", None, lambda: _create_on(bench, before_web, before_port)),
                    ("create_after", None, lambda: bench.measure_create()),
                ),
            )
            for pair in pairs:
                for name, env, measure_one in pair if i % 2 == 0 else pair[::-1]:
                    with _worker_env(bench, env or {}):
                        runs.setdefault(name, []).append(measure_one())
    finally:
        bench.stop_processes([before_web])
    for name, results in runs.items():
        key = "tasks_per_s" if name.startswith("create") else "callbacks_per_s"
        out[name] = {
            "median": statistics.median(r[key] for r in results),
            "runs": [r[key] for r in results],
        }
    out["flood"] = _flood(bench, *FLOOD[mode][:3])
    out["explain"] = _explain(bench, FLOOD[mode][3])
    return out


class _worker_env:
    """bench.env with `extra` while measuring (workers read it when they start)."""

    def __init__(self, bench, extra: dict):
        self.bench, self.extra = bench, extra

    def __enter__(self):
        self.saved = self.bench.env
        self.bench.env = {**self.saved, **self.extra}

    def __exit__(self, *exc):
        self.bench.env = self.saved


def _spawn_web(bench, extra: dict):
    from asyncqueue.dev import embedded_pg
    from bench.harness import BIN

    port = embedded_pg._free_port()
    env = {**bench.env, **extra, "PORT": str(port)}
    web = bench.spawn(
        [str(BIN / "asyncqueue"), "web"],
        env=env,
    )
    bench.wait_http(f"http://127.0.0.1:{port}/healthz")
    return web, port


def _create_on(bench, web, port) -> dict:
    saved = bench.web, bench.web_port
    bench.web, bench.web_port = web, port
    try:
        return bench.measure_create()
    finally:
        bench.web, bench.web_port = saved


def _two_teams(bench, purpose: str) -> tuple[dict, dict]:
    """A new pro team (the big one) and a new free team."""
    suffix = uuid.uuid4().hex[:6]
    with db.connect(bench.url, autocommit=True) as conn:
        return tuple(
            conn.execute(
                db.query("team_create"), {"name": f"{purpose}-{plan}-{suffix}", "plan": plan}
            ).fetchone()
            for plan in ("pro", "free")
        )


def _flood(bench, b_tasks: int, hang: float, a_tasks: int) -> dict:
    """Team B's `b_tasks` tasks to a receiver hanging `hang` s, then team A's tasks one by one:
    milliseconds from the start of each A create request to its callback's arrival."""
    receiver = HangingReceiver(hang)
    team_b, team_a = _two_teams(bench, "flood")
    with db.connect(bench.url, autocommit=True) as conn:
        key_a, _ = create_key(conn, team_a["id"], "bench")
    bench.reset_ledger()
    with _worker_env(bench, {"ASYNCQUEUE_SHUTDOWN_GRACE": "1"}):
        workers = bench.start_workers()
    try:
        bench.sql(
            "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
            "max_retries, retry_backoff, next_run_at) SELECT %s, 'pending', %s, 'POST', 120, "
            "%s, 0, 'exponential', now() FROM generate_series(1, %s)",
            (team_b["id"], receiver.url(), hang + 10, b_tasks),
        )
        end = time.monotonic() + 30
        while receiver.arrived < 32 and time.monotonic() < end:
            time.sleep(0.05)
        b_in_flight = receiver.arrived
        client = RawClient("127.0.0.1", bench.web_port, {"X-API-Key": key_a})
        sent: dict[str, float] = {}
        for _ in range(a_tasks):
            t0 = time.time()
            status, answer = client.post_json(
                "/v1/tasks", {"callbackUrl": bench.receiver_url("/fast")}
            )
            assert status == 201, answer
            sent[answer["task"]["id"]] = t0
            time.sleep(0.2)
        client.close()
        end = time.monotonic() + hang + 5
        while time.monotonic() < end and not set(sent) <= set(bench.ledger()):
            time.sleep(0.05)
        ledger = bench.ledger()
        delays = [(ledger[i][0] - t) * 1000 for i, t in sent.items() if i in ledger]
    finally:
        bench.stop_processes(workers)
        receiver.close()
        bench.sql("DELETE FROM tasks WHERE team_id IN (%s, %s)", (team_b["id"], team_a["id"]))
    return {
        "b_tasks": b_tasks,
        "hang_s": hang,
        "b_in_flight_when_a_created": b_in_flight,
        "a_tasks": a_tasks,
        "a_started": len(delays),
        "a_delay_ms": sorted(delays),
    }


def _explain(bench, rows: int) -> dict:
    """The claim's EXPLAIN ANALYZE with `rows` due tasks of one team and one of another."""
    big, small = _two_teams(bench, "explain")
    insert = (
        "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
        "max_retries, retry_backoff, next_run_at) SELECT %s, 'pending', 'http://127.0.0.1/x', "
        "'POST', 30, 30, 3, 'exponential', now() - interval '1 hour' FROM generate_series(1, %s)"
    )
    bench.sql(insert, (big["id"], rows))
    bench.sql(insert.replace("interval '1 hour'", "interval '1 second'"), (small["id"], 1))
    bench.sql("VACUUM ANALYZE tasks")
    out = {"due_rows": rows + 1}
    try:
        with psycopg.connect(bench.url) as conn:
            for name, skip in (("single_team", []), ("skipping_the_big_team", [big["id"]])):
                times = []
                for _ in range(5):
                    plan = conn.execute(
                        "EXPLAIN (ANALYZE, BUFFERS) "
                        + db.query("task_claim_skipping" if skip else "task_claim"),
                        {"limit": 16, "grace": 10, "worker": "explain", "skip": skip},
                    ).fetchall()
                    conn.rollback()
                    times += [r[0].split(":")[1].strip() for r in plan if "Execution Time" in r[0]]
                text = "\n".join(r[0] for r in plan)
                out[name] = {
                    "execution_times": times,
                    "uses_tasks_due": "using tasks_due on" in text,
                    "uses_tasks_team_due": "using tasks_team_due on" in text,
                    "plan": text,
                }
    finally:
        bench.sql("DELETE FROM tasks WHERE team_id IN (%s, %s)", (big["id"], small["id"]))
    return out


def table_lines(r: dict) -> list[str]:
    """The Markdown the harness appends to its table."""
    f = r.get("fairness")
    if not f:
        return []

    def change(name: str) -> str:
        before, after = f[f"{name}_before"]["median"], f[f"{name}_after"]["median"]
        return f"| {name.replace('_', ' ')} | {before:,.0f} | {after:,.0f} | {(after / before - 1) * 100:+.1f} % |"

    def runs(name: str) -> str:
        return ", ".join(f"{x:,.0f}" for x in f[name]["runs"])

    flood, explain = f["flood"], f["explain"]
    delays = flood["a_delay_ms"]
    started = (
        f"p50 {statistics.median(delays):,.0f} ms, max {max(delays):,.0f} ms"
        if delays
        else "none started"
    )
    lines = [
        "",
        "Fairness and create limits (before: fairness reserve 0 and create limits off; after: the "
        "defaults; same run, alternating, medians):",
        "",
        "| measure | before | after | change |",
        "|---|---|---|---|",
        change("dispatch").replace("| dispatch |", "| dispatch, callbacks/s |"),
        change("dispatch_50ms").replace(
            "| dispatch 50ms |", "| dispatch, 50 ms receiver, callbacks/s |"
        ),
        change("create").replace("| create |", "| create, tasks/s |"),
        "",
        f"Runs: dispatch before {runs('dispatch_before')}, after {runs('dispatch_after')}; 50 ms "
        f"before {runs('dispatch_50ms_before')}, after {runs('dispatch_50ms_after')}; create "
        f"before {runs('create_before')}, after {runs('create_after')}.",
        "",
        f"Team B flood: {flood['b_tasks']} tasks to a receiver hanging {flood['hang_s']:g} s "
        f"({flood['b_in_flight_when_a_created']} of them in flight), then team A's "
        f"{flood['a_tasks']} tasks through the API: {flood['a_started']} started, {started} from "
        "the start of the create request to the callback.",
        "",
        f"Claim with {explain['due_rows']:,} due rows ({explain['due_rows'] - 1:,} of one team), "
        "execution times over 5 runs: single team (index scan on tasks_due: "
        f"{explain['single_team']['uses_tasks_due']}) "
        f"{', '.join(explain['single_team']['execution_times'])}; skipping that team "
        f"(tasks_team_due: {explain['skipping_the_big_team']['uses_tasks_team_due']}) "
        f"{', '.join(explain['skipping_the_big_team']['execution_times'])}.",
    ]
    return lines
