"""What bin/dev runs: a database (embedded unless DATABASE_URL is set), migrations, a local team
and key, then web and worker in the foreground until Ctrl-C.

The web process listens on 127.0.0.1 unless `--host` says otherwise: bin/dev opens loopback
addresses to callbacks (ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS=loopback, so callbacks to your own
machine work), and listening on every interface would lend your machine to anyone on the network
holding the key.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from asyncqueue import db, domain
from asyncqueue.db import teams as team_rows

ROOT = Path(__file__).resolve().parents[3]  # the clone (this file is src/asyncqueue/dev/server.py)
STATE_DIR = ROOT / ".asyncqueue"
DEV_TEAM = "local"


def _ensure_database(env: dict) -> object | None:
    if env.get("DATABASE_URL"):
        return None
    from asyncqueue.dev import embedded_pg

    STATE_DIR.mkdir(exist_ok=True)
    server = embedded_pg.ensure_running(STATE_DIR / "pgdata")
    env["DATABASE_URL"] = server.url
    print(f"embedded PostgreSQL on 127.0.0.1:{server.port} (data in {STATE_DIR / 'pgdata'})")
    return server


def _ensure_dev_key(url: str) -> str:
    """The local team's key, kept in .asyncqueue/dev-key so it can be shown on every start."""
    from asyncqueue.teams import create_key

    key_file = STATE_DIR / "dev-key"
    with db.connect(url, autocommit=True) as conn:
        team = team_rows.find(conn, DEV_TEAM) or team_rows.create(conn, DEV_TEAM, domain.PRO)
        if key_file.exists():
            key = key_file.read_text().strip()
            from asyncqueue import keys

            if team_rows.key_owner(conn, keys.hash_key(key)) is not None:
                return key
        key, _ = create_key(conn, team.id, "bin/dev")
    STATE_DIR.mkdir(exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/dev", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the API listens on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    return parser.parse_args(argv)


def bind_address(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def web_command(bin_dir: Path, bind: str) -> list[str]:
    """The web process as the Procfile runs it, listening on `bind` only."""
    return [str(bin_dir / "asyncqueue"), "web", "--bind", bind]


def dev_environment(environ) -> dict:
    """bin/dev's settings over the caller's environment (what the caller sets wins)."""
    env = dict(environ)
    env.setdefault("PORT", "8000")
    # Callbacks to this machine work (a receiver on localhost); the networks around it stay
    # closed, so a task cannot reach the developer's router, office or cloud neighbours.
    env.setdefault("ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS", "loopback")
    env.setdefault("WEB_CONCURRENCY", "2")
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dev_environment(os.environ)
    STATE_DIR.mkdir(exist_ok=True)
    server = _ensure_database(env)
    applied = db.migrate(env["DATABASE_URL"])
    print("migrations applied: " + (", ".join(applied) if applied else "none needed"))
    key = _ensure_dev_key(env["DATABASE_URL"])
    (STATE_DIR / "env").write_text(f"export DATABASE_URL='{env['DATABASE_URL']}'\n")
    bind = bind_address(args.host, env["PORT"])
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else bind}"
    print(
        f"""
AsyncQueue is starting on {base} (listening on {bind}; bin/dev --host ADDRESS to change)

  API key (team "{DEV_TEAM}", pro plan): {key}

  curl -X POST {base}/v1/tasks \\
    -H "Authorization: Bearer {key}" \\
    -H "Content-Type: application/json" \\
    -d '{{"callbackUrl": "{base}/healthz", "method": "GET"}}'

  For the CLI in another shell: source .asyncqueue/env && .venv/bin/asyncqueue teams list
  Ctrl-C stops web, worker and the embedded database.
""",
        flush=True,
    )
    bin_dir = Path(sys.executable).parent
    children = [
        subprocess.Popen(
            web_command(bin_dir, bind),
            env=env,
            cwd=ROOT,
            start_new_session=True,
        ),
        # Own sessions: Ctrl-C reaches only us, and we stop the children once, in order.
        subprocess.Popen(
            [str(bin_dir / "asyncqueue"), "worker"], env=env, cwd=ROOT, start_new_session=True
        ),
    ]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(f"{child.args[0]} exited with {child.returncode}; stopping", file=sys.stderr)
                code = child.returncode or 1
                stopping = True
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    if server is not None:
        server.stop()
        print("embedded PostgreSQL stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
