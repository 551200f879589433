"""The Flask application factory. Nothing connects at import or creation time: the pool opens on
the first request, so each gunicorn worker (after fork) gets its own."""

from __future__ import annotations

import os
import threading

from flask import Flask, g, jsonify

from asyncqueue import db, domain
from asyncqueue.api.errors import register_error_handlers
from asyncqueue.api.health import bp as health_bp
from asyncqueue.api.metrics import install_metrics
from asyncqueue.api.openapi import openapi_document
from asyncqueue.api.tasks import bp as tasks_bp
from asyncqueue.config import Settings
from asyncqueue.logs import configure_logging, new_request_id


class Database:
    """A connection pool per process, opened on first use (and again in a forked child)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pool = None
        self._pid = None
        self._lock = threading.Lock()

    def pool(self):
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = db.make_pool(
                        self.settings.database_url,
                        self.settings.db_pool_size,
                        name="asyncqueue-web",
                        timeout=2.0,
                    )
                    self._pid = os.getpid()
        return self._pool

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None


class AsyncQueueExtension:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.database = Database(settings)

    def pool(self):
        return self.database.pool()


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask("asyncqueue")
    app.config["MAX_CONTENT_LENGTH"] = domain.MAX_REQUEST_BODY
    app.json.sort_keys = False  # keep the document's field order
    app.extensions["asyncqueue"] = AsyncQueueExtension(settings)

    @app.before_request
    def _request_id():
        g.request_id = new_request_id()

    @app.after_request
    def _add_request_id(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.get("/v1/openapi.json")
    def openapi():
        return jsonify(openapi_document())

    app.register_blueprint(tasks_bp)
    app.register_blueprint(health_bp)
    install_metrics(app)
    register_error_handlers(app)
    return app
