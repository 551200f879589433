"""Probes for the platform: /healthz (is this process alive?) and /readyz (can it serve?)."""

from __future__ import annotations

import logging
from functools import cache

import psycopg
from flask import Blueprint, current_app, jsonify
from psycopg_pool import PoolTimeout

from asyncqueue import db
from asyncqueue.db import maintenance
from asyncqueue.readiness import schema_readiness

log = logging.getLogger("asyncqueue.api")
bp = Blueprint("health", __name__)


@cache
def _known_migrations() -> list[str]:
    return [db.migration_version(path) for path in db.migration_files()]


@bp.get("/healthz")
def healthz():
    """Liveness: answers while the process does, whatever the database's state, so a database
    outage does not get every web process restarted."""
    return jsonify(status="ok")


ANSWER_WITHIN = 1.5  # seconds the database gets to answer a probe (the pool's wait is 2 s)


@bp.get("/readyz")
def readyz():
    """Readiness: 200 only when the database answers (within the pool's timeout) and its schema
    has every migration this code knows; otherwise a JSON 503 saying which."""
    try:
        with current_app.extensions["asyncqueue"].pool().connection() as conn:
            try:
                with db.answered_within(conn, ANSWER_WITHIN):
                    applied = maintenance.applied_migrations(conn)
            except psycopg.errors.UndefinedTable:
                applied = None
    except (PoolTimeout, psycopg.OperationalError) as exc:  # QueryCanceled is one too
        log.warning("readiness: database unreachable: %s", exc)
        response = jsonify(error="database unreachable", database="unreachable")
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response
    ready, body = schema_readiness(_known_migrations(), applied)
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    return response
