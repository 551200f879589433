"""A web process boots cleanly: it joins the create-limit syncs before its first create, and
logs no error doing so."""

from __future__ import annotations

from asyncqueue import db
from tests.support import wait_for


def test_each_web_process_joins_the_create_limit_syncs_at_boot_without_an_error(own_stack):
    def live_web_processes() -> int:
        with db.connect(own_stack.database_url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) AS n FROM web_processes").fetchone()["n"]

    # No create has been made: only the boot hook can have started the syncs.
    wait_for(live_web_processes, timeout=10, message="the web process's first sync")
    logs = "".join(p.read_text() for p in own_stack.log_dir.glob("web-*.log"))
    assert "Traceback" not in logs
    assert "[ERROR]" not in logs
