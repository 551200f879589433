"""The limit: a bare loop with no framework. THREADS threads each claim a few rows with
SKIP LOCKED, POST each with a requests.Session, and mark them done. Exits when the table is
empty. Same table shape, receiver and concurrency as AsyncQueue's run.

    bare_loop.py DSN RECEIVER_URL THREADS
"""

from __future__ import annotations

import sys
import threading

import psycopg
import requests

# The table is made by the harness with a partial index on the due rows, as any real queue
# would have: without it every claim scans the jobs already done.
CLAIM = """
WITH c AS (SELECT id FROM bare_jobs WHERE state = 'due' ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED)
UPDATE bare_jobs b SET state = 'running' FROM c WHERE b.id = c.id RETURNING b.id
"""


def work(dsn: str, url: str) -> None:
    session = requests.Session()
    session.trust_env = False
    with psycopg.connect(dsn, autocommit=True) as conn:
        while ids := [r[0] for r in conn.execute(CLAIM)]:
            for job_id in ids:
                session.post(
                    url, data=b"{}", headers={"X-AsyncQueue-Task-Id": str(job_id)}, timeout=30
                )
            conn.execute("UPDATE bare_jobs SET state = 'done' WHERE id = ANY(%s)", (ids,))


def main() -> None:
    dsn, url, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    workers = [threading.Thread(target=work, args=(dsn, url)) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


if __name__ == "__main__":
    main()
