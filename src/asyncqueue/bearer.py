"""The credentials of an `Authorization: Bearer <credentials>` header, by HTTP's rules."""

from __future__ import annotations

# Only HTTP's own whitespace (space, tab) around a value is ignored: str.strip() would also drop
# a no-break space or NEL, letting a mangled credential stand for the real one.
HTTP_WHITESPACE = " \t"


def bearer_credentials(authorization: str | None) -> str | None:
    """The credentials of a Bearer Authorization header (scheme in any case), else None."""
    scheme, _, credentials = (authorization or "").strip(HTTP_WHITESPACE).partition(" ")
    credentials = credentials.strip(HTTP_WHITESPACE)
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return None
