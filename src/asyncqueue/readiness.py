"""Whether a database's schema is the one this code was written for (pure: no I/O).

Migrations are append-only, so "ready" means every migration this code ships has been applied.
Versions the database has and the code does not know come from a newer release that migrated
first (its release phase runs before the old processes stop): still ready, only reported.
"""

from __future__ import annotations


def schema_readiness(known: list[str], applied: set[str] | None) -> tuple[bool, dict]:
    """(ready, body) for /readyz. `known` is this code's migrations in order; `applied` the
    versions in schema_migrations, or None when that table does not exist."""
    if applied is None:
        return False, {
            "error": "database schema not migrated: run `asyncqueue db migrate`",
            "missing": known,
        }
    missing = [version for version in known if version not in applied]
    if missing:
        return False, {
            "error": f"database schema behind: missing {', '.join(missing)} "
            "(run `asyncqueue db migrate`)",
            "missing": missing,
        }
    body = {"status": "ready", "schema": known[-1] if known else None}
    newer = sorted(applied - set(known))
    if newer:
        body["newerMigrations"] = newer
    return True, body
