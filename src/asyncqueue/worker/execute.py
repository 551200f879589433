"""One HTTP attempt of a task's callback: the I/O half of the worker, with no decisions in it.

`perform_attempt` never raises: every attempt ends in an AttemptResult that decide.py rules on.
Redirects are followed here, hop by hop (see redirects.py for the rules): a redirect's body is
never decoded, and never read beyond domain.MAX_REDIRECT_BODY_DRAINED bytes.
"""

from __future__ import annotations

import errno
import http.client
import logging
import socket
import ssl
import time

import requests
import urllib3.exceptions

from asyncqueue import domain, http_headers
from asyncqueue.outbound.hosts import with_ascii_host
from asyncqueue.worker import redirects
from asyncqueue.worker.attempt import AttemptResult, CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.http_client import (
    WATCHDOG,
    Attempt,
    BlockedDestination,
    CallbackClient,
    IncompleteResponse,
    MalformedResponse,
)
from asyncqueue.worker.response_text import decode_body, stored_headers

__all__ = ["AttemptResult", "CallSpec", "cut_all_attempts", "perform_attempt"]

log = logging.getLogger("asyncqueue.worker")


class Unsendable(Exception):
    """The task's request cannot be sent as given; sending it again would not help."""


def perform_attempt(
    session: CallbackClient, spec: CallSpec, deadline: Deadline, body_cap: int, *, team=None
) -> AttemptResult:
    """Make the call, following redirects, before `deadline`; never raises.

    At most `body_cap` bytes of the final response's body are read and kept (decoded); the rest
    is never read, so a huge response does not grow memory. `team` is whose call it is: its name
    lookups run on that team's share of the lookup pool.
    """
    started = time.monotonic()
    try:
        return _perform(session, spec, deadline, body_cap, started, team)
    except Exception as exc:  # a fault of ours: an outcome all the same, never a stuck task
        log.exception("attempt failed inside the worker")
        return AttemptResult(
            error=f"internal error: {type(exc).__name__}: {exc}"[:500],
            internal=True,
            duration_ms=_elapsed(started),
        )


def cut_all_attempts() -> int:
    """Expire every attempt in progress (at shutdown): their sockets are shut down and their name
    lookups abandoned, so each returns at once, as timed out with `cut_short` set; how many."""
    return WATCHDOG.cut_all()


def _perform(
    client: CallbackClient, spec: CallSpec, deadline: Deadline, body_cap: int, started: float, team
) -> AttemptResult:
    headers = _with_defaults(client.default_headers, spec.headers)
    body = spec.body.encode() if domain.sends_body(spec.method) and spec.body is not None else None
    try:
        _check_headers_sendable(headers)
        request = _prepare(spec.method, spec.url, headers, body)
    except Unsendable as exc:
        return AttemptResult(error=f"invalid request: {exc}", unsendable=True)
    except requests.exceptions.InvalidHeader:  # (its message quotes the value: never shown)
        return AttemptResult(error="invalid request: a header cannot be sent", unsendable=True)
    except requests.RequestException as exc:
        return AttemptResult(error=f"invalid request: {exc}", unsendable=True)
    attempt = WATCHDOG.begin(deadline, team)
    try:
        return _follow(client, spec, request, headers, attempt, body_cap, started)
    except BlockedDestination as exc:
        error = f"blocked destination: {exc}"
        return AttemptResult(error=error, blocked=True, duration_ms=_elapsed(started))
    except redirects.RedirectRefused as exc:  # (only a blocked one is raised)
        error = f"blocked destination: {exc}"
        return AttemptResult(error=error, blocked=True, duration_ms=_elapsed(started))
    except (
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
    ) as exc:
        if attempt.expired or deadline.expired or _is_timeout(exc):
            return AttemptResult(
                timed_out=True, cut_short=attempt.cut_short, duration_ms=_elapsed(started)
            )
        return AttemptResult(error=describe_failure(exc), duration_ms=_elapsed(started))
    finally:
        WATCHDOG.end(attempt)


def _follow(client, spec, request, headers, attempt: Attempt, body_cap, started):
    """Send `request`, then each redirect's hop, and read the final response. A redirect that
    cannot be followed (too many, a non-HTTP or unparseable Location) is the final response:
    3xx responses complete the task, as the API document says; one toward a refused
    destination fails it."""
    method, url, body = spec.method, spec.url, request.body
    for followed in range(domain.MAX_REDIRECTS + 1):
        response = client.send(request, attempt)
        location = response.headers.get("location")
        if not redirects.is_redirect(response.status, location):
            return _read_final(response, attempt, body_cap, started)
        if followed == domain.MAX_REDIRECTS:
            return _read_final(response, attempt, body_cap, started)  # too many to follow
        try:
            hop = redirects.next_hop(response.status, method, url, location)
            hop_url = hop.url
            hop_body = body if hop.keeps_body else None
            hop_headers = redirects.hop_headers(
                headers,
                client.default_headers,
                own_origin=redirects.same_origin(spec.url, hop_url),
                keeps_body=hop.keeps_body,
            )
            request = _prepare(hop.method, hop_url, hop_headers, hop_body)
        except redirects.RedirectRefused as exc:
            if exc.blocked:
                _discard(response)
                raise
            return _read_final(response, attempt, body_cap, started)
        except (ValueError, requests.RequestException):  # a Location requests cannot use
            return _read_final(response, attempt, body_cap, started)
        _discard(response)
        method, url, body = hop.method, hop_url, hop_body
    raise AssertionError("unreachable")  # pragma: no cover


