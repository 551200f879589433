"""The `asyncqueue` command: migrations, teams, members, keys and the worker.

Every command takes --json and then prints exactly one JSON object or array on stdout, so
operators can script it. Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys

import click
import psycopg

from asyncqueue import __version__, db, domain, installed
from asyncqueue import teams as team_rules
from asyncqueue.config import ConfigError, Settings
from asyncqueue.db import teams as team_rows
from asyncqueue.db import workers as worker_rows
from asyncqueue.db.rows import ApiKeyRow, MemberRow, TeamRow, TeamSummaryRow, WorkerRow
from asyncqueue.task_json import format_time

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Refused(click.ClickException):
    """A clear, one-line refusal (exit 1)."""


class Group(click.Group):
    """Runs only as the installed package, and turns configuration and database errors into one
    line on stderr."""

    def invoke(self, ctx):
        problem = installed.wrong_copy_reason()
        if problem is not None:
            raise Refused(problem)
        try:
            return super().invoke(ctx)
        except (ConfigError, team_rules.PlanLimitReached, team_rules.TeamNotFound) as exc:
            raise Refused(str(exc)) from None
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Refused(f"cannot reach the database: {first}") from None
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            # A database this release has not migrated (or only partly): say what to do.
            first = str(exc).strip().splitlines()[0]
            raise Refused(
                f"the database's schema is not this release's ({first}): "
                "run `asyncqueue db migrate`"
            ) from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON value.")


def _settings() -> Settings:
    return Settings.from_env()


def _connect():
    return db.connect(_settings().database_url, autocommit=True)


def _emit(as_json: bool, value, text: str) -> None:
    click.echo(json.dumps(value, indent=2) if as_json else text)


def _team_json(row: TeamRow | TeamSummaryRow) -> dict:
    out = {
        "id": str(row.id),
        "name": row.name,
        "plan": row.plan,
        "createdAt": format_time(row.created_at),
    }
    if isinstance(row, TeamSummaryRow):
        out["members"] = row.members
        out["activeKeys"] = row.active_keys
    return out


def _key_json(row: ApiKeyRow) -> dict:
    return {
        "id": str(row.id),
        "teamId": str(row.team_id),
        "name": row.name,
        "prefix": row.prefix,
        "createdAt": format_time(row.created_at),
        "revokedAt": format_time(row.revoked_at),
    }


def _member_json(row: MemberRow) -> dict:
    return {
        "teamId": str(row.team_id),
        "email": row.email,
        "createdAt": format_time(row.created_at),
    }


def _find_team(conn, ref: str) -> TeamRow:
    row = team_rows.find(conn, ref)
    if row is None:
        raise Refused(f"no team with id or name {ref!r}")
    return row


@click.group(cls=Group)
@click.version_option(__version__, prog_name="asyncqueue")
def main():
    """AsyncQueue: make HTTP calls later, reliably."""


# -- db ----------------------------------------------------------------------------------------


@main.group("db")
def db_group():
    """Database schema."""


@db_group.command("migrate")
@json_option
def db_migrate(as_json):
    """Apply pending migrations (safe to run from several processes at once)."""
    applied = db.migrate(_settings().database_url)
    text = "applied: " + ", ".join(applied) if applied else "already up to date"
    _emit(as_json, {"applied": applied}, text)


# -- teams -------------------------------------------------------------------------------------


@main.group()
def teams():
    """Teams and their plans."""


@teams.command("create")
@click.argument("name")
@click.option(
    "--plan", type=click.Choice(domain.PLANS), default=domain.DEFAULT_PLAN, show_default=True
)
@json_option
def teams_create(name, plan, as_json):
    """Create a team."""
    if not name.strip():
        raise Refused("team name must not be empty")
    with _connect() as conn:
        try:
            row = team_rows.create(conn, name, plan)
        except psycopg.errors.UniqueViolation:
            raise Refused(f"a team named {name!r} already exists") from None
    _emit(as_json, _team_json(row), f"created team {row.name} ({row.id}), plan {plan}")


@teams.command("list")
@json_option
def teams_list(as_json):
    """List teams with their member and active-key counts."""
    with _connect() as conn:
        rows = team_rows.summaries(conn)
    lines = [
        f"{r.id}  {r.name:<24} {r.plan:<5} members={r.members} keys={r.active_keys}" for r in rows
    ]
    _emit(as_json, [_team_json(r) for r in rows], "\n".join(lines) or "no teams")


@teams.command("set-plan")
@click.argument("team")
@click.argument("plan", type=click.Choice(domain.PLANS))
@json_option
def teams_set_plan(team, plan, as_json):
    """Move TEAM to PLAN (refused if the team is over the new plan's limits)."""
    with _connect() as conn, conn.transaction():
        found = team_rules.lock_team(conn, _find_team(conn, team).id)
        members = team_rows.member_count(conn, found.id)
        active = team_rows.active_key_count(conn, found.id)
        max_members, max_keys = domain.PLAN_MAX_MEMBERS[plan], domain.PLAN_MAX_API_KEYS[plan]
        # Over the new plan's limit, not at it: a team may move to a plan it exactly fills.
        if domain.over_limit(members, max_members):
            raise Refused(
                f"team {found.name} has {members} members; the {plan} plan allows "
                f"{max_members}: remove some first"
            )
        if domain.over_limit(active, max_keys):
            raise Refused(
                f"team {found.name} has {active} active API keys; the {plan} plan "
                f"allows {max_keys}: revoke some first"
            )
        row = team_rows.set_plan(conn, found.id, plan)
    _emit(as_json, _team_json(row), f"team {row.name} is now on the {plan} plan")


# -- members -----------------------------------------------------------------------------------


@main.group()
def members():
    """Team members."""


@members.command(
    "add",
    help=f"Add EMAIL to TEAM (the {domain.FREE} plan allows "
    f"{domain.PLAN_MAX_MEMBERS[domain.FREE]} members).",
)
@click.argument("team")
@click.argument("email")
@json_option
def members_add(team, email, as_json):
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise Refused(f"{email!r} is not an email address")
    with _connect() as conn, conn.transaction():
        found = team_rules.refuse_over_plan_limit(
            conn,
            _find_team(conn, team).id,
            team_rows.member_count,
            domain.PLAN_MAX_MEMBERS,
            f"{{n}} members; remove one or move to {domain.UPGRADE_PLAN}",
        )
        row = team_rows.add_member(conn, found.id, email)
        if row is None:
            raise Refused(f"{email} is already a member of {found.name}")
    _emit(as_json, _member_json(row), f"added {email} to {found.name}")


@members.command("remove")
@click.argument("team")
@click.argument("email")
@json_option
def members_remove(team, email, as_json):
    """Remove EMAIL from TEAM."""
    email = email.strip().lower()
    with _connect() as conn:
        found = _find_team(conn, team)
        row = team_rows.remove_member(conn, found.id, email)
    if row is None:
        raise Refused(f"{email} is not a member of {found.name}")
    _emit(as_json, _member_json(row), f"removed {email} from {found.name}")


@members.command("list")
@click.argument("team")
@json_option
def members_list(team, as_json):
    """List TEAM's members."""
    with _connect() as conn:
        found = _find_team(conn, team)
        rows = team_rows.members(conn, found.id)
    _emit(
        as_json,
        [_member_json(r) for r in rows],
        "\n".join(r.email for r in rows) or f"{found.name} has no members",
    )


# -- keys --------------------------------------------------------------------------------------


@main.group("keys")
def keys_group():
    """API keys (stored only as a hash; shown once, at creation)."""


@keys_group.command("create")
@click.argument("team")
@click.option("--name", "label", help="A label to recognise the key by.")
@json_option
def keys_create(team, label, as_json):
    """Create an API key for TEAM and print it (the only time it is shown)."""
    with _connect() as conn:
        found = _find_team(conn, team)
        key, row = team_rules.create_key(conn, found.id, label)
    _emit(
        as_json,
        {**_key_json(row), "key": key},
        f"{key}\n(key id {row.id}; store it now, it is not shown again)",
    )


@keys_group.command("list")
@click.argument("team")
@json_option
def keys_list(team, as_json):
    """List TEAM's keys (prefix only, never the key)."""
    with _connect() as conn:
        found = _find_team(conn, team)
        rows = team_rows.api_keys(conn, found.id)
    lines = [
        f"{r.id}  {r.prefix}…  {r.name or '-':<16} "
        f"{'revoked ' + format_time(r.revoked_at) if r.revoked_at else 'active'}"
        for r in rows
    ]
    _emit(as_json, [_key_json(r) for r in rows], "\n".join(lines) or "no keys")


@keys_group.command("revoke")
@click.argument("key_id")
@json_option
def keys_revoke(key_id, as_json):
    """Revoke the key KEY_ID; requests with it fail from the next one on."""
    with _connect() as conn:
        row = team_rows.revoke_key(conn, key_id.strip())
    if row is None:
        raise Refused(f"no API key with id {key_id!r}")
    _emit(as_json, _key_json(row), f"revoked key {row.id} ({row.prefix}…)")


# -- workers and retention ---------------------------------------------------------------------


@main.group("workers")
def workers_group():
    """Worker processes, from their heartbeats."""


def _worker_json(row: WorkerRow) -> dict:
    from asyncqueue.worker.heartbeat import worker_state

    return {
        "id": str(row.id),
        "name": row.name,
        "host": row.host,
        "pid": row.pid,
        "version": row.version,
        "startedAt": format_time(row.started_at),
        "lastSeenAt": format_time(row.last_seen_at),
        "secondsSinceSeen": round(row.seen_seconds_ago, 1),
        "inFlight": row.in_flight,
        "state": worker_state(row.seen_seconds_ago),
    }


@workers_group.command("list")
@json_option
def workers_list(as_json):
    """List workers: live ones, and silent ones (no heartbeat for 15 s; forgotten after 1 h)."""
    with _connect() as conn:
        rows = [_worker_json(r) for r in worker_rows.all_workers(conn)]
    lines = [
        f"{w['name']:<32} {w['state']:<6} in flight {w['inFlight']:<4} "
        f"seen {w['secondsSinceSeen']:.0f} s ago  started {w['startedAt']}  v{w['version']}"
        for w in rows
    ]
    _emit(as_json, rows, "\n".join(lines) or "no workers")


@main.group("tasks")
def tasks_group():
    """Tasks: retention."""


def _retention_days(days: float | None) -> float | None:
    if days is not None and not 0 < days <= domain.MAX_RETENTION_DAYS:  # NaN fails this too
        raise click.BadParameter(
            f"a number of days above 0 and at most {domain.MAX_RETENTION_DAYS:,}, got {days!r}"
        )
    return days


@tasks_group.command("prune")
@click.option(
    "--older-than",
    "days",
    type=float,
    callback=lambda _ctx, _param, days: _retention_days(days),
    help="Days since completion [default: ASYNCQUEUE_RETENTION_DAYS].",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option
def tasks_prune(days, dry_run, as_json):
    """Delete finished tasks (completed, failed, timeout, cancelled) completed more than DAYS
    ago, in batches of 1,000, as the workers do by themselves."""
    from asyncqueue.worker import pruner

    settings = _settings()
    if days is None:
        if settings.retention_days <= 0:
            raise Refused(
                "retention is off (ASYNCQUEUE_RETENTION_DAYS=0): pass --older-than DAYS to prune"
            )
        days = settings.retention_days
    progress = None
    if not dry_run and sys.stderr.isatty():

        def progress(result):
            rate = result.total / result.seconds if result.seconds else 0
            click.echo(f"\rdeleted {result.total:,} tasks ({rate:,.0f}/s)", err=True, nl=False)

    pool = db.make_pool(settings.database_url, 1, name="asyncqueue-prune", timeout=10.0)
    try:
        if dry_run:
            result = pruner.preview(pool, days)
        else:
            result = pruner.prune(pool, days, wait_for_lock=True, progress=progress)
    finally:
        pool.close()
    if progress:
        click.echo("", err=True)
    verb = "would delete" if dry_run else "deleted"
    _emit(
        as_json,
        {
            "olderThanDays": days,
            "dryRun": dry_run,
            "tasks": result.total,
            "byStatus": dict(sorted(result.by_status.items())),
            "seconds": round(result.seconds, 3),
        },
        f"{verb} {result.total:,} finished tasks completed more than {days:g} days ago",
    )


# -- web and worker ----------------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def web(gunicorn_args):
    """Serve the API with gunicorn (extra arguments go to gunicorn), after checking settings:
    gunicorn itself would stop on a malformed WEB_CONCURRENCY with a traceback."""
    Settings.from_env(
        dict(os.environ)
    )  # no unknown-variable warnings: gunicorn's config gives them
    from asyncqueue.web.server import serve

    # In this process, so the platform's signals reach gunicorn's master and it serves the
    # package checked above.
    serve(gunicorn_args)


@main.command()
def worker():
    """Run a worker: claim due tasks and make their calls until SIGTERM."""
    from asyncqueue.logs import configure_logging
    from asyncqueue.worker.process import StartupError, run_worker

    settings = _settings()
    configure_logging(settings.log_level)
    try:
        sys.exit(run_worker(settings))
    except StartupError as exc:
        raise Refused(str(exc)) from None


if __name__ == "__main__":
    main()
