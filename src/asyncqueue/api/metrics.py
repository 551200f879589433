"""GET /metrics in the Prometheus text format: the web's HTTP requests, and queue-wide figures
read from the database at scrape time (so every web process reports the same).

Under gunicorn the request metrics are kept in prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set up by asyncqueue/web/gunicorn_config.py), so a scrape answered by
any one process counts the requests of all of them. Without that variable (the Flask test
client, a single process) they are kept in the process. No metric has a per-team label.
"""

from __future__ import annotations

import logging
import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from asyncqueue import db, domain
from asyncqueue.api.errors import error_response
from asyncqueue.db import maintenance
from asyncqueue.db.rows import QueueFigureRow
from asyncqueue.metrics_auth import UNAUTHORIZED, metrics_allowed

ANSWER_WITHIN = 1.5  # seconds the database gets to answer a scrape (a hung one: no hang here)

log = logging.getLogger("asyncqueue.metrics")

# Request methods a label names as they are (any other is "other": never a made-up one).
METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
UNMATCHED_ROUTE = "unmatched"  # 404s: never the raw path, which anyone can make up

# Not in prometheus_client's global registry: each scrape builds its own (see registry_for_scrape).
HTTP_REQUESTS = Counter(
    "asyncqueue_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
    registry=None,
)
HTTP_DURATION = Histogram(
    "asyncqueue_http_request_duration_seconds",
    "Time to answer HTTP requests, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=None,
)

# The classic text format, which every Prometheus version reads (our names are all plain ASCII).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

bp = Blueprint("metrics", __name__)


def route_label(rule) -> str:
    """The route template a request matched (`/v1/tasks/<task_id>`), never its raw path."""
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def queue_families(rows: list[QueueFigureRow]) -> list:
    """The queue-wide metric families from queue_figures' rows (pure: tested in a table)."""
    tasks = dict.fromkeys(domain.STATUSES, 0.0)
    deleted = dict.fromkeys(domain.FINISHED, 0.0)
    lag = live = 0.0
    for row in rows:
        if row.figure == "tasks" and row.label in tasks:
            tasks[row.label] = row.value
        elif row.figure == "deleted" and row.label in deleted:
            deleted[row.label] = row.value
        elif row.figure == "lag":
            lag = max(0.0, row.value or 0.0)
        elif row.figure == "workers":
            live = row.value
    by_status = GaugeMetricFamily(
        "asyncqueue_tasks", "Tasks in the table, by status.", labels=["status"]
    )
    for status, n in tasks.items():
        by_status.add_metric([status], n)
    finished = CounterMetricFamily(
        "asyncqueue_tasks_finished",
        "Tasks that reached a final status, ever (tasks deleted by retention included).",
        labels=["status"],
    )
    for status in domain.FINISHED:
        finished.add_metric([status], tasks[status] + deleted[status])
    return [
        by_status,
        finished,
        GaugeMetricFamily(
            "asyncqueue_queue_lag_seconds",
            "Age of the oldest task that is due but not claimed (0 when none is waiting).",
            value=lag,
        ),
        GaugeMetricFamily(
            "asyncqueue_workers_live",
            f"Workers whose heartbeat is at most {domain.SILENT_AFTER:g} s old.",
            value=live,
        ),
    ]


class QueueCollector:
    """Reads the queue-wide figures with one cheap query per scrape."""

    def __init__(self, pool):
        self.pool = pool

    def collect(self):
        up = 1.0
        try:
            with self.pool.connection() as conn, db.answered_within(conn, ANSWER_WITHIN):
                rows = maintenance.queue_figures(conn, domain.SILENT_AFTER)
            yield from queue_families(rows)
        except Exception as exc:  # still serve the request metrics; say the queue's are missing
            log.warning("queue metrics unavailable: %s", exc)
            up = 0.0
        yield GaugeMetricFamily(
            "asyncqueue_database_up",
            "1 if this scrape could read the queue's figures from the database, else 0.",
            value=up,
        )


def registry_for_scrape(pool) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(HTTP_REQUESTS)
        registry.register(HTTP_DURATION)
    registry.register(QueueCollector(pool))
    return registry


@bp.get("/metrics")
def metrics():
    settings = current_app.extensions["asyncqueue"].settings
    if not metrics_allowed(request.headers.get("Authorization"), settings.metrics_token):
        response = error_response(401, UNAUTHORIZED)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    registry = registry_for_scrape(current_app.extensions["asyncqueue"].pool())
    return Response(generate_latest(registry), content_type=CONTENT_TYPE)


def _start_timer():
    g.metrics_started = time.perf_counter()


# Labelled children by their labels: `labels()` validates and locks on every call; the set is
# small (routes x methods x statuses), and a child stays valid for the process's life.
_request_counters: dict[tuple[str, str, str], object] = {}
_duration_histograms: dict[tuple[str, str], object] = {}


def _observe(response):
    started = g.get("metrics_started")
    if started is not None:
        route, method = route_label(request.url_rule), method_label(request.method)
        key = (route, method, str(response.status_code))
        counter = _request_counters.get(key)
        if counter is None:
            counter = _request_counters.setdefault(key, HTTP_REQUESTS.labels(*key))
        counter.inc()
        histogram = _duration_histograms.get(key[:2])
        if histogram is None:
            histogram = _duration_histograms.setdefault(key[:2], HTTP_DURATION.labels(*key[:2]))
        histogram.observe(time.perf_counter() - started)
    return response


def install_metrics(app: Flask) -> None:
    """GET /metrics, and the hooks that count and time every request."""
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)
