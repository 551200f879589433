"""API-key authentication, exactly as the API document describes it."""

from __future__ import annotations

from dataclasses import dataclass

from flask import request

from asyncqueue import db, keys
from asyncqueue.api.errors import ApiError
from asyncqueue.bearer import HTTP_WHITESPACE, bearer_credentials


@dataclass(frozen=True)
class Caller:
    team_id: str
    plan: str
    key_id: str


def presented_key() -> str | None:
    """The key from `Authorization: Bearer <key>` or, failing that, `X-API-Key: <key>`."""
    key = bearer_credentials(request.headers.get("Authorization"))
    if key is not None:
        return key
    return request.headers.get("X-API-Key", "").strip(HTTP_WHITESPACE) or None


def authenticate(conn) -> Caller:
    key = presented_key()
    if key is None:
        raise ApiError(401, "API key required")
    # A malformed key (typo, truncation, wrong checksum) is refused without a query.
    if not keys.is_well_formed(key):
        raise ApiError(401, "Invalid or revoked API key")
    row = conn.execute(db.query("key_authenticate"), {"key_hash": keys.hash_key(key)}).fetchone()
    if row is None:
        raise ApiError(401, "Invalid or revoked API key")
    return Caller(team_id=row["team_id"], plan=row["plan"], key_id=row["key_id"])