def _read_final(response, attempt: Attempt, body_cap: int, started: float) -> AttemptResult:
    chunks, size, complete = [], 0, False
    try:
        while size <= body_cap:
            chunk = response.read(body_cap + 1 - size, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        complete = True
    finally:
        # The rest is never read, so the connection cannot be reused; nor after a 1xx taken as
        # the final response (what follows it would be read as the next call's response).
        if not complete or size > body_cap or response.status < 200:
            response.close()
        response.release_conn()
    if attempt.expired:
        raise TimeoutError("the attempt's deadline passed while its response was read")
    raw = b"".join(chunks)
    headers, headers_truncated = stored_headers(response.headers.itermerged())
    return AttemptResult(
        status_code=response.status,
        headers=headers,
        headers_truncated=headers_truncated,
        body=decode_body(raw[:body_cap], response.headers.get("content-type")),
        body_truncated=size > body_cap,
        duration_ms=_elapsed(started),
    )


def _discard(response) -> None:
    """Be done with a redirect's response without decoding its body: a small one is read raw,
    so that its connection can be kept alive; a larger or unsized one is left unread and its
    connection closed."""
    length = response.length_remaining
    try:
        if length is None or length > domain.MAX_REDIRECT_BODY_DRAINED:
            response.close()
        else:  # (even an empty body is read: that is what frees the connection for reuse)
            response.read(decode_content=False)
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
        response.close()  # the hop's target decides the attempt, not this body
    finally:
        response.release_conn()


def header_problem(name: str, value: str) -> str | None:
    """Why a header cannot be sent as given (the API's rule, http_headers.py), or None. Names
    the header, never its value: a value is often a secret, and this text goes into the task's
    error and the log."""
    if not http_headers.is_token(name):
        return f"header name {name[:100]!r} is not a valid HTTP header name"
    if not isinstance(value, str):
        return f"header {name!r} has a value that is not text"
    problem = http_headers.value_problem(value)
    return f"header {name!r} value {problem}" if problem else None


def _check_headers_sendable(headers: dict) -> None:
    """Refuse, before anything is sent, what http.client and requests could not send."""
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            raise Unsendable(problem)


def _prepare(method: str, url: str, headers: dict, body: bytes | None):
    """A prepared request. Only the steps that apply: Session.request's merging of settings
    (cookies, hooks, auth, proxies, environment) was a quarter of a worker's CPU per callback,
    and none of it applies here."""
    request = requests.PreparedRequest()
    request.prepare_method(method)
    # The host the API judged, in the form the client can encode (a fullwidth one, say).
    request.prepare_url(with_ascii_host(url), None)
    request.prepare_headers(headers)
    request.prepare_body(body, None, None)
    return request


def _with_defaults(defaults: dict, headers: dict) -> dict:
    """The task's headers over the defaults, names compared without case."""
    given = {name.lower() for name in headers}
    merged = {k: v for k, v in defaults.items() if k.lower() not in given}
    merged.update(headers)
    return merged


# -- describing failures ----------------------------------------------------------------------


def _chain(exc: BaseException):
    """Every exception behind `exc`: causes, contexts, and exceptions held in args or .reason
    (how requests and urllib3 wrap the one that happened)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend((e.__cause__, e.__context__, getattr(e, "reason", None), *e.args))


NAME_ERRORS = (socket.gaierror, urllib3.exceptions.NameResolutionError)
TIMEOUTS = (TimeoutError, urllib3.exceptions.TimeoutError, requests.Timeout)
TLS_ERRORS = (ssl.SSLError, ssl.CertificateError, urllib3.exceptions.SSLError)
INCOMPLETE = (IncompleteResponse, http.client.IncompleteRead)
MALFORMED = (
    MalformedResponse,
    http.client.HTTPException,  # bad status line, header line too long, over 100 headers
    urllib3.exceptions.DecodeError,  # a body its Content-Encoding does not describe
)


def _is_timeout(exc: BaseException) -> bool:
    # (urllib3's NewConnectionError is a ConnectTimeoutError for compatibility: not a timeout.)
    return any(
        isinstance(e, TIMEOUTS) and not isinstance(e, urllib3.exceptions.NewConnectionError)
        for e in _chain(exc)
    )


def describe_failure(exc: BaseException) -> str:
    """A short, stable error text in the document's style: `fetch failed: ECONNREFUSED`."""
    chain = list(_chain(exc))
    if any(isinstance(e, TLS_ERRORS) for e in chain):
        return "fetch failed: TLS error"
    if any(isinstance(e, NAME_ERRORS) for e in chain):
        return "fetch failed: ENOTFOUND"
    if any(isinstance(e, INCOMPLETE) for e in chain):
        return "fetch failed: incomplete response"
    if any(isinstance(e, http.client.RemoteDisconnected) for e in chain):
        return "fetch failed: ECONNRESET"  # closed without answering
    if any(isinstance(e, MALFORMED) for e in chain):
        return "fetch failed: malformed response"
    for e in chain:
        if isinstance(e, OSError) and e.errno in errno.errorcode:
            return f"fetch failed: {errno.errorcode[e.errno]}"
    if any(
        isinstance(e, requests.ConnectionError | urllib3.exceptions.ProtocolError) for e in chain
    ):
        return "fetch failed: ECONNRESET"
    return f"fetch failed: {type(exc).__name__}"


def _elapsed(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
