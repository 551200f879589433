"""What a Procfile platform reads is present and agrees with the code (the README's Deploying)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from asyncqueue.api import create_app
from asyncqueue.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


def test_procfile_runs_our_commands_and_migrates_on_release():
    procfile = _procfile()
    assert procfile == {
        "web": "asyncqueue web",
        "worker": "asyncqueue worker",
        "release": "asyncqueue db migrate",
    }
    assert "asyncqueue" in PYPROJECT["project"]["scripts"]


def test_buildpack_installs_the_project_and_a_supported_python():
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["-c constraints.txt", "."]  # the project itself, at the tested versions
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version)  # major version: patch releases come by themselves
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


def test_app_json_runs_a_worker_and_checks_a_real_readiness_route():
    manifest = json.loads((ROOT / "app.json").read_text())
    assert set(manifest["formation"]) == {"web", "worker"} <= set(_procfile())
    assert manifest["formation"]["worker"]["quantity"] >= 1  # Dokku's default for it is 0
    paths = [check["path"] for check in manifest["healthchecks"]["web"]]
    app = create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/x"))
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert paths == ["/readyz"] and "/readyz" in routes and "/healthz" in routes


def test_readme_links_stay_inside_the_repository():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)", readme)
    assert "docs/api.md" in targets
    for target in targets:
        if not target.startswith("http"):
            assert (ROOT / target).resolve().is_relative_to(ROOT), target
            assert (ROOT / target).exists(), target


def test_version_option_prints_the_projects_version():
    from click.testing import CliRunner

    from asyncqueue.cli import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"asyncqueue, version {PYPROJECT['project']['version']}\n"
