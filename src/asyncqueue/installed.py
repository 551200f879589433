"""Which copy of asyncqueue this process runs: it must be the installed one, with its SQL.

The source lives in src/, so a clone's root (where platforms run every process, and which
Heroku puts on PYTHONPATH) holds nothing Python could import as `asyncqueue`. A stale copy
elsewhere on sys.path still could be; every command checks first and says so in one line.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import asyncqueue

DISTRIBUTION = "asyncqueue"


def _installed_here(dist: metadata.Distribution, module: Path) -> bool | None:
    """Whether `module` (resolved) belongs to `dist`: under site-packages' asyncqueue/ for a
    regular install, under the project's src/asyncqueue/ for an editable one (a strict editable
    install links its files there); None if unreadable."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable"):
            project = Path(unquote(urlparse(direct["url"]).path)).resolve()
            return module.is_relative_to(project / "src" / "asyncqueue")
    except (ValueError, KeyError, AttributeError):
        return None
    return module.is_relative_to(Path(dist.locate_file("asyncqueue")).resolve())


def wrong_copy_reason() -> str | None:
    """One line saying what is wrong with the code this process runs, or None when it is the
    installed package and its migrations and queries are found."""
    running = Path(asyncqueue.__file__).parent
    module = Path(asyncqueue.__file__).resolve()
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return (
            f"asyncqueue is not installed in this Python ({sys.prefix}); it was imported from "
            f"{running}: install it (pip install .) and run the asyncqueue command"
        )
    installed = Path(dist.locate_file("asyncqueue"))
    here = _installed_here(dist, module)
    if here is None:
        return f"the installed asyncqueue's direct_url.json ({installed.parent}) is unreadable"
    if not here:
        return (
            f"this process imported asyncqueue from {running}, not the installed package at "
            f"{installed}: remove that copy from PYTHONPATH, or install it"
        )
    from asyncqueue import db

    try:
        found = db.migration_files()
        db.queries()
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        return f"the installed asyncqueue's SQL at {installed} is missing or unreadable: {exc}"
    if not found:
        return f"the installed asyncqueue at {installed} has no migrations"
    return None


def exit_unless_installed_copy() -> None:
    """wrong_copy_reason() as one line on stderr and exit status 2, for gunicorn's config (when
    gunicorn is run by hand), as its other configuration errors do."""
    reason = wrong_copy_reason()
    if reason is not None:
        print(f"asyncqueue: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(2)
