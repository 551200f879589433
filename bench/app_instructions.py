"""Instructions per create in the API app, counted by valgrind (callgrind), for this checkout and
other exported revisions: a figure that the machine's noise does not move, where `bin/bench`'s
throughput moves by several per cent between runs.

    .venv/bin/python -m bench.app_instructions [DIR ...] [--creates N]

Each DIR is a checkout with its own .venv (this one when none is given; `bin/bench --against
REV` exports REV under .bench-against/<sha> with one). For each, a process creates tasks through
the WSGI app, straight, with no HTTP server or client around it, against one embedded PostgreSQL
(its own database per DIR, migrated by that revision), once with a few creates and once with N
more, under callgrind; the difference over N is the app's cost per create. It counts this
process only: PostgreSQL's work and gunicorn's are not in it. Prometheus runs in multiprocess
mode, as under gunicorn.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from asyncqueue.dev import embedded_pg

ROOT = Path(__file__).resolve().parents[1]
WARM = 100  # creates in both runs: imports, first connections and caches cost the same in each

# Run inside the revision's own interpreter, from its directory, with its own code.
CHILD = r"""
import io, json, os, sys, time
sys.path.insert(0, os.getcwd())
n, url = int(sys.argv[1]), sys.argv[2]
from asyncqueue import db
db.migrate(url)
from tests.support import make_team
with db.connect(url, autocommit=True) as conn:
    _, key = make_team(conn, f"instructions-{time.time_ns()}", "pro")
os.environ.update(DATABASE_URL=url, ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="true",
                  ASYNCQUEUE_LOG_LEVEL="WARNING", ASYNCQUEUE_CREATE_RATE=sys.argv[3])
from werkzeug.test import EnvironBuilder
from asyncqueue.api import create_app
app = create_app()
body = json.dumps({"callbackUrl": "http://127.0.0.1:9/ok", "onCompleteUrl": "http://127.0.0.1:9/done",
                   "headers": {"X-A": "b"}, "body": "{\"x\": 1}"}).encode()
template = EnvironBuilder(path="/v1/tasks", method="POST", data=body,
                          content_type="application/json", headers={"X-API-Key": key}).get_environ()
statuses = {}
def start_response(status, headers, exc_info=None):
    statuses[status] = statuses.get(status, 0) + 1
for _ in range(n):
    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO(body)
    for _chunk in app(environ, start_response):
        pass
print(json.dumps(statuses))
sys.stdout.flush()
os._exit(0)  # no teardown in the count
"""


def count(directory: Path, creates: int, url: str, create_rate: str) -> int:
    """Instructions callgrind collected for `creates` creates in `directory`'s code."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": scratch}
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={scratch}/callgrind.out",
                str(directory / ".venv/bin/python"),
                "-c",
                CHILD,
                str(creates),
                url,
                create_rate,
            ],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        sys.exit(f"{directory}: exit {out.returncode}\n{out.stderr[-2000:]}")
    if f'"201 CREATED": {creates}' not in out.stdout:
        sys.exit(f"{directory}: not every create answered 201: {out.stdout.strip()}")
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path, default=[ROOT])
    parser.add_argument("--creates", type=int, default=1000)
    # With create limits on, the count includes their sync thread, which runs five times a
    # second: under callgrind's slowdown that is many syncs per create, which a real process
    # spreads over hundreds of creates. "off" counts the create path alone.
    parser.add_argument("--create-rate", default="pro=1000000", help="ASYNCQUEUE_CREATE_RATE")
    args = parser.parse_args()
    server = embedded_pg.ensure_running(
        Path(tempfile.mkdtemp(prefix="asyncqueue-instructions-")) / "pgdata", fast_unsafe=True
    )
    try:
        for i, directory in enumerate(d.resolve() for d in args.dirs):
            url = server.url_for(f"instructions_{i}")
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE instructions_{i}")
            few = count(directory, WARM, url, args.create_rate)
            many = count(directory, WARM + args.creates, url, args.create_rate)
            per_create = (many - few) / args.creates
            print(f"{directory}: {per_create / 1e6:.3f} M instructions per create", flush=True)
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
