"""Which copy of asyncqueue this process runs: it must be the installed one, with its SQL.

A Procfile platform (Heroku, Dokku, honcho) installs the app and then runs every process in the
app's own folder, the clone, which also holds an `asyncqueue/` folder. A Python that puts its
working directory on sys.path (`python -m`, PYTHONPATH=.) would import that folder instead of
the installed package, and the clone's folder has no `asyncqueue.sql` inside it. The web, worker
and release commands check first and say so in one line.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import asyncqueue

DISTRIBUTION = "asyncqueue"


def installed_package_dir() -> Path | None:
    """Where the installed distribution's package is: site-packages for a regular install, the
    project's folder for an editable one (bin/dev, bin/test); None when it is not installed."""
    # An installer's record, not a build's asyncqueue.egg-info that a source folder on sys.path
    # may hold (pip builds one in the app folder).
    dist = next(
        (d for d in metadata.distributions(name=DISTRIBUTION) if d.read_text("RECORD")), None
    )
    if dist is None:
        return None
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        return Path(unquote(urlparse(direct["url"]).path)) / "asyncqueue"
    return Path(dist.locate_file("asyncqueue"))


def running_package_dir() -> Path:
    return Path(asyncqueue.__file__).parent


def copy_problem() -> str | None:
    """One line saying what is wrong with the code this process runs, or None when it is the
    installed package and its migrations and queries are found."""
    installed = installed_package_dir()
    running = running_package_dir()
    if installed is None:
        return (
            f"asyncqueue is not installed in this Python ({sys.prefix}); it was imported "
            f"from {running}: install it (pip install .) and run the asyncqueue command"
        )
    if installed.resolve() != running.resolve():
        return (
            f"this process imported asyncqueue from {running}, not the installed package at "
            f"{installed}: run the asyncqueue command, without the app folder on PYTHONPATH "
            "or `python -m` from it"
        )
    from asyncqueue import db

    try:
        found = db.migration_files()
        db.queries()
    except (ImportError, OSError) as exc:
        return f"the installed asyncqueue at {installed} has no SQL: {exc}"
    if not found:
        return f"the installed asyncqueue at {installed} has no migrations"
    return None


def exit_unless_installed_copy() -> None:
    """copy_problem() as one line on stderr and exit status 2, for entry points that are not the
    CLI (gunicorn's config, when gunicorn is run by hand)."""
    problem = copy_problem()
    if problem is not None:
        print(f"asyncqueue: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)
