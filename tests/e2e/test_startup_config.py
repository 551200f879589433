"""A malformed setting stops every entry point at start: one line on stderr naming the variable,
a non-zero exit, no traceback (the web's gunicorn master included, before any worker forks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import free_port

BIN = Path(sys.executable).parent
GUNICORN = [
    str(BIN / "gunicorn"),
    "-c",
    "python:asyncqueue.web.gunicorn_config",
    "asyncqueue.api:create_app()",
]
ENTRY_POINTS = {
    "gunicorn": GUNICORN,
    "web": [str(BIN / "asyncqueue"), "web"],
    "worker": [str(BIN / "asyncqueue"), "worker"],
    "cli": [str(BIN / "asyncqueue"), "teams", "list", "--json"],
}


def _run(args: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCQUEUE_")}
    return subprocess.run(
        args,
        env={
            **clean,
            "DATABASE_URL": f"postgresql://x@127.0.0.1:{free_port()}/x?connect_timeout=1",
            "PORT": str(free_port()),
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    "name, raw",
    [
        ("ASYNCQUEUE_RETENTION_DAYS", "-1"),
        ("ASYNCQUEUE_RETENTION_DAYS", "abc"),
        ("ASYNCQUEUE_WEB_THREADS", "0"),
        ("PORT", "http"),
    ],
)
def test_malformed_setting_refuses_to_start(entry, name, raw, tmp_path):
    result = _run(ENTRY_POINTS[entry], tmp_path, **{name: raw})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0] and repr(raw) in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_web_checks_gunicorns_own_variable_first(tmp_path):
    """gunicorn parses WEB_CONCURRENCY itself, with a traceback; `asyncqueue web` says it first."""
    result = _run(ENTRY_POINTS["web"], tmp_path, WEB_CONCURRENCY="two")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "Error: WEB_CONCURRENCY must be a whole number of at least 1 and at most 256, got 'two'"
    )


def test_unknown_variable_is_warned_about(tmp_path):
    result = _run(ENTRY_POINTS["cli"], tmp_path, ASYNCQUEUE_RETENTON_DAYS="3")
    assert (
        "asyncqueue: warning: ASYNCQUEUE_RETENTON_DAYS is not a setting AsyncQueue reads; it is "
        "ignored (did you mean ASYNCQUEUE_RETENTION_DAYS?)"
    ) in result.stderr.splitlines()
