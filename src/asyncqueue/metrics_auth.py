"""The one rule for who may read metrics (the web's /metrics and a worker's metrics port)."""

from __future__ import annotations

import hmac

from asyncqueue.bearer import bearer_credentials

UNAUTHORIZED = (
    "Metrics require the token in ASYNCQUEUE_METRICS_TOKEN, sent as 'Authorization: Bearer <token>'"
)


def metrics_allowed(authorization: str | None, token: str | None) -> bool:
    """True when no token is configured, or the Authorization header carries it as a Bearer
    token (compared in constant time)."""
    if not token:
        return True
    given = bearer_credentials(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
