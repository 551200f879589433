"""One HTTP attempt of a task's callback: the I/O half of the worker, with no decisions in it."""

from __future__ import annotations

import errno
import time

import requests

from asyncqueue.worker.attempt import AttemptResult, CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.http_client import WATCHDOG, BlockedDestination

__all__ = ["AttemptResult", "CallSpec", "perform_attempt"]


def _errno_name(exc: BaseException) -> str | None:
    """The errno name (ECONNREFUSED, ...) found anywhere in an exception's chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in errno.errorcode:
            return errno.errorcode[exc.errno]
        if "NameResolutionError" in type(exc).__name__:
            return "ENOTFOUND"
        nested = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = exc.__cause__ or exc.__context__ or nested or getattr(exc, "reason", None)
    return None


def describe_failure(exc: BaseException) -> str:
    """A short, stable error text in the document's style: `fetch failed: ECONNREFUSED`."""
    if isinstance(exc, requests.TooManyRedirects):
        return "fetch failed: too many redirects"
    if isinstance(exc, requests.exceptions.SSLError):
        return "fetch failed: TLS error"
    name = _errno_name(exc)
    if name:
        return f"fetch failed: {name}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.ConnectionError):
        return "fetch failed: ECONNRESET"
    return f"fetch failed: {type(exc).__name__}"


def perform_attempt(
    session: requests.Session, spec: CallSpec, deadline: Deadline, body_cap: int
) -> AttemptResult:
    """Make the call, following redirects, before `deadline`.

    At most `body_cap` bytes of the response body are read and kept; the rest is never read, so
    a huge response does not grow memory.
    """
    data = None
    if spec.method != "GET" and spec.body is not None:
        data = spec.body.encode()
    started = time.monotonic()
    time_limit = deadline.remaining()
    attempt = WATCHDOG.begin(time_limit)
    try:
        # Prepared here rather than by Session.request: its merging of session settings (headers,
        # cookies, hooks, proxies, environment) was a quarter of a worker's CPU per callback, and
        # none of it applies (no cookies are kept, no proxies or environment are used).
        request = requests.PreparedRequest()
        request.prepare(
            method=spec.method,
            url=spec.url,
            headers=_with_defaults(session, spec.headers),
            data=data,
        )
        response = session.send(
            request,
            timeout=(time_limit, time_limit),
            allow_redirects=True,
            stream=True,
            proxies={},
        )
        try:
            chunks, size, truncated = [], 0, False
            for chunk in response.iter_content(chunk_size=16384):
                if size + len(chunk) > body_cap:
                    chunks.append(chunk[: body_cap - size])
                    truncated = True
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            response.close()
        if attempt.expired:
            raise requests.Timeout("deadline")
        raw = b"".join(chunks)
        return AttemptResult(
            status_code=response.status_code,
            headers={k.lower(): _storable(v) for k, v in response.headers.items()},
            body=_storable(raw.decode(response.encoding or "utf-8", errors="replace")),
            body_truncated=truncated,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
    except BlockedDestination as exc:
        return AttemptResult(
            error=f"blocked destination: {exc}", blocked=True, duration_ms=_elapsed(started)
        )
    except (requests.RequestException, OSError) as exc:
        if attempt.expired or isinstance(exc, requests.Timeout):
            return AttemptResult(timed_out=True, duration_ms=_elapsed(started))
        return AttemptResult(error=describe_failure(exc), duration_ms=_elapsed(started))
    finally:
        WATCHDOG.end(attempt)


def _with_defaults(session: requests.Session, headers: dict) -> dict:
    """The task's headers over the session's defaults, names compared without case, as
    Session.request would merge them."""
    given = {name.lower() for name in headers}
    merged = {k: v for k, v in session.headers.items() if k.lower() not in given}
    merged.update(headers)
    return merged


def _storable(text: str) -> str:
    """The text with NUL replaced by U+FFFD: PostgreSQL's text and jsonb cannot hold U+0000."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _elapsed(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def cut_all_attempts() -> int:
    """Expire every attempt in progress (their sockets are shut, so their calls end now), for a
    worker's shutdown; the number cut."""
    with WATCHDOG._cond:
        attempts = list(WATCHDOG._attempts)
    for attempt in attempts:
        attempt.expire()
    return len(attempts)
