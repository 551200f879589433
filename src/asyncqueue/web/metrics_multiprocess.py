"""prometheus_client's multiprocess mode for gunicorn: each process writes its request metrics
to files in PROMETHEUS_MULTIPROC_DIR, and /metrics, in whichever process answers, sums them.

Used from asyncqueue/web/gunicorn_config.py, which the master reads before it forks any worker.
prometheus_client is imported only inside the hooks, after the variable is set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "asyncqueue-metrics-"
_made_here: str | None = None


def prepare_directory() -> str:
    """Point PROMETHEUS_MULTIPROC_DIR at a fresh, empty directory of this master's own, named
    for its pid, under the directory given in PROMETHEUS_MULTIPROC_DIR (or the system's temporary
    directory when unset). Never one shared with another master: a second master on the host
    would otherwise delete the live one's files (or add its counts to them). Directories of
    masters that are gone are removed."""
    global _made_here
    given = os.environ.get(VARIABLE)
    parent = Path(given) if given else Path(tempfile.gettempdir())
    if parent.name.startswith(PREFIX):  # a master re-executed (USR2) inherits our directory
        parent = parent.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(parent)
    _made_here = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)
    os.environ[VARIABLE] = _made_here
    return _made_here


def remove_orphans(parent: Path) -> None:
    """Remove the temporary directories of masters that are gone without their on_exit hook
    (killed with SIGKILL): each is named for its master's pid."""
    for path in parent.glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def child_exit(_server, worker) -> None:
    """gunicorn hook: a worker process ended; its live gauges no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server) -> None:
    """gunicorn hook: the master is exiting; remove its directory."""
    if _made_here:
        shutil.rmtree(_made_here, ignore_errors=True)
