"""bin/bench: AsyncQueue measured side by side with the bare-loop limit and its Python peers, in
one run, on one machine, against one PostgreSQL, with the same receiver. All traffic stays on
127.0.0.1, and every phase is bounded in count and time.

    python -m bench.harness [--quick] [--tiny] [--no-peers] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import requests

from asyncqueue import db
from asyncqueue.dev import embedded_pg
from bench import fairness
from bench import prune as prune_phase
from bench.loadgen import RawClient, post_load

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
WORKER_PROCESSES = 2
WORKER_THREADS = 16
# Run by the Python of the code under test: its migrations, a pro team and a key, as JSON. Through
# the command line, whose commands every revision has, so that --against works on older ones.
MAKE_TEAM = """
import json, os, subprocess, sys
from pathlib import Path
cli = str(Path(sys.executable).parent / "asyncqueue")
env = {**os.environ, "DATABASE_URL": sys.argv[1]}
def run(*args):
    return subprocess.run([cli, *args], env=env, check=True, capture_output=True, text=True).stdout
run("db", "migrate")
team = json.loads(run("teams", "create", "bench", "--plan", "pro", "--json"))
print(json.dumps([team["id"], json.loads(run("keys", "create", team["id"], "--json"))["key"]]))
"""


@dataclass(frozen=True)
class Sizes:
    create_seconds: float
    dispatch_tasks: int
    slow_tasks: int
    pickup_tasks: int
    delayed_tasks: int
    delay_horizon: int
    same_instant: int
    scale_rows: int
    peer_drain_limit: float
    repeats: int  # drains of ours and of the bare loop, alternating; the median is reported


FULL = Sizes(15, 20_000, 3_000, 300, 300, 30, 200, 1_000_000, 180, 3)
QUICK = Sizes(8, 3_000, 600, 60, 60, 8, 30, 0, 20, 3)
TINY = Sizes(2, 200, 50, 10, 10, 3, 5, 0, 10, 1)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def ledger_rate(ledger: dict[str, list[float]], ids: set[str] | None = None) -> float:
    """Callbacks per second as the receiver saw them: deliveries over the span from the first
    arrival to the last. The same definition for every system, so process start-up, enqueueing
    and the harness's own polling are outside every figure alike."""
    times = sorted(t for i, ts in ledger.items() if ids is None or i in ids for t in ts)
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


