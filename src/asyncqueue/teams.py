"""A team's plan limits where something is added to it (API keys, members), checked under the
team's row lock; used by the `asyncqueue` command, the dev server and the tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from asyncqueue import domain, keys
from asyncqueue.db import teams as team_rows
from asyncqueue.db.rows import ApiKeyRow, TeamRow


class PlanLimitReached(Exception):
    """The team's plan allows no more of what was to be added."""


class TeamNotFound(Exception):
    """No team has the id given (it was deleted meanwhile)."""


def lock_team(conn, team_id: uuid.UUID) -> TeamRow:
    """The team, its row locked until the transaction ends: limit checks for one team take
    turns, so two adds at once cannot both pass, and each is checked against the plan as it is
    then."""
    team = team_rows.lock(conn, team_id)
    if team is None:
        raise TeamNotFound(f"no team with id {team_id}")
    return team


def refuse_over_plan_limit(
    conn,
    team_id: uuid.UUID,
    count: Callable[[object, uuid.UUID], int],
    plan_limits: dict,
    what: str,
) -> TeamRow:
    """The team, locked (lock_team); PlanLimitReached if its plan allows no more of what
    `count(conn, team_id)` counts. Call inside a transaction."""
    team = lock_team(conn, team_id)
    allowed = plan_limits[team.plan]
    if not domain.room_for_one_more(count(conn, team.id), allowed):
        raise PlanLimitReached(
            f"team {team.name} is on the {team.plan} plan, which allows " + what.format(n=allowed)
        )
    return team


def create_key(conn, team_id: uuid.UUID, name: str | None) -> tuple[str, ApiKeyRow]:
    """A new key for the team, within its plan's limit. Returns the key and its row."""
    with conn.transaction():
        refuse_over_plan_limit(
            conn,
            team_id,
            team_rows.active_key_count,
            domain.PLAN_MAX_API_KEYS,
            f"{{n}} active API key; revoke it or move to {domain.UPGRADE_PLAN}",
        )
        key = keys.generate_key()
        row = team_rows.add_key(conn, team_id, name, keys.display_prefix(key), keys.hash_key(key))
    return key, row
