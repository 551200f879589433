"""End-to-end: the real gunicorn web process and real worker processes, a real PostgreSQL, and a
real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from asyncqueue import db
from tests.conftest import clone_database, drop_database
from tests.support import Receiver, make_team, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "timeout", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, database_url: str, log_dir: Path, **env):
        self.database_url = database_url
        self.log_dir = log_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "1",
            "ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS": "true",
            "ASYNCQUEUE_LEASE_GRACE": "1",
            "ASYNCQUEUE_SHUTDOWN_GRACE": "10",
            **env,
        }
        self.web: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.http = requests.Session()
        self.http.trust_env = False
        with db.connect(database_url, autocommit=True) as conn:
            self.team, self.key = make_team(conn, "e2e", "pro")
        self.http.headers["Authorization"] = f"Bearer {self.key}"

    def _spawn(self, name: str, args: list[str], **env) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        return subprocess.Popen(
            args,
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_web(self) -> None:
        self.web = self._spawn(
            "web",
            [
                str(BIN / "gunicorn"),
                "-c",
                "python:asyncqueue.gunicorn_config",
                "asyncqueue.api:create_app()",
            ],
        )
        wait_for(self._web_up, timeout=30, message="gunicorn to answer")

    def _web_up(self) -> bool:
        try:
            return self.http.get(self.url("/healthz"), timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def start_worker(self, **env) -> subprocess.Popen:
        worker = self._spawn("worker", [str(BIN / "asyncqueue"), "worker"], **env)
        self.workers.append(worker)
        return worker

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def create(self, **fields) -> dict:
        response = self.http.post(self.url("/v1/tasks"), json=fields, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()["task"]

    def get(self, task_id: str) -> dict:
        response = self.http.get(self.url(f"/v1/tasks/{task_id}"), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["task"]

    def wait_done(self, task_id: str, timeout: float = 20.0) -> dict:
        return wait_for(
            lambda: (t := self.get(task_id))["status"] in TERMINAL and t,
            timeout=timeout,
            interval=0.05,
            message=f"task {task_id} to finish",
        )

    def stop(self) -> None:
        for proc in [*self.workers, self.web]:
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in [*self.workers, self.web]:
            if proc:
                proc.wait()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def stack(pg_admin_url, template_db):
    """Web + one worker, shared by a module's tests (each uses its own receiver paths)."""
    name, url = clone_database(pg_admin_url, template_db)
    s = Stack(url, Path(tempfile.mkdtemp(prefix="asyncqueue-e2e-")))
    s.start_web()
    s.start_worker()
    yield s
    s.stop()
    drop_database(pg_admin_url, name)


@pytest.fixture
def own_stack(pg_admin_url, template_db):
    """Web only, on a database of its own; the test starts (and kills) its own workers."""
    name, url = clone_database(pg_admin_url, template_db)
    s = Stack(url, Path(tempfile.mkdtemp(prefix="asyncqueue-e2e-")))
    s.start_web()
    yield s
    s.stop()
    drop_database(pg_admin_url, name)
