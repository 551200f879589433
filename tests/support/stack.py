"""The real service as processes: gunicorn and `asyncqueue worker` against a test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from asyncqueue import db, domain
from tests.support import make_team, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
TERMINAL = set(domain.FINISHED)


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
            [str(BIN / "asyncqueue"), "web"],
        )
        wait_for(self._web_up, timeout=30, message="gunicorn to answer")

    def _web_up(self) -> bool:
        try:
            return self.http.get(self.url("/healthz"), timeout=1).status_code == 200
        except requests.RequestException:  # not up yet, or slow to answer on a busy machine
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
