"""A team's plan limits where something is added to it (API keys, members), checked under the
team's row lock; used by the `asyncqueue` command, the dev server and the tests."""

from __future__ import annotations

from asyncqueue import db, domain, keys


class PlanLimitReached(Exception):
    """The team's plan allows no more of what was to be added."""


def lock_team(conn, team: dict) -> None:
    """Serialise limit checks for one team: two adds at once cannot both pass."""
    conn.execute(db.query("team_lock"), {"team_id": team["id"]})


def refuse_over_plan_limit(conn, team: dict, count_query: str, plan_limits: dict, what: str):
    """Raise PlanLimitReached if the team's plan allows no more of what `count_query` counts.
    Call inside a transaction: the team row is locked so two concurrent adds cannot both pass."""
    lock_team(conn, team)
    count = conn.execute(db.query(count_query), {"team_id": team["id"]}).fetchone()["n"]
    allowed = plan_limits[team["plan"]]
    if not domain.room_for_one_more(count, allowed):
        raise PlanLimitReached(
            f"team {team['name']} is on the {team['plan']} plan, which allows "
            + what.format(n=allowed)
        )


def create_key(conn, team: dict, name: str | None) -> tuple[str, dict]:
    """A new key for `team`, within its plan's limit. Returns the key and its row."""
    with conn.transaction():
        refuse_over_plan_limit(
            conn,
            team,
            "key_active_count",
            domain.PLAN_MAX_API_KEYS,
            f"{{n}} active API key; revoke it or move to {domain.UPGRADE_PLAN}",
        )
        key = keys.generate_key()
        row = conn.execute(
            db.query("key_create"),
            {
                "team_id": team["id"],
                "name": name,
                "prefix": keys.display_prefix(key),
                "key_hash": keys.hash_key(key),
            },
        ).fetchone()
    return key, row
