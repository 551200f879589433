"""gunicorn settings (`gunicorn -c python:asyncqueue.web.gunicorn_config ...`), from the environment.

The master reads this module before forking, so a malformed setting stops it here with one
line on stderr and a non-zero exit, instead of a traceback from every worker it would boot.
Threads let one process serve keep-alive clients concurrently; the database pool is opened
lazily in each worker after fork, never in the master. The worker class is gunicorn's threaded
worker reading each request whole before a thread takes it, with time limits for headers and
bodies, and JSON for the errors gunicorn answers itself (asyncqueue/web/worker.py).
"""

import inspect

from asyncqueue.config import settings_or_exit
from asyncqueue.installed import exit_unless_installed_copy

exit_unless_installed_copy()
_settings = settings_or_exit()

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "asyncqueue.web.worker.BufferingThreadWorker"
threads = _settings.web_threads
# Connections per process; a full process sheds the one waiting longest for a new one
# (asyncqueue/web/worker.py).
worker_connections = _settings.web_connections
keepalive = 5
graceful_timeout = 25
# gunicorn's read limits, stated here (they are its defaults): longer is a JSON 414 or 431.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = None
errorlog = "-"
# gunicorn 24+ opens a control socket at one fixed path per user: several gunicorns on a machine
# (tests, benches, more than one app) would take it from each other. We do not use it.
control_socket_disable = True

# prometheus_client's multiprocess mode, so /metrics counts every gunicorn process.
# The variable must be set before the workers import prometheus_client; absent, each master
# takes a fresh temporary directory (removed when it exits).
from asyncqueue.web import metrics_multiprocess  # noqa: E402

metrics_multiprocess.prepare_directory()
on_exit = metrics_multiprocess.on_exit
child_exit = metrics_multiprocess.child_exit


def post_worker_init(worker):
    """Each web process joins the create-limit syncs as it boots, not at its first create.
    A failure here must not stop the server (gunicorn halts on a worker's boot error): the
    process then joins at its first create instead."""
    try:
        from asyncqueue.api.create_limits import for_app

        for_app(inspect.unwrap(worker.wsgi)).start()
    except Exception:
        worker.log.exception("create limits: could not start syncing at boot")
