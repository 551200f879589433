"""How the worker follows a redirect: pure rules, no I/O.

* 301, 302, 303, 307 and 308 with a Location are followed, at most domain.MAX_REDIRECTS times.
  One that cannot be followed (one hop too many, a non-HTTP or unparseable Location) is the
  call's final response; one toward a refused destination (user name or password in the URL, or
  an address the policy blocks) fails the task.
* Method and body, as requests and browsers do: 303 turns any method but HEAD into GET, 302 does
  too, 301 turns POST into GET; only 307 and 308 resend the body (a hop that drops the body drops
  its Content-Type too).
* The task's own headers go only to the task's own origin (same scheme, host and port; an
  upgrade from http to https on the same host and default ports counts as the same). A hop to
  another origin carries only ours: User-Agent, Accept, Accept-Encoding, the X-AsyncQueue-*
  headers, and Content-Type when the body is resent.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from asyncqueue.worker.response_text import header_text

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BODY_KEEPING_STATUSES = frozenset({307, 308})
OUR_HEADER_PREFIX = "x-asyncqueue-"
DEFAULT_PORTS = {"http": 80, "https": 443}


class RedirectRefused(Exception):
    """A Location the worker will not follow; the message says why. `blocked`: following it
    would break the destination policy (a failure); otherwise the redirect simply cannot be
    followed, and its own response is the call's result."""

    def __init__(self, message: str, *, blocked: bool = False):
        super().__init__(message)
        self.blocked = blocked


@dataclass(frozen=True)
class Hop:
    method: str
    url: str
    keeps_body: bool


def is_redirect(status: int, location: str | None) -> bool:
    return status in REDIRECT_STATUSES and bool(location)


def next_hop(status: int, method: str, url: str, location: str) -> Hop:
    """The request a redirect asks for. `location` is the header as received (latin-1 text, as
    http.client gives it; servers send UTF-8 bytes in it, as requests assumes too)."""
    try:
        target = urljoin(url, header_text(location).strip())
        parts = urlsplit(target)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError as exc:
        raise RedirectRefused(f"redirect to an invalid URL ({exc})") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise RedirectRefused(f"redirect to a non-HTTP URL ({parts.scheme or 'no'} scheme)")
    if parts.username is not None or parts.password is not None:
        raise RedirectRefused("redirect to a URL with a user name or password", blocked=True)
    if not parts.hostname:
        raise RedirectRefused("redirect to a URL without a host")
    if status in (302, 303) and method != "HEAD" or status == 301 and method == "POST":
        method = "GET"
    return Hop(method, target, status in BODY_KEEPING_STATUSES)


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


def same_origin(first_url: str, url: str) -> bool:
    """Whether the task's own headers may go to `url`: the task's origin, or its https form."""
    a, b = origin(first_url), origin(url)
    if a == b:
        return True
    return a == ("http", b[1], 80) and b == ("https", a[1], 443)


def hop_headers(
    task_headers: dict, default_headers: dict, *, own_origin: bool, keeps_body: bool
) -> dict:
    """The headers a hop is sent with. `task_headers` are the first request's (the task's over
    the defaults, with the X-AsyncQueue-* ones)."""
    if own_origin:
        headers = dict(task_headers)
    else:
        headers = dict(default_headers)
        for name, value in task_headers.items():
            lower = name.lower()
            if lower.startswith(OUR_HEADER_PREFIX) or keeps_body and lower == "content-type":
                headers[name] = value
    if not keeps_body:
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return headers
