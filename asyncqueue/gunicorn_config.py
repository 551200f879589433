"""gunicorn settings (`gunicorn -c python:asyncqueue.gunicorn_config ...`), from the environment.

Threads let one process serve keep-alive clients concurrently; the database pool is opened
lazily in each worker after fork, never in the master.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("ASYNCQUEUE_WEB_THREADS", "4"))
keepalive = 5
graceful_timeout = 25
accesslog = None
errorlog = "-"
# gunicorn 24+ opens a control socket at one fixed path per user: several gunicorns on a machine
# (tests, benches, more than one app) would take it from each other. We do not use it.
control_socket_disable = True

# ops-wiring: prometheus_client's multiprocess mode, so /metrics counts every gunicorn process.
# The variable must be set before the workers import prometheus_client; absent, each master
# takes a fresh temporary directory (removed when it exits).
from asyncqueue import metrics_multiprocess  # noqa: E402  (ops-wiring)

metrics_multiprocess.prepare_directory()  # ops-wiring
on_exit = metrics_multiprocess.on_exit  # ops-wiring
child_exit = metrics_multiprocess.child_exit  # ops-wiring