def median_run(results: list[dict]) -> dict:
    """The run with the median rate, with every run's rate beside it."""
    ordered = sorted(results, key=lambda x: x["callbacks_per_s"])
    return {**ordered[len(ordered) // 2], "runs": [x["callbacks_per_s"] for x in results]}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, IndexError):
            pass
    return total


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` (the postmaster's backends, gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(stat[1]) == parent:
                found.append(int(entry.name))
    return found


@dataclass
class Bench:
    sizes: Sizes
    workdir: Path
    results: dict = field(default_factory=dict)
    bin_dir: Path = BIN  # whose gunicorn, worker and migrations are measured
    code_root: Path = ROOT
    all_workers: list = field(default_factory=list)

    # -- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        self.pg = embedded_pg.ensure_running(self.workdir / "pgdata", fast_unsafe=True)
        self.start_receiver()
        self.start_database("bench")
        self.start_web()

    def start_receiver(self) -> None:
        self.receiver_port = embedded_pg._free_port()
        self.receiver = self.spawn(
            [sys.executable, "-m", "bench.receiver", str(self.receiver_port)], cwd=ROOT
        )

    def start_database(self, name: str) -> None:
        """A database of its own, migrated, with a pro team and its key, all by the code under
        test (`bin_dir`'s Python), so that another revision gets its own schema."""
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        self.url = self.pg.url_for(name)
        python = sys.executable if self.bin_dir == BIN else str(self.bin_dir / "python")
        made = subprocess.run(
            [python, "-c", MAKE_TEAM, self.url], capture_output=True, text=True, cwd=self.code_root
        )
        if made.returncode != 0:
            raise RuntimeError(f"migrating and making a team failed:\n{made.stderr}")
        self.team_id, self.key = json.loads(made.stdout.strip().splitlines()[-1])

    def start_web(self) -> None:
        self.web_port = embedded_pg._free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "PORT": str(self.web_port),
            "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
            "ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS": "true",
            "ASYNCQUEUE_DB_POOL_SIZE": "4",
            "ASYNCQUEUE_RETENTION_DAYS": "0",  # workers do not prune; bench/prune.py measures it
            "ASYNCQUEUE_CREATE_RATE": "pro=1000000",  # limiter on, never refusing the bench
        }
        self.web = self.spawn(
            [str(self.bin_dir / "asyncqueue"), "web"],
            env=self.env,
        )
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["X-API-Key"] = self.key
        self.wait_http(f"http://127.0.0.1:{self.web_port}/healthz")
        self.wait_http(self.receiver_url("/__reset"), method="post")

    def spawn(self, args, env=None, cwd=None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            args,
            env=env or os.environ,
            cwd=cwd or self.code_root,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=kwargs.pop("stderr", None),
            **kwargs,
        )

    def wait_http(self, url, method="get", timeout=30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                getattr(self.http, method)(url, timeout=1)
                return
            except requests.RequestException:  # not up yet, or slow to answer on a busy machine
                time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer")

    def stop(self) -> None:
        self.stop_processes(self.all_workers)
        self.stop_processes(
            [p for p in (getattr(self, "web", None), getattr(self, "receiver", None)) if p]
        )
        self.pg.destroy()

    def postmaster_pid(self) -> int:
        return int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])

    def receiver_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.receiver_port}{path}"

    def ledger(self) -> dict[str, list[float]]:
        return self.http.get(self.receiver_url("/__ledger"), timeout=30).json()

    def reset_ledger(self) -> None:
        self.http.post(self.receiver_url("/__reset"), timeout=10)

    def sql(self, query: str, params=None):
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    # -- AsyncQueue -------------------------------------------------------------------------

    def start_workers(self) -> list[subprocess.Popen]:
        env = {**self.env, "ASYNCQUEUE_WORKER_CONCURRENCY": str(WORKER_THREADS)}
        workers = [
            self.spawn([str(self.bin_dir / "asyncqueue"), "worker"], env=env)
            for _ in range(WORKER_PROCESSES)
        ]
        self.all_workers += workers  # stopped by stop() too, should a measurement fail
        time.sleep(1.5)  # connected and listening
        return workers

    def stop_processes(self, procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def measure_create(self, seconds: float | None = None) -> dict:
        body = {
            "callbackUrl": self.receiver_url("/fast"),
            "body": "x" * 160,
            "delayUntil": "2099-01-01T00:00:00Z",
        }
        body["body"] = "x" * (200 - len(json.dumps(body)) + 160)  # a 200-byte request body
        body["delayUntil"] = (datetime.now(UTC) + timedelta(days=300)).isoformat()
        web = child_pids(self.web.pid)
        database = child_pids(self.postmaster_pid())
        cpu_before = (cpu_seconds(web), cpu_seconds(database), time.process_time())
        results, elapsed = post_load(
            "127.0.0.1",
            self.web_port,
            "/v1/tasks",
            {"X-API-Key": self.key},
            body,
            connections=16,
            seconds=seconds or self.sizes.create_seconds,
        )
        cpu_after = (cpu_seconds(web), cpu_seconds(database), time.process_time())
        # Where the machine's CPU went, per request: web processes, PostgreSQL's backends (those
        # open before the load; the web pools open theirs at start-up), the load generator.
        cpu_ms = [
            (a - b) / max(len(results), 1) * 1000
            for a, b in zip(cpu_after, cpu_before, strict=True)
        ]
        latencies = [s for _, s in results]
        non_2xx = sum(1 for code, _ in results if not 200 <= code < 300)
        rows = self.sql("SELECT count(*) FROM tasks WHERE status = 'delayed'")[0][0]
        self.sql("DELETE FROM tasks")
        return {
            "tasks_per_s": len(results) / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "requests": len(results),
            "non_2xx": non_2xx,
            "statuses": {str(k): v for k, v in sorted(Counter(c for c, _ in results).items())},
            "rows": rows,
            "cpu_ms_per_request": dict(
                zip(("web", "postgres", "load_generator"), cpu_ms, strict=True)
            ),
        }

    def insert_due(self, n: int, path: str) -> str:
        """Insert n due tasks calling `path`; returns their callback URL, unique to this batch."""
        url = self.receiver_url(f"{path}?batch={uuid.uuid4().hex}")
        self.sql(
            "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
            "max_retries, retry_backoff, next_run_at) SELECT %s, 'pending', %s, 'POST', 120, 30, 3, "
            "'exponential', now() FROM generate_series(1, %s)",
            (self.team_id, url, n),
        )
        return url

    def measure_dispatch(self, n: int, path: str) -> dict:
        self.reset_ledger()
        workers = self.start_workers()
        cpu_before = cpu_seconds([w.pid for w in workers])
        started = time.perf_counter()
        callback = self.insert_due(n, path)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            left = self.sql("SELECT count(*) FROM tasks WHERE status IN ('pending', 'processing')")[
                0
            ][0]
            if left == 0:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds([w.pid for w in workers]) - cpu_before
        self.stop_processes(workers)
        ids = {
            str(r[0]) for r in self.sql("SELECT id FROM tasks WHERE callback_url = %s", (callback,))
        }
        ledger = self.ledger()
        self.sql("DELETE FROM tasks WHERE callback_url = %s", (callback,))
        return {
            "callbacks_per_s": ledger_rate(ledger),
            "seconds": elapsed,
            "tasks": n,
            "lost": len(ids - set(ledger)),
            "duplicates": sum(len(v) - 1 for v in ledger.values()),
            "cpu_s_per_1000": cpu / n * 1000,
        }

    def measure_pickup(self, n: int) -> dict:
        self.reset_ledger()
        workers = self.start_workers()
        rng = random.Random(1)
        sent: dict[str, float] = {}
        answered: dict[str, float] = {}
        client = RawClient("127.0.0.1", self.web_port, {"X-API-Key": self.key})
        for _ in range(n):
            t0 = time.time()
            status, answer = client.post_json(
                "/v1/tasks", {"callbackUrl": self.receiver_url("/fast")}
            )
            assert status == 201, answer
            task_id = answer["task"]["id"]
            sent[task_id], answered[task_id] = t0, time.time()
            time.sleep(rng.uniform(0.05, 0.1))  # at most 20 a second, at random
        client.close()
        time.sleep(1)
        self.stop_processes(workers)
        # From the start of the create request (the measure), and from its 201 response: the
        # queue's own share, without the API request (peers enqueue straight into the database).
        return {**self._latencies(sent), "after_201": self._latencies(answered)}

    def _latencies(self, sent: dict[str, float]) -> dict:
        """Milliseconds from each task's time in `sent` to its first arrival at the receiver."""
        ledger = self.ledger()
        latencies = [(ledger[i][0] - t) * 1000 for i, t in sent.items() if i in ledger]
        return {
            "tasks": len(sent),
            "received": len(latencies),
            "early": sum(1 for x in latencies if x < 0),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies, default=float("nan")),
        }

    def measure_delays(self) -> dict:
        self.reset_ledger()
        workers = self.start_workers()
        rng = random.Random(2)
        due: dict[str, float] = {}
        now = time.time()
        same = now + self.sizes.delay_horizon / 2
        plans = [
            now + rng.uniform(1, self.sizes.delay_horizon) for _ in range(self.sizes.delayed_tasks)
        ]
        plans += [same] * self.sizes.same_instant
        for when in plans:
            iso = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
            r = self.http.post(
                f"http://127.0.0.1:{self.web_port}/v1/tasks",
                json={"callbackUrl": self.receiver_url("/fast"), "delayUntil": iso},
                timeout=10,
            )
            due[r.json()["task"]["id"]] = datetime.fromisoformat(iso).timestamp()
        time.sleep(max(0.0, max(plans) - time.time()) + 2)
        self.stop_processes(workers)
        return self._latencies(due)

    # -- the limit --------------------------------------------------------------------------

    def measure_bare_loop(self, n: int, path: str = "/fast") -> dict:
        self.reset_ledger()
        self.sql("DROP TABLE IF EXISTS bare_jobs")
        self.sql(
            "CREATE TABLE bare_jobs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "state text NOT NULL DEFAULT 'due')"
        )
        self.sql("CREATE INDEX bare_jobs_due ON bare_jobs (id) WHERE state = 'due'")
        self.sql(
            "INSERT INTO bare_jobs SELECT gen_random_uuid(), 'due' FROM generate_series(1, %s)",
            (n,),
        )
        self.sql("ANALYZE bare_jobs")
        started = time.perf_counter()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = [
            self.spawn(
                [
                    sys.executable,
                    "-m",
                    "bench.bare_loop",
                    self.url,
                    self.receiver_url(path),
                    str(WORKER_THREADS),
                ]
            )
            for _ in range(WORKER_PROCESSES)
        ]
        for p in procs:
            p.wait(timeout=600)
        elapsed = time.perf_counter() - started
        # The loops have exited and been waited for: their CPU is in the children's usage.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (children.ru_utime + children.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        ledger = self.ledger()
        self.sql("DROP TABLE bare_jobs")
        return {
            "callbacks_per_s": ledger_rate(ledger),
            "seconds": elapsed,
            "tasks": n,
            "received": len(ledger),
            "duplicates": sum(len(v) - 1 for v in ledger.values()),
            "cpu_s_per_1000": cpu / n * 1000,
        }

    def measure_raw_insert(self, seconds: float) -> dict:
        """Single-row INSERTs through psycopg from 16 threads: the database's own ceiling."""
        import threading

        count = [0]
        stop = time.monotonic() + seconds

        def insert():
            with psycopg.connect(self.url, autocommit=True) as conn:
                while time.monotonic() < stop:
                    conn.execute(
                        "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, "
                        "timeout, max_retries, retry_backoff, body, next_run_at) VALUES (%s, "
                        "'delayed', 'http://127.0.0.1/x', 'POST', 30, 30, 3, 'exponential', %s, "
                        "now() + interval '300 days')",
                        (self.team_id, "x" * 160),
                    )
                    count[0] += 1

        threads = [threading.Thread(target=insert) for _ in range(16)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        self.sql("DELETE FROM tasks")
        return {"inserts_per_s": count[0] / elapsed}

    # -- peers ------------------------------------------------------------------------------

    def peer(self, system: str) -> dict:
        if not PEER_PYTHON.exists():
            return {"skipped": "bench environment missing (bin/bench installs it)"}
        dsn = self.pg.url_for(f"peer_{system}")
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE peer_{system}")
        peer = [str(PEER_PYTHON), str(ROOT / "bench" / "peers" / "peer.py"), system, dsn]
        subprocess.run([*peer, "install"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        out = {}
        enqueuer = subprocess.Popen(
            [*peer, "enqueue"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )

        def enqueue(request: dict) -> dict:
            enqueuer.stdin.write(json.dumps(request) + "\n")
            enqueuer.stdin.flush()
            return json.loads(enqueuer.stdout.readline())

        def workers(path: str):
            procs = [
                self.spawn(
                    [*peer, "work", self.receiver_url(path), str(WORKER_THREADS)],
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(WORKER_PROCESSES)
            ]
            time.sleep(2)
            return procs

        def drain(n: int, path: str) -> dict:
            self.reset_ledger()
            procs = workers(path)
            cpu_before = cpu_seconds([p.pid for p in procs])
            ids = [uuid.uuid4().hex for _ in range(n)]
            started = time.perf_counter()
            for i in range(0, n, 1000):
                enqueue({"batch": ids[i : i + 1000]})
            # Bounded: a peer that stalls is reported with what it delivered in the time.
            deadline = time.monotonic() + self.sizes.peer_drain_limit
            while time.monotonic() < deadline and len(self.ledger()) < n:
                if all(p.poll() is not None for p in procs):
                    raise RuntimeError(f"every {system} worker exited")
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds([p.pid for p in procs]) - cpu_before
            self.stop_processes(procs)
            ledger = self.ledger()
            delivered = len(set(ids) & set(ledger))
            return {
                # A drain that did not finish counts what arrived over the whole wait.
                "callbacks_per_s": ledger_rate(ledger, set(ids))
                if delivered == n
                else delivered / elapsed,
                "seconds": elapsed,
                "tasks": n,
                "delivered": delivered,
                "finished": delivered == n,
                "duplicates": sum(len(v) - 1 for v in ledger.values()),
                "cpu_s_per_1000": cpu / max(delivered, 1) * 1000,
            }

        try:
            out["dispatch"] = drain(self.sizes.dispatch_tasks, "/fast")
            out["dispatch_50ms"] = drain(self.sizes.slow_tasks, "/slow")
            self.reset_ledger()
            procs = workers("/fast")
            rng = random.Random(1)
            sent = {}
            for _ in range(self.sizes.pickup_tasks):
                job_id = uuid.uuid4().hex
                sent[job_id] = enqueue({"id": job_id})["t"]
                time.sleep(rng.uniform(0.05, 0.1))
            time.sleep(1)
            out["pickup"] = self._latencies(sent)
            self.reset_ledger()
            rng = random.Random(2)
            due = {}
            now = time.time()
            same = now + self.sizes.delay_horizon / 2
            plans = [
                now + rng.uniform(1, self.sizes.delay_horizon)
                for _ in range(self.sizes.delayed_tasks)
            ] + [same] * self.sizes.same_instant
            for when in plans:
                job_id = uuid.uuid4().hex
                t = enqueue({"id": job_id, "delay": when - time.time()})["t"]
                due[job_id] = when if when > t else t
            time.sleep(max(0.0, max(plans) - time.time()) + 2)
            out["delays"] = self._latencies(due)
            self.stop_processes(procs)
        finally:
            enqueuer.stdin.close()
            enqueuer.wait(timeout=30)
        return out

    # -- at scale ---------------------------------------------------------------------------

    def fill_finished(self, rows: int) -> None:
        log(f"inserting {rows:,} finished tasks")
        for start in range(0, rows, 250_000):
            self.sql(
                "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout, "
                "max_retries, retry_backoff, result, created_at, started_at, completed_at) "
                "SELECT %s, 'completed', 'http://127.0.0.1/x', 'POST', 30, 30, 3, 'exponential', "
                "'{\"statusCode\": 200}', now() - make_interval(days => 40, secs => g), "
                "now() - interval '40 days', now() - interval '40 days' "
                "FROM generate_series(%s::int, %s::int) g",
                (self.team_id, start + 1, min(rows, start + 250_000)),
            )
        self.sql("VACUUM ANALYZE tasks")

    def measure_list(self, n: int = 200) -> dict:
        url = f"http://127.0.0.1:{self.web_port}/v1/tasks?limit=100"
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            r = self.http.get(url + f"&offset={i * 100}", timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200
        return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}

    def explain_claim(self, runs: int = 5) -> str:
        """EXPLAIN (ANALYZE, BUFFERS) of the claim, run `runs` times (each rolled back); the
        last plan, with every run's execution time (the first pays for cold buffers)."""
        callback = self.insert_due(100, "/fast")
        query = db.query("task_claim")
        times = []
        with psycopg.connect(self.url) as conn:
            for _ in range(runs):
                rows = conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) " + query,
                    {"limit": 16, "grace": 10, "worker": "explain"},
                ).fetchall()
                conn.rollback()
                times += [r[0].split(":")[1].strip() for r in rows if "Execution Time" in r[0]]
        self.sql("DELETE FROM tasks WHERE callback_url = %s", (callback,))
        plan = "\n".join(r[0] for r in rows)
        return f"{plan}\nExecution times over {runs} runs: {', '.join(times)}"


def run(args) -> dict:
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    bench = Bench(sizes, Path(tempfile.mkdtemp(prefix="asyncqueue-bench-")))
    bench.start()
    r = bench.results
    r["mode"] = "tiny" if args.tiny else "quick" if args.quick else "full"
    r["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        log("create")
        bench.measure_create(seconds=1.0)  # warm-up: pools, prepared statements, lazy imports
        creates = [bench.measure_create() for _ in range(sizes.repeats)]
        r["create"] = {
            **sorted(creates, key=lambda x: x["tasks_per_s"])[len(creates) // 2],
            "runs": [x["tasks_per_s"] for x in creates],
        }
        log("raw insert")
        r["raw_insert"] = bench.measure_raw_insert(min(5.0, sizes.create_seconds))
        # Ours and the bare loop alternate, each figure the median run: on a shared machine one
        # drain can be a quarter faster or slower than the next.
        runs: dict[str, list[dict]] = {}
        for i in range(sizes.repeats):
            for name, measure in (
                ("dispatch", lambda: bench.measure_dispatch(sizes.dispatch_tasks, "/fast")),
                ("bare_loop", lambda: bench.measure_bare_loop(sizes.dispatch_tasks)),
                ("dispatch_50ms", lambda: bench.measure_dispatch(sizes.slow_tasks, "/slow")),
                ("bare_loop_50ms", lambda: bench.measure_bare_loop(sizes.slow_tasks, "/slow")),
            ):
                log(f"{name.replace('_', ' ')} ({i + 1} of {sizes.repeats})")
                runs.setdefault(name, []).append(measure())
        for name, results in runs.items():
            r[name] = median_run(results)
        log("pickup")
        r["pickup"] = bench.measure_pickup(sizes.pickup_tasks)
        log("delays")
        r["delays"] = bench.measure_delays()
        log("fairness: before and after, team B's flood, the claim's plans")
        r["fairness"] = fairness.measure(bench)
        if not args.no_peers:
            for system in ("procrastinate", "pgqueuer"):
                log(system)
                r[system] = bench.peer(system)
        if sizes.scale_rows:
            bench.fill_finished(sizes.scale_rows)
            log("at scale: dispatch, pickup, list, explain")
            r["scale"] = {
                "rows": sizes.scale_rows,
                "dispatch": median_run(
                    [
                        bench.measure_dispatch(sizes.dispatch_tasks, "/fast")
                        for _ in range(sizes.repeats)
                    ]
                ),
                "pickup": bench.measure_pickup(sizes.pickup_tasks),
                "list": bench.measure_list(),
                "explain_claim": bench.explain_claim(),
            }
        log("retention")
        r["prune"] = prune_phase.measure(bench, sizes)
    finally:
        bench.stop()
    return r


def table(r: dict) -> str:
    """The results as a Markdown table, with every ratio to the limit and to each peer."""
    lines = [
        "| measure | AsyncQueue | bare loop / limit | Procrastinate | PgQueuer | vs limit | vs Procrastinate | vs PgQueuer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pro, pgq = r.get("procrastinate", {}), r.get("pgqueuer", {})

    def get(d, *path):
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return float("nan")
            d = d[p]
        return d

    def row(name, ours, limit, p1, p2, fmt="{:,.0f}", higher_better=True):
        def f(x):
            return fmt.format(x) if x == x else "—"

        def rt(a, b):
            if not (a == a and b == b) or not b:
                return "—"
            return f"{a / b:.2f}×" if higher_better else f"{b / a:.2f}× (lower is better)"

        lines.append(
            f"| {name} | {f(ours)} | {f(limit)} | {f(p1)} | {f(p2)} | {rt(ours, limit)} | "
            f"{rt(ours, p1)} | {rt(ours, p2)} |"
        )

    c = r["create"]
    row(
        "create, tasks/s (16 keep-alive clients)",
        c["tasks_per_s"],
        get(r, "raw_insert", "inserts_per_s"),
        float("nan"),
        float("nan"),
    )
    row("create p50 / p99, ms", c["p50_ms"], float("nan"), float("nan"), float("nan"), "{:.1f}")
    lines[-1] = lines[-1].replace(
        f"| {c['p50_ms']:.1f} |", f"| {c['p50_ms']:.1f} / {c['p99_ms']:.1f} |"
    )
    row(
        "dispatch, callbacks/s",
        r["dispatch"]["callbacks_per_s"],
        r["bare_loop"]["callbacks_per_s"],
        get(pro, "dispatch", "callbacks_per_s"),
        get(pgq, "dispatch", "callbacks_per_s"),
    )
    row(
        "dispatch CPU s / 1,000 callbacks",
        r["dispatch"]["cpu_s_per_1000"],
        get(r, "bare_loop", "cpu_s_per_1000"),
        get(pro, "dispatch", "cpu_s_per_1000"),
        get(pgq, "dispatch", "cpu_s_per_1000"),
        "{:.2f}",
        higher_better=False,
    )
    row(
        "dispatch, 50 ms receiver, callbacks/s",
        r["dispatch_50ms"]["callbacks_per_s"],
        r["bare_loop_50ms"]["callbacks_per_s"],
        get(pro, "dispatch_50ms", "callbacks_per_s"),
        get(pgq, "dispatch_50ms", "callbacks_per_s"),
    )
    for key, label in (("pickup", "pickup"), ("delays", "delay lateness")):
        for stat in ("p50_ms", "p99_ms", "max_ms"):
            row(
                f"{label} {stat[:-3]}, ms",
                r[key][stat],
                float("nan"),
                get(pro, key, stat),
                get(pgq, key, stat),
                "{:.1f}",
                higher_better=False,
            )
    after = r["pickup"]["after_201"]
    lines.append(
        f"| pickup from the 201 response p50 / p99, ms | {after['p50_ms']:.1f} / "
        f"{after['p99_ms']:.1f} | — | — | — | — | — | — |"
    )
    row(
        "delays run early (must be 0)",
        r["delays"]["early"],
        float("nan"),
        get(pro, "delays", "early"),
        get(pgq, "delays", "early"),
        "{:.0f}",
    )
    lines.append("")

    def rates(name):
        return ", ".join(f"{x:,.0f}" for x in r[name].get("runs", []))

    split = c["cpu_ms_per_request"]
    lines.append(
        "Create runs (median reported): "
        + ", ".join(f"{x:,.0f}" for x in c.get("runs", []))
        + f" tasks/s; CPU per request in the median run: web {split['web']:.2f} ms, PostgreSQL "
        f"{split['postgres']:.2f} ms, load generator {split['load_generator']:.2f} ms."
    )
    lines.append("")
    lines.append(
        f"Drains (median reported): AsyncQueue {rates('dispatch')}; bare loop {rates('bare_loop')}; "
        f"with the 50 ms receiver, AsyncQueue {rates('dispatch_50ms')}; bare loop "
        f"{rates('bare_loop_50ms')} callbacks/s."
    )
    lines.append("")
    lines.append(
        f"create: {c['requests']:,} requests answered, {c['non_2xx']} non-2xx, "
        f"{c['rows']:,} rows stored. dispatch: {r['dispatch']['tasks']:,} tasks, lost "
        f"{r['dispatch']['lost']}, duplicates {r['dispatch']['duplicates']}. "
        f"With the 50 ms receiver the bound is {WORKER_PROCESSES} processes × {WORKER_THREADS} "
        f"slots / 0.05 s = {WORKER_PROCESSES * WORKER_THREADS / 0.05:,.0f}/s; the limit column "
        "there is the bare loop's measured rate. Drain rates are deliveries over the span from "
        "the first arrival at the receiver to the last, for every system."
    )
    lines += fairness.table_lines(r)
    if "scale" in r:
        s = r["scale"]
        lines += [
            "",
            f"With {s['rows']:,} finished tasks in the table:",
            "",
            "| measure | empty table | at scale | change |",
            "|---|---|---|---|",
            f"| dispatch, callbacks/s | {r['dispatch']['callbacks_per_s']:,.0f} | "
            f"{s['dispatch']['callbacks_per_s']:,.0f} | "
            f"{(s['dispatch']['callbacks_per_s'] / r['dispatch']['callbacks_per_s'] - 1) * 100:+.0f} % |",
            f"| pickup p50 / p99, ms | {r['pickup']['p50_ms']:.1f} / {r['pickup']['p99_ms']:.1f} | "
            f"{s['pickup']['p50_ms']:.1f} / {s['pickup']['p99_ms']:.1f} | |",
            f"| GET /v1/tasks p50 / p99, ms | | {s['list']['p50_ms']:.1f} / {s['list']['p99_ms']:.1f} | |",
            "",
            "Claim query plan:",
            "",
            "```",
            s["explain_claim"],
            "```",
        ]
    lines += prune_phase.table(r)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bin/bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, under 3 minutes")
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes (used by bin/test)")
    parser.add_argument("--no-peers", action="store_true", help="skip Procrastinate and PgQueuer")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    started = time.monotonic()
    results = run(args)
    results["seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{results['mode']}.json").write_text(json.dumps(results, indent=2, default=str))
    markdown = table(results)
    (out / f"{results['mode']}.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\n({results['mode']} run, {results['seconds']} s; results in {out})")


if __name__ == "__main__":
    main()
