"""A worker's own Prometheus metrics, served on ASYNCQUEUE_WORKER_METRICS_PORT when it is set
(on ASYNCQUEUE_WORKER_METRICS_HOST).

They live in a registry of their own (not prometheus_client's global one), so only these are
served, and the `observe_*` helpers are all the worker's code needs to call.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import sys
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from asyncqueue.metrics_auth import UNAUTHORIZED, metrics_allowed

REGISTRY = CollectorRegistry(auto_describe=True)

ATTEMPTS = Counter(
    "asyncqueue_worker_attempts",
    "Callback attempts made by this worker, by what was decided (completed, retry, failed, timeout).",
    ["outcome"],
    registry=REGISTRY,
)
CALLBACK_DURATION = Histogram(
    "asyncqueue_worker_callback_duration_seconds",
    "Duration of each callback attempt's HTTP call.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "asyncqueue_worker_in_flight",
    "Tasks this worker has claimed whose outcome is not written yet.",
    registry=REGISTRY,
)
BATCH_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CLAIM_BATCH = Histogram(
    "asyncqueue_worker_claim_batch_size",
    "Tasks taken by each claim statement (0 when nothing was due).",
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
CLAIM_REPLANS = Counter(
    "asyncqueue_worker_claim_replans",
    "Times a connection made its kept claim plans again, by why (age, or slow: after a slow claim).",
    ["reason"],
    registry=REGISTRY,
)
for _reason in ("age", "slow"):  # both series exist from the start, for rate()
    CLAIM_REPLANS.labels(_reason)
OUTCOME_BATCH = Histogram(
    "asyncqueue_worker_outcome_batch_size",
    "Final outcomes written by each batched outcome statement.",
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)


def observe_attempt(outcome: str, duration_ms: float) -> None:
    ATTEMPTS.labels(outcome).inc()
    CALLBACK_DURATION.observe(duration_ms / 1000.0)


def observe_claim(tasks: int) -> None:
    CLAIM_BATCH.observe(tasks)


def observe_claim_replan(reason: str) -> None:
    CLAIM_REPLANS.labels(reason).inc()


def observe_outcome_batch(outcomes: int) -> None:
    OUTCOME_BATCH.observe(outcomes)


def track_in_flight(in_flight: Callable[[], int]) -> None:
    """Read the in-flight gauge from `in_flight()` at each scrape."""
    IN_FLIGHT.set_function(in_flight)


def metrics_app(token: str | None):
    """The WSGI app that serves REGISTRY, asking for the Bearer token when one is set."""
    serve = make_wsgi_app(REGISTRY)

    def app(environ, start_response):
        if not metrics_allowed(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [json.dumps({"error": UNAUTHORIZED}).encode()]
        return serve(environ, start_response)

    return app


# Scrapes come a few a minute: a handful of threads serves every scraper, and bounds what
# connections that never finish their request can take.
METRICS_THREADS = 4
METRICS_READ_TIMEOUT = 5.0  # seconds a connection may wait between bytes of its request
METRICS_CONNECTION_DEADLINE = 10.0  # seconds a connection may take from accept to answer
PLACE_WAIT = 1.0  # seconds a new connection waits for the place of one it displaced


class _Server(ThreadingMixIn, WSGIServer):
    """At most `threads` connections at once. When all are taken, a new one takes the place of
    the one that has waited longest without sending its whole request (so connections that
    never finish one cannot keep scrapes out); a connection whose request is in is served."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args, threads: int, deadline: float, **kwargs):
        self.slots = threading.BoundedSemaphore(threads)
        self.deadline = deadline
        self.lock = threading.Lock()
        self.reading: dict = {}  # connections whose request is not in yet, oldest first
        if ":" in args[0][0]:
            self.address_family = socket.AF_INET6
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            with self.lock:
                oldest = next(iter(self.reading), None)
            if oldest is not None:
                _shutdown(oldest)  # its thread ends and gives its place back
            if oldest is None or not self.slots.acquire(timeout=PLACE_WAIT):
                self.shutdown_request(request)  # every place serves a request: close this one
                return
        with self.lock:
            self.reading[request] = None
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def request_read(self, request) -> None:
        with self.lock:
            self.reading.pop(request, None)

    def _done(self, request) -> None:
        self.request_read(request)
        self.slots.release()

    def handle_error(self, request, client_address):
        # A client cut at its deadline or gone is not worth a traceback on stderr each.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def process_request_thread(self, request, client_address):
        # A trickling client would reset a read timeout with each byte: a timer ends it.
        cut = threading.Timer(self.deadline, _shutdown, (request,))
        cut.daemon = True
        cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cut.cancel()
            self._done(request)


def _shutdown(sock) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _QuietHandler(WSGIRequestHandler):
    timeout = METRICS_READ_TIMEOUT

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:
            self.server.request_read(self.request)  # served from here on, never displaced
        return parsed

    def log_message(self, *args) -> None:  # scrapes are not worth a log line each
        pass


def bind_worker_metrics(
    host: str,
    port: int,
    token: str | None,
    threads: int = METRICS_THREADS,
    deadline: float = METRICS_CONNECTION_DEADLINE,
) -> WSGIServer:
    """A server for this worker's metrics, bound to (host, port) but not serving yet: a port in
    use fails here, before the worker has started anything."""
    return make_server(
        host,
        port,
        metrics_app(token),
        functools.partial(_Server, threads=threads, deadline=deadline),
        _QuietHandler,
    )


def serve_in_background(server: WSGIServer) -> None:
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
