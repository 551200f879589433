"""The distribution works as platforms run it: an sdist is built from a copy of the tree, a wheel
from that sdist, the wheel installed into a throwaway venv, and the Procfile's release, web and
worker lines run a task end to end from the app's own folder (as Heroku, Dokku and honcho run
every process) and from another folder; and the README's honcho recipe, as written, serves a task.
Every process runs the installed package: the app folder's copy of the code refuses to import."""

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
from contextlib import contextmanager
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
    return venv, sdist, wheel, time.monotonic() - started, source


def _fresh_clone(into: Path) -> Path:
    """What a clone of the repository holds (the working tree, without local state)."""
    shutil.copytree(ROOT, into, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return into


def _poison(app: Path) -> None:
    """Make the app folder's own asyncqueue/ unimportable, so that a process importing it (and
    not the installed package) fails to start instead of running a second copy of the code."""
    with open(app / "asyncqueue" / "__init__.py", "a") as init:
        init.write(
            '\nraise ImportError("imported from the app folder, not the installed package")\n'
        )


def _source_files(pattern_root: str, pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / pattern_root).rglob(pattern)}


def test_sdist_and_wheel_carry_the_code_and_the_sql(installed):
    _, sdist, wheel, seconds, _ = installed
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


@contextmanager
def _database(pg_admin_url: str):
    """An empty database of its own: the migrations under test build it."""
    name = f"aq_wheel_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_dbname(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _processes():
    """Popen's of long-running processes in their own sessions, stopped however the test ends."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _spawn(command: str, cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _http(port: int) -> tuple[requests.Session, str]:
    http = requests.Session()
    http.trust_env = False
    return http, f"http://127.0.0.1:{port}"


def _wait_until_ready(port: int, running: list, logs: list[Path], timeout: float) -> None:
    http, base = _http(port)

    def ready():
        for proc in running:
            assert proc.poll() is None, "\n".join(log.read_text() for log in logs)
        try:
            return http.get(base + "/readyz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(ready, timeout=timeout, interval=0.2, message="the web process to be ready")


def _serve_one_task(port: int, key: str, receiver) -> None:
    """Create a task through the API and see it completed and delivered."""
    http, base = _http(port)
    path = f"/ok?{uuid.uuid4().hex}"
    created = http.post(
        base + "/v1/tasks",
        json={"callbackUrl": receiver.url(path), "body": "from the wheel"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["task"]["id"]

    def finished():
        task = http.get(
            f"{base}/v1/tasks/{task_id}", headers={"X-API-Key": key}, timeout=10
        ).json()["task"]
        return task if task["status"] not in ("pending", "processing") else None

    task = wait_for(finished, timeout=60, interval=0.1, message="the task to finish")
    assert task["status"] == "completed", task
    assert [c.body for c in receiver.calls(path)] == [b"from the wheel"]


@pytest.mark.parametrize("where", ["the app folder", "another folder"])
def test_procfile_serves_a_task_from_the_installed_package(
    where, installed, pg_admin_url, receiver, tmp_path
):
    """The app folder is the one the wheel was built from, as a platform's build leaves it
    (asyncqueue.egg-info and all); its own asyncqueue/ is made unimportable first."""
    venv, source = installed[0], installed[4]
    if where == "the app folder":
        cwd = source
        _poison(source)
    else:
        cwd = tmp_path / "elsewhere"  # neither the repository nor the venv
        cwd.mkdir()
    port = free_port()
    with _database(pg_admin_url) as url, _processes() as running:
        env = _clean_env(
            venv,
            DATABASE_URL=url,
            PORT=str(port),
            WEB_CONCURRENCY="1",
            ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="true",
            ASYNCQUEUE_LOG_LEVEL="WARNING",
        )
        where_from = json.loads(
            _run(
                [
                    "python",
                    "-c",
                    "import asyncqueue, json, sys; print(json.dumps([asyncqueue.__file__, sys.path]))",
                ],
                tmp_path,
                env,
            )
        )
        assert Path(where_from[0]).is_relative_to(venv), where_from[0]
        assert not any(p and Path(p).resolve().is_relative_to(ROOT) for p in where_from[1])
        assert _run(["asyncqueue", "--version"], cwd, env).strip() == (
            f"asyncqueue, version {VERSION}"
        )

        commands = procfile()
        assert {"web", "worker", "release"} <= commands.keys()
        release = json.loads(_run(["bash", "-c", commands["release"] + " --json"], cwd, env))
        migrations = sorted(
            p.name.removesuffix(".sql") for p in (ROOT / "sql/migrations").glob("*.sql")
        )
        assert release == {"applied": migrations}
        team = json.loads(
            _run(["asyncqueue", "teams", "create", "acme", "--plan", "pro", "--json"], cwd, env)
        )
        key = json.loads(_run(["asyncqueue", "keys", "create", "acme", "--json"], cwd, env))
        assert key["teamId"] == team["id"]

        logs = [tmp_path / "web.log", tmp_path / "worker.log"]
        for kind, log in zip(("web", "worker"), logs, strict=True):
            running.append(_spawn(commands[kind], cwd, env, log))
        _wait_until_ready(port, running, logs, timeout=60)
        _serve_one_task(port, key["key"], receiver)


@pytest.mark.parametrize(
    "command, extra_env",
    [
        (["asyncqueue", "web"], {"PYTHONPATH": "."}),
        (["asyncqueue", "worker"], {"PYTHONPATH": "."}),
        (["python", "-m", "asyncqueue.cli", "db", "migrate"], {}),
    ],
)
def test_running_the_app_folders_copy_is_refused_in_one_line(
    command, extra_env, installed, tmp_path
):
    """Where the app folder's asyncqueue/ would be imported instead of the installed package,
    the process exits before serving anything, with one line naming both."""
    venv = installed[0]
    app = _fresh_clone(tmp_path / "app")
    env = _clean_env(venv, DATABASE_URL="postgresql://x@127.0.0.1:1/x", PORT=str(free_port()))
    env.update(extra_env)
    result = subprocess.run(command, cwd=app, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"imported asyncqueue from {app / 'asyncqueue'}" in lines[0]
    assert "not the installed package at " + str(venv) in lines[0]


def _readme_block_after(marker: str) -> str:
    """The first ```bash block of the README after the line holding `marker`."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(marker) :]
    start = after.index("```bash\n") + len("```bash\n")
    return after[start : after.index("```", start)]


