"""The one rule for who may read metrics (the web's /metrics and a worker's metrics port)."""

from __future__ import annotations

import hmac

UNAUTHORIZED = (
    "Metrics require the token in ASYNCQUEUE_METRICS_TOKEN, sent as 'Authorization: Bearer <token>'"
)


def metrics_allowed(authorization: str | None, token: str | None) -> bool:
    """True when no token is configured, or the Authorization header carries it as a Bearer
    token (compared in constant time)."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
