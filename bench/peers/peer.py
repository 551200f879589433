"""Run a peer queue (Procrastinate or PgQueuer) doing AsyncQueue's work: each job makes one POST
with `requests` to the benchmark receiver, carrying its id in `X-AsyncQueue-Task-Id`.

Runs in the bench-only environment (.venv-bench), never in the project's.

    peer.py SYSTEM DSN install
    peer.py SYSTEM DSN work RECEIVER_URL CONCURRENCY
    peer.py SYSTEM DSN enqueue        # stdin: JSON lines {"id", "delay"}; stdout: {"id", "t"}
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import requests

_local = threading.local()
RECEIVER = {"url": ""}


def post(job_id: str) -> None:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False
    session.post(
        RECEIVER["url"], data=b"{}", headers={"X-AsyncQueue-Task-Id": job_id}, timeout=30
    ).raise_for_status()


# -- Procrastinate -------------------------------------------------------------------------------


def procrastinate_app(dsn: str):
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="post")
    async def post_task(job_id: str) -> None:
        await asyncio.to_thread(post, job_id)

    return app, post_task


async def procrastinate_main(dsn: str, command: str, args: list[str]) -> None:
    app, post_task = procrastinate_app(dsn)
    async with app.open_async():
        if command == "install":
            await app.schema_manager.apply_schema_async()
        elif command == "work":
            RECEIVER["url"] = args[0]
            # Threads for the POSTs: as many as the worker's concurrency (asyncio's default
            # executor would have min(32, CPUs + 4), which caps a 50 ms receiver's drain).
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(int(args[1])))
            await app.run_worker_async(
                concurrency=int(args[1]), wait=True, install_signal_handlers=True
            )
        elif command == "enqueue":
            await _enqueue_lines(
                lambda job_id, delay: post_task.configure(
                    schedule_in={"seconds": delay} if delay else None
                ).defer_async(job_id=job_id),
                batch=lambda ids: post_task.batch_defer_async(*[{"job_id": i} for i in ids]),
            )


# -- PgQueuer ------------------------------------------------------------------------------------


async def pgqueuer_main(dsn: str, command: str, args: list[str]) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    # asyncpg, PgQueuer's first driver: its psycopg driver waits for notifications while holding
    # the connection's lock (`notifies(timeout=1.0)`), so every query it makes can wait up to a
    # second; measured here, 3,000 jobs took 25 s, in bursts a second apart.
    conn = await asyncpg.connect(dsn)
    driver = AsyncpgDriver(conn)
    queries = Queries(driver)
    if command == "install":
        await queries.install()
    elif command == "work":
        RECEIVER["url"] = args[0]
        concurrency = int(args[1])
        manager = QueueManager(queries)

        # The same bound as AsyncQueue's workers: `concurrency` callbacks in flight per process,
        # and no more jobs taken than that.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(concurrency))

        @manager.entrypoint("post")
        async def post_job(job) -> None:
            await asyncio.to_thread(post, job.payload.decode())

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, manager.shutdown.set)
        await manager.run(
            batch_size=max(1, concurrency // 2),
            max_concurrent_tasks=max(2, concurrency),
            dequeue_timeout=timedelta(seconds=30),
        )
    elif command == "enqueue":

        async def one(job_id, delay):
            await queries.enqueue(
                "post", job_id.encode(), 0, timedelta(seconds=delay) if delay else None
            )

        async def batch(ids):
            await queries.enqueue(["post"] * len(ids), [i.encode() for i in ids], [0] * len(ids))

        await _enqueue_lines(one, batch)


async def _enqueue_lines(one, batch) -> None:
    """Enqueue what stdin asks for: {"id", "delay"} one at a time, or {"batch": [ids]} at once."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        request = json.loads(line)
        t = time.time()
        if "batch" in request:
            await batch(request["batch"])
        else:
            await one(request["id"], request.get("delay"))
        print(json.dumps({"id": request.get("id"), "t": t}), flush=True)


def main() -> None:
    system, dsn, command, *args = sys.argv[1:]
    runner = {"procrastinate": procrastinate_main, "pgqueuer": pgqueuer_main}[system]
    asyncio.run(runner(dsn, command, args))


if __name__ == "__main__":
    main()