def test_readme_honcho_recipe_serves_a_task(pg_admin_url, receiver, tmp_path):
    """The README's honcho lines, typed as written in a fresh clone's root (pip installs the app
    and honcho from the package index, as a user's machine would)."""
    recipe = _readme_block_after("**honcho")
    assert "honcho start web worker" in recipe
    app = _fresh_clone(tmp_path / "app")
    # A user's shell: a Python 3.11+ first on PATH, none of this test run's virtualenv.
    ours = str(Path(sys.executable).parent)
    path = [str(Path(sys._base_executable).parent)]
    path += [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != ours]
    port = free_port()
    with _database(pg_admin_url) as url, _processes() as running:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ASYNCQUEUE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        env.update(
            PATH=os.pathsep.join(path),
            DATABASE_URL=url,
            PORT=str(port),
            WEB_CONCURRENCY="1",
            ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="true",
            ASYNCQUEUE_LOG_LEVEL="WARNING",
        )
        log = tmp_path / "honcho.log"
        running.append(_spawn("set -e\n" + recipe, app, env, log))
        # The recipe installs first (minutes on a cold package cache), then migrates and starts.
        _wait_until_ready(port, running, [log], timeout=600)
        cli = str(app / "venv" / "bin" / "asyncqueue")
        made = _run([cli, "teams", "create", "acme", "--plan", "pro", "--json"], app, env)
        key = json.loads(_run([cli, "keys", "create", "acme", "--json"], app, env))
        assert key["teamId"] == json.loads(made)["id"]
        _serve_one_task(port, key["key"], receiver)
