"""Teams, their members and their API keys, as the `asyncqueue` command, the dev server and the
API's authentication read and write them (the plan limits on adding are asyncqueue/teams.py's)."""

from __future__ import annotations

import uuid

from psycopg.rows import args_row

from asyncqueue.db import fetch, query
from asyncqueue.db.rows import ApiKeyRow, KeyOwnerRow, MemberRow, TeamRow, TeamSummaryRow

TEAM = args_row(TeamRow)
TEAM_SUMMARY = args_row(TeamSummaryRow)
MEMBER = args_row(MemberRow)
API_KEY = args_row(ApiKeyRow)
KEY_OWNER = args_row(KeyOwnerRow)


def create(conn, name: str, plan: str) -> TeamRow:
    """A new team; psycopg.errors.UniqueViolation if one has that name."""
    return fetch.one(conn, query("team_create"), {"name": name, "plan": plan}, TEAM)


def find(conn, ref: str) -> TeamRow | None:
    """The team named `ref`, else the one whose id it is."""
    return fetch.one(conn, query("team_find"), {"ref": ref}, TEAM)


def summaries(conn) -> list[TeamSummaryRow]:
    """Every team, oldest first, with its member and active API key counts."""
    return fetch.many(conn, query("team_list"), None, TEAM_SUMMARY)


def lock(conn, team_id: uuid.UUID) -> TeamRow | None:
    """The team, its row locked until the transaction ends."""
    return fetch.one(conn, query("team_lock"), {"team_id": team_id}, TEAM)


def set_plan(conn, team_id: uuid.UUID, plan: str) -> TeamRow | None:
    return fetch.one(conn, query("team_set_plan"), {"team_id": team_id, "plan": plan}, TEAM)


def member_count(conn, team_id: uuid.UUID) -> int:
    return fetch.value(conn, query("member_count"), {"team_id": team_id})


def add_member(conn, team_id: uuid.UUID, email: str) -> MemberRow | None:
    """The new member; None if the address is a member already."""
    params = {"team_id": team_id, "email": email}
    return fetch.one(conn, query("member_add"), params, MEMBER)


def remove_member(conn, team_id: uuid.UUID, email: str) -> MemberRow | None:
    """The member removed; None if the address was not a member."""
    params = {"team_id": team_id, "email": email}
    return fetch.one(conn, query("member_remove"), params, MEMBER)


def members(conn, team_id: uuid.UUID) -> list[MemberRow]:
    return fetch.many(conn, query("member_list"), {"team_id": team_id}, MEMBER)


def active_key_count(conn, team_id: uuid.UUID) -> int:
    return fetch.value(conn, query("key_active_count"), {"team_id": team_id})


def add_key(conn, team_id: uuid.UUID, name: str | None, prefix: str, key_hash: bytes) -> ApiKeyRow:
    """Store a new key of the team: only its hash, and the prefix that tells it apart."""
    params = {"team_id": team_id, "name": name, "prefix": prefix, "key_hash": key_hash}
    return fetch.one(conn, query("key_create"), params, API_KEY)


def api_keys(conn, team_id: uuid.UUID) -> list[ApiKeyRow]:
    """The team's keys, revoked ones included, oldest first."""
    return fetch.many(conn, query("key_list"), {"team_id": team_id}, API_KEY)


def revoke_key(conn, key_id: str) -> ApiKeyRow | None:
    """The key with that id, revoked (from now, unless it already was); None if there is none."""
    return fetch.one(conn, query("key_revoke"), {"key_id": key_id}, API_KEY)


def key_owner(conn, key_hash: bytes) -> KeyOwnerRow | None:
    """Who the live key with this hash speaks for; None if no live key has it. On the API's
    request path: one statement, its row built from the values."""
    with conn.cursor(row_factory=KEY_OWNER) as cur:
        return cur.execute(query("key_authenticate"), {"key_hash": key_hash}).fetchone()
