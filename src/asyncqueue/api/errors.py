"""One JSON error shape, {"error": "..."}, for every failure the API can answer with."""

from __future__ import annotations

import logging

import psycopg
from flask import Flask, g, jsonify
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

from asyncqueue import domain
from asyncqueue.logs import new_request_id

log = logging.getLogger("asyncqueue.api")

MESSAGES = {
    400: "Bad request",
    401: "API key required",
    404: "Not found",
    405: "Method not allowed",
    413: f"Request body too large (limit {domain.MAX_REQUEST_BODY} bytes)",
}


class ApiError(Exception):
    """Raised anywhere in a request to answer with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str):
    response = jsonify(error=message)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.message)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        response = error_response(err.code or 500, MESSAGES.get(err.code, err.name))
        if err.code == 405 and err.valid_methods:
            response.headers["Allow"] = ", ".join(err.valid_methods)
        return response

    @app.errorhandler(PoolTimeout)
    @app.errorhandler(psycopg.OperationalError)
    def _database_unavailable(err: Exception):
        log.warning("database unavailable request_id=%s: %s", g.get("request_id"), err)
        response = error_response(503, "Service temporarily unavailable: database unreachable")
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        request_id = g.get("request_id") or new_request_id()
        log.exception("unhandled error request_id=%s", request_id)
        return error_response(500, f"Internal server error (request id {request_id})")
