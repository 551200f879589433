"""The distribution works anywhere: an sdist is built from the tree, a wheel from that sdist, the
wheel installed into a throwaway venv outside the tree, and from another folder the Procfile's
release, web and worker lines run a task end to end. Nothing is imported from the repository."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest
import requests

from tests.conftest import _with_dbname
from tests.stack import free_port
from tests.support import report, wait_for

ROOT = Path(__file__).resolve().parents[2]
# Local state, caches and build output; everything else in the tree is source.
NOT_SOURCE = (".git", ".venv*", ".asyncqueue", "*.egg-info", "build", "dist", "__pycache__")
NOT_SOURCE += (".pytest_cache", ".ruff_cache", "results", ".bench-against")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(
        (name.strip(), command.strip())
        for name, _, command in (line.partition(":") for line in lines if line.strip())
    )


def _clean_env(venv: Path, **extra) -> dict[str, str]:
    """The environment a platform gives: the venv's bin first on PATH, nothing of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ASYNCQUEUE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _run(args, cwd: Path, env: dict, timeout: float = 300) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, seconds taken) for the wheel built from the sdist, installed outside the tree."""
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    venv, dist = base / "venv", base / "dist"
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", str(venv)], base, os.environ)
    py, env = str(venv / "bin" / "python"), _clean_env(venv)
    pip = [py, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # setuptools builds the sdist (Python 3.12+ venvs do not come with it; pip's cache has it).
    _run([*pip, "install", "setuptools>=61"], base, env)
    # From a copy, as from a fresh clone: without a VCS plugin, setuptools would also pack the
    # files listed in a stale asyncqueue.egg-info/SOURCES.txt of the working tree.
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    build_sdist = f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"
    sdist = dist / _run([py, "-c", build_sdist], source, env).strip().splitlines()[-1]
    _run([*pip, "wheel", "--no-deps", "-w", str(dist), str(sdist)], base, env)
    (wheel,) = dist.glob("asyncqueue-*.whl")
    _run([*pip, "install", str(wheel)], base, env)
    return venv, sdist, wheel, time.monotonic() - started


def _source_files(pattern_root: str, pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / pattern_root).rglob(pattern)}


def test_sdist_and_wheel_carry_the_code_and_the_sql(installed):
    _, sdist, wheel, seconds = installed
    report(f"wheel: fresh venv, sdist, wheel from the sdist and install took {seconds:.1f} s")
    sql = _source_files("sql", "*.sql")
    code = {p for p in _source_files("asyncqueue", "*.py") if "__pycache__" not in p}
    assert any(p.startswith("sql/migrations/") for p in sql) and "sql/queries/tasks.sql" in sql
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert sql | code <= in_sdist
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
    assert {"asyncqueue/" + p for p in sql} <= in_wheel  # sql/ ships as asyncqueue/sql/
    assert code <= in_wheel, "a module of the tree is missing from the wheel"


def test_installed_package_runs_from_anywhere(installed, pg_admin_url, receiver, tmp_path):
    venv = installed[0]
    elsewhere = tmp_path / "elsewhere"  # neither the repository nor the venv
    elsewhere.mkdir()
    name = f"aq_wheel_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # empty: the wheel's own migrations build it
    port = free_port()
    env = _clean_env(
        venv,
        DATABASE_URL=_with_dbname(pg_admin_url, name),
        PORT=str(port),
        WEB_CONCURRENCY="1",
        ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="true",
        ASYNCQUEUE_LOG_LEVEL="WARNING",
    )
    processes: list[subprocess.Popen] = []
    try:
        where = json.loads(
            _run(
                [
                    "python",
                    "-c",
                    "import asyncqueue, json, sys; print(json.dumps([asyncqueue.__file__, sys.path]))",
                ],
                elsewhere,
                env,
            )
        )
        assert Path(where[0]).is_relative_to(venv), where[0]
        assert not any(p and Path(p).resolve().is_relative_to(ROOT) for p in where[1]), where[1]
        assert _run(["asyncqueue", "--version"], elsewhere, env).strip() == (
            f"asyncqueue, version {VERSION}"
        )

        commands = procfile()
        assert {"web", "worker", "release"} <= commands.keys()
        release = json.loads(_run(["bash", "-c", commands["release"] + " --json"], elsewhere, env))
        migrations = sorted(
            p.name.removesuffix(".sql") for p in (ROOT / "sql/migrations").glob("*.sql")
        )
        assert release == {"applied": migrations}
        team = json.loads(
            _run(
                ["asyncqueue", "teams", "create", "acme", "--plan", "pro", "--json"], elsewhere, env
            )
        )
        key = json.loads(_run(["asyncqueue", "keys", "create", "acme", "--json"], elsewhere, env))
        assert key["teamId"] == team["id"]

        for kind in ("web", "worker"):
            log = open(tmp_path / f"{kind}.log", "w")  # noqa: SIM115
            processes.append(
                subprocess.Popen(
                    ["bash", "-c", commands[kind]],
                    cwd=elsewhere,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        http = requests.Session()
        http.trust_env = False
        base = f"http://127.0.0.1:{port}"

        def ready():
            for proc in processes:
                assert proc.poll() is None, (tmp_path / "web.log").read_text()
            try:
                return http.get(base + "/readyz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, timeout=60, interval=0.2, message="the Procfile's web to be ready")
        created = http.post(
            base + "/v1/tasks",
            json={"callbackUrl": receiver.url("/ok?wheel"), "body": "from the wheel"},
            headers={"Authorization": f"Bearer {key['key']}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["task"]["id"]

        def finished():
            task = http.get(
                f"{base}/v1/tasks/{task_id}", headers={"X-API-Key": key["key"]}, timeout=10
            ).json()["task"]
            return task if task["status"] not in ("pending", "processing") else None

        task = wait_for(finished, timeout=60, interval=0.1, message="the task to finish")
        assert task["status"] == "completed", task
        assert [c.body for c in receiver.calls("/ok?wheel")] == [b"from the wheel"]
    finally:
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
