"""The distribution works as platforms run it: an sdist is built from a fresh clone, a wheel
from that sdist, the wheel installed into a throwaway venv, and the Procfile's release, web and
worker lines run a task end to end from the app's own folder (as Heroku, Dokku and honcho run
every process, Heroku with that folder on PYTHONPATH) and from another folder; and the README's
honcho recipe, typed as written in a fresh clone, serves a task. Every process runs the installed
package: the app folder's copy of the code is made to refuse to import."""

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

from tests.support import report, wait_for
from tests.support.databases import with_dbname
from tests.support.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
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
    """(venv, sdist, wheel, seconds taken, the clone it was built in): the wheel built from the
    sdist of a fresh clone, installed outside the tree."""
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    venv, dist = base / "venv", base / "dist"
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", str(venv)], base, os.environ)
    py, env = str(venv / "bin" / "python"), _clean_env(venv)
    pip = [py, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # setuptools builds the sdist (Python 3.12+ venvs do not come with it; pip's cache has it).
    _run([*pip, "install", "setuptools>=61"], base, env)
    source = _fresh_clone(base / "source")
    build_sdist = f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"
    sdist = dist / _run([py, "-c", build_sdist], source, env).strip().splitlines()[-1]
    _run([*pip, "wheel", "--no-deps", "-w", str(dist), str(sdist)], base, env)
    (wheel,) = dist.glob("asyncqueue-*.whl")
    _run([*pip, "install", "-c", str(ROOT / "constraints.txt"), str(wheel)], base, env)
    return venv, sdist, wheel, time.monotonic() - started, source


def _tracked_files() -> list[str]:
    """What a clone holds: the files git tracks, and new ones it does not ignore (so work not yet
    committed is tested too)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def _fresh_clone(into: Path) -> Path:
    for name in _tracked_files():
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, into / name)
    return into


def _poison(app: Path) -> None:
    """Make the app folder's own copy of the code unimportable, so that a process importing it
    (and not the installed package) fails to start instead of running a second copy."""
    with open(app / "src" / "asyncqueue" / "__init__.py", "a") as init:
        init.write(
            '\nraise ImportError("imported from the app folder, not the installed package")\n'
        )


def test_sdist_and_wheel_carry_the_code_and_the_sql(installed):
    _, sdist, wheel, seconds, _ = installed
    report(f"wheel: fresh venv, sdist, wheel from the sdist and install took {seconds:.1f} s")
    tracked = _tracked_files()
    sql = {name for name in tracked if name.startswith("sql/") and name.endswith(".sql")}
    code = {name for name in tracked if name.startswith("src/asyncqueue/") and name.endswith(".py")}
    assert any(p.startswith("sql/migrations/") for p in sql) and "sql/queries/tasks.sql" in sql
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert sql | code <= in_sdist
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
    assert {"asyncqueue/" + p for p in sql} <= in_wheel  # sql/ ships as asyncqueue/sql/
    missing = {p.removeprefix("src/") for p in code} - in_wheel
    assert not missing, f"modules of the tree missing from the wheel: {sorted(missing)}"


@contextmanager
def _database(pg_admin_url: str):
    """An empty database of its own: the migrations under test build it."""
    name = f"aq_wheel_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(pg_admin_url, name)
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


@pytest.mark.parametrize("where", ["the app folder", "the app folder on PYTHONPATH", "elsewhere"])
def test_procfile_serves_a_task_from_the_installed_package(
    where, installed, pg_admin_url, receiver, tmp_path
):
    """The app folder is a copy of the clone the wheel was built in, as a platform's build leaves
    it, with its own copy of the code made unimportable. Heroku's Python buildpack puts the app
    folder on PYTHONPATH for every process."""
    venv, source = installed[0], installed[4]
    extra = {}
    if where == "elsewhere":
        cwd = tmp_path / "elsewhere"  # neither the repository nor the venv
        cwd.mkdir()
    else:
        cwd = tmp_path / "app"
        shutil.copytree(source, cwd)
        _poison(cwd)
        if where == "the app folder on PYTHONPATH":
            extra["PYTHONPATH"] = str(cwd)
    port = free_port()
    with _database(pg_admin_url) as url, _processes() as running:
        env = _clean_env(
            venv,
            DATABASE_URL=url,
            PORT=str(port),
            WEB_CONCURRENCY="1",
            ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="true",
            ASYNCQUEUE_LOG_LEVEL="WARNING",
            **extra,
        )
        where_from = json.loads(
            _run(
                [
                    "python",
                    "-c",
                    "import asyncqueue, json, sys; print(json.dumps([asyncqueue.__file__, sys.path]))",
                ],
                cwd,
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
    "command",
    [
        ["asyncqueue", "web"],
        ["asyncqueue", "worker"],
        ["python", "-m", "asyncqueue.cli", "db", "migrate"],
    ],
)
def test_a_stale_copy_on_pythonpath_is_refused_in_one_line(command, installed, tmp_path):
    """Where another copy of asyncqueue would be imported instead of the installed package, the
    process exits before serving anything, with one line naming both."""
    venv = installed[0]
    stale = tmp_path / "stale"
    shutil.copytree(ROOT / "src" / "asyncqueue", stale / "asyncqueue")
    env = _clean_env(
        venv,
        DATABASE_URL="postgresql://x@127.0.0.1:1/x",
        PORT=str(free_port()),
        PYTHONPATH=str(stale),
    )
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"imported asyncqueue from {stale / 'asyncqueue'}" in lines[0]
    assert "not the installed package at " + str(venv) in lines[0]


def _readme_block_after(marker: str) -> str:
    """The first ```bash block of the README after the line holding `marker`."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(marker) :]
    start = after.index("```bash\n") + len("```bash\n")
    return after[start : after.index("```", start)]


def test_readme_honcho_recipe_serves_a_task(pg_admin_url, receiver, tmp_path):
    """The README's honcho lines, typed as written in a fresh clone's root, with the settings in
    .env (pip installs the app and honcho from the package index, as on a user's machine)."""
    recipe = _readme_block_after("**honcho")
    assert "honcho start web worker" in recipe
    app = _fresh_clone(tmp_path / "app")
    # A user's shell: python3 is a Python 3.11+, and none of this test run's virtualenv is on PATH.
    shell_bin = tmp_path / "shell-bin"
    shell_bin.mkdir()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (shell_bin / "python3").symlink_to(Path(sys.base_prefix) / "bin" / version)
    ours = str(Path(sys.executable).parent)
    path = [str(shell_bin), *(p for p in os.environ["PATH"].split(os.pathsep) if p != ours)]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ASYNCQUEUE_")
        and k not in ("PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL", "PORT")
    }
    env["PATH"] = os.pathsep.join(path)
    port = free_port()
    with _database(pg_admin_url) as url, _processes() as running:
        settings = {
            "DATABASE_URL": url,
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS": "true",
            "ASYNCQUEUE_LOG_LEVEL": "WARNING",
        }
        (app / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        log = tmp_path / "honcho.log"
        running.append(_spawn("set -e\n" + recipe, app, env, log))
        # The recipe installs first (minutes on a cold package cache), then migrates and starts.
        _wait_until_ready(port, running, [log], timeout=600)
        cli = [str(app / "venv" / "bin" / "asyncqueue")]
        env_with_url = {**env, "DATABASE_URL": url}
        made = _run([*cli, "teams", "create", "acme", "--plan", "pro", "--json"], app, env_with_url)
        key = json.loads(_run([*cli, "keys", "create", "acme", "--json"], app, env_with_url))
        assert key["teamId"] == json.loads(made)["id"]
        _serve_one_task(port, key["key"], receiver)
