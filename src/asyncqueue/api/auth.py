"""API-key authentication, exactly as the API document describes it."""

from __future__ import annotations

from flask import request

from asyncqueue import keys
from asyncqueue.api.errors import ApiError
from asyncqueue.bearer import HTTP_WHITESPACE, bearer_credentials
from asyncqueue.db import teams as team_rows
from asyncqueue.db.rows import KeyOwnerRow

# A request's caller is what its key speaks for, as the database has it: the row itself.
Caller = KeyOwnerRow


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
    caller = team_rows.key_owner(conn, keys.hash_key(key))
    if caller is None:
        raise ApiError(401, "Invalid or revoked API key")
    return caller
