"""The plain claim's time with its plan kept (how the worker runs it), planned afresh on every run
(how it ran until 836ad1d, with plan_cache_mode=force_custom_plan), and made again on every run
(DISCARD PLANS sent with it: what a worker's claims cost when its plans are replanned each time,
say one pickup every 10 s or more), alternating, on one embedded PostgreSQL of its own.

    .venv/bin/python -m bench.claim_plans [--claims N]

Each claim finds one due task among 20,000 finished ones (as at a pickup), on a worker-configured
connection; the figure is the median time of the claim statement, seen from the client.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from asyncqueue import db
from asyncqueue.dev import embedded_pg
from asyncqueue.worker.dispatcher import claim_rows
from asyncqueue.worker.fairness import ClaimPlan
from asyncqueue.worker.process import pool_connect_kwargs, prepare_only_when_asked
from tests.support import make_team

FINISHED = 20_000
INSERT = """INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout,
                               max_retries, retry_backoff, next_run_at, completed_at)
SELECT %(team)s, %(status)s, 'http://127.0.0.1/x', 'POST', 60, 10, 3, 'linear',
       CASE WHEN %(status)s = 'pending' THEN now() END,
       CASE WHEN %(status)s = 'completed' THEN now() END
FROM generate_series(1, %(n)s)"""
CLAIMER = {"grace": 25.0, "worker": "bench:1"}


def worker_connection(url: str, mode: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, **pool_connect_kwargs(url))
    prepare_only_when_asked(conn)
    if mode == "afresh":
        conn.execute("SET plan_cache_mode = force_custom_plan")
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=1000)
    args = parser.parse_args()
    server = embedded_pg.ensure_running(
        Path(tempfile.mkdtemp(prefix="asyncqueue-claim-plans-")) / "pgdata", fast_unsafe=True
    )
    try:
        db.migrate(server.url)
        with psycopg.connect(server.url, autocommit=True, row_factory=dict_row) as admin:
            team, _ = make_team(admin)
            admin.execute(INSERT, {"team": team["id"], "status": "completed", "n": FINISHED})
            admin.execute("VACUUM ANALYZE tasks")
            modes = ("kept", "afresh", "made again")
            conns = {mode: worker_connection(server.url, mode) for mode in modes}
            times: dict[str, list[float]] = {mode: [] for mode in conns}
            for i in range(args.claims):
                for mode in modes if i % 2 else reversed(modes):  # alternate which goes first
                    admin.execute(INSERT, {"team": team["id"], "status": "pending", "n": 1})
                    started = time.perf_counter()
                    replan = mode == "made again"
                    rows = claim_rows(conns[mode], ClaimPlan(4), **CLAIMER, replan=replan)
                    times[mode].append(time.perf_counter() - started)
                    assert len(rows) == 1
                    admin.execute(
                        "UPDATE tasks SET status = 'completed', next_run_at = NULL, "
                        "claim_token = NULL, completed_at = now() WHERE id = %s",
                        (rows[0].id,),
                    )
            for mode, seconds in times.items():
                kept = seconds[len(seconds) // 10 :]  # the first claims make the plan
                print(
                    f"claim, plan {mode}: median {statistics.median(kept) * 1000:.3f} ms "
                    f"({len(kept)} claims)"
                )
            for conn in conns.values():
                conn.close()
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
