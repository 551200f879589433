"""The /v1/tasks resource: create, get, list and cancel."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
from flask import Blueprint, current_app, jsonify, request
from psycopg.types.json import Jsonb
from werkzeug.exceptions import RequestEntityTooLarge

from asyncqueue import domain, keys
from asyncqueue.api.auth import Caller, authenticate, presented_key
from asyncqueue.api.create_limits import create_limits
from asyncqueue.api.errors import ApiError
from asyncqueue.api.schemas import validate_list_query, validate_new_task
from asyncqueue.db import tasks as task_rows
from asyncqueue.db.rows import TaskRow
from asyncqueue.task_json import task_to_json

bp = Blueprint("tasks", __name__, url_prefix="/v1/tasks")


def _pool():
    return current_app.extensions["asyncqueue"].pool()


@contextmanager
def authenticated():
    """A pooled connection and the caller it authenticates.

    Connections are not pinged before use (that would cost a round trip per request); instead a
    connection found dead by the authentication query (the server restarted, or the backend was
    terminated) is dropped and the read-only query tried again on another; after a restart every
    pooled connection may be dead, hence up to pool size + 1 tries.
    """
    pool = _pool()
    tries = pool.max_size + 1
    for attempt in range(1, tries + 1):
        with pool.connection() as conn:
            try:
                caller = authenticate(conn)
            except psycopg.OperationalError:
                if attempt == tries or not conn.broken:
                    raise
                continue  # the pool discards the broken connection
            yield conn, caller
            return


def _request_bytes() -> bytes:
    """The request body, at most MAX_REQUEST_BODY bytes (413 above, however it is framed)."""
    if request.content_length is not None:
        return request.get_data(cache=False)  # werkzeug refuses a declared length over the limit
    # No length (chunked): werkzeug would stop reading at the limit and pass the cut body on, so
    # read one byte past it ourselves. The server ends the stream ("input_terminated").
    if not request.environ.get("wsgi.input_terminated"):
        return b""
    data = request.environ["wsgi.input"].read(domain.MAX_REQUEST_BODY + 1)
    if len(data) > domain.MAX_REQUEST_BODY:
        raise RequestEntityTooLarge()
    return data


def _json_body():
    raw = _request_bytes()
    if not raw.strip():
        raise ApiError(400, "Request body must be a JSON object")
    try:
        payload = json.loads(raw)
        # A lone surrogate escape ("\ud800") parses, but is not text anything can store.
        json.dumps(payload, ensure_ascii=False).encode()
    except RecursionError:
        # Arrays or objects nested past the parser's depth; a task is two levels deep.
        raise ApiError(400, "Request body is nested too deeply") from None
    except (ValueError, UnicodeError):
        raise ApiError(400, "Malformed JSON in request body") from None
    return payload


def _task_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "Task not found") from None


def _owned_task(conn, caller: Caller, task_id: uuid.UUID) -> TaskRow:
    row = task_rows.get(conn, task_id)
    if row is None:
        raise ApiError(404, "Task not found")
    if row.team_id != caller.team_id:
        raise ApiError(403, "Access denied")
    return row


@bp.post("")
def create_task():
    """Create a task. The common case, a valid request with a good key, costs one statement;
    anything else takes the slow path, which authenticates first (401 before 400) and then
    says exactly what is wrong."""
    settings = current_app.extensions["asyncqueue"].settings
    key = presented_key()
    if key is None:
        raise ApiError(401, "API key required")
    if not keys.is_well_formed(key):
        raise ApiError(401, "Invalid or revoked API key")
    key_hash = keys.hash_key(key)  # once: the limiter and the insert both go by it
    limiter = create_limits()
    if limiter.enabled and not limiter.knows(key_hash):
        # The key's first create in this process: one read to learn its team and plan (a 401
        # here if it is not a live key), so that every create is counted against its team.
        try:
            with authenticated() as (_, caller):
                limiter.learn(key_hash, caller.team_id, caller.plan)
        except ApiError:
            limiter.forget(key_hash)
            raise
    refusal, admission = limiter.admit(key_hash)
    try:
        if refusal is not None:
            # Over the team's rate; but a revoked key is told so (401) rather than to wait.
            # Off the hot path: a refused request may cost one read.
            with authenticated():
                pass
            return refusal
        response = _create(settings, key_hash)
        admission = None  # created: the admission stands
        return response
    except ApiError as err:
        if err.status == 401:
            limiter.forget(key_hash)
        raise
    finally:
        limiter.undo(admission)  # not created: only tasks made use up the team's budget


def _create(settings, key_hash: bytes):
    rules = {
        "allow_private_networks": settings.allow_private_networks,
        "max_delay": timedelta(days=settings.max_delay_days),
        "now": datetime.now(UTC),
    }
    try:
        payload, problem = _json_body(), None
    except ApiError as err:
        payload, problem = None, err
    task, error = (
        (None, None) if problem else validate_new_task(payload, plan=MOST_GENEROUS_PLAN, **rules)
    )
    if task is not None:
        row = _insert_for_key(task, key_hash)
        if row is not None:
            return jsonify(task=task_to_json(row)), 201
    with authenticated() as (_, caller):
        if problem:
            raise problem
        task, error = validate_new_task(payload, plan=caller.plan, **rules)
        if error:
            raise ApiError(400, error)
    # Valid for this team's plan after all (its plan or key changed in between): try once more.
    row = _insert_for_key(task, key_hash)
    if row is None:
        raise ApiError(401, "Invalid or revoked API key")
    return jsonify(task=task_to_json(row)), 201


MOST_GENEROUS_PLAN = max(domain.PLAN_MAX_WAIT_TIME, key=domain.PLAN_MAX_WAIT_TIME.get)
# The plans' limits as the insert takes them: the same JSON for every request, encoded once.
PLAN_MAX_WAIT_JSON = json.dumps(domain.PLAN_MAX_WAIT_TIME)


def _insert_for_key(task: dict, key_hash: bytes) -> TaskRow | None:
    params = {
        **task,
        "headers": Jsonb(task["headers"]),
        "key_hash": key_hash,
        "plan_max_wait": PLAN_MAX_WAIT_JSON,
    }
    pool = _pool()
    for attempt in range(1, pool.max_size + 2):
        with pool.connection() as conn:
            try:
                return task_rows.insert_for_key(conn, params)
            except psycopg.errors.AdminShutdown:
                # The server ended this connection before the insert committed, so nothing was
                # inserted: retry on another. (In autocommit the insert commits only at the
                # protocol's Sync, and psycopg returns only after the ReadyForQuery that follows
                # it; a termination before that aborts the transaction. One case breaks this:
                # under synchronous replication, a backend terminated while waiting for its
                # standby has committed locally, and this retry makes a second task.) Any other
                # failure may have inserted, so it is not retried.
                if attempt == pool.max_size + 1:
                    raise


@bp.get("")
def list_tasks():
    with authenticated() as (conn, caller):
        params, error = validate_list_query(request.args)
        if error:
            raise ApiError(400, error)
        rows, total = task_rows.list_page(
            conn,
            caller.team_id,
            status=params["status"],
            sort_order=params["sort_order"],
            limit=params["limit"],
            offset=params["offset"],
        )
    return jsonify(
        tasks=[task_to_json(r) for r in rows],
        pagination={
            "total": total,
            "limit": params["limit"],
            "offset": params["offset"],
            "hasMore": params["offset"] + len(rows) < total,
        },
    )


@bp.get("/<task_id>")
def get_task(task_id: str):
    with authenticated() as (conn, caller):
        row = _owned_task(conn, caller, _task_id(task_id))
    return jsonify(task=task_to_json(row))


@bp.post("/<task_id>/cancel")
def cancel_task(task_id: str):
    with authenticated() as (conn, caller):
        tid = _task_id(task_id)
        row = task_rows.cancel(conn, tid, caller.team_id)
        if row is None:
            current = _owned_task(conn, caller, tid)
            raise ApiError(
                409,
                f"Task cannot be cancelled: its status is {current.status}; "
                f"only {' or '.join(domain.WAITING)} tasks can be cancelled",
            )
    return jsonify(task=task_to_json(row))
