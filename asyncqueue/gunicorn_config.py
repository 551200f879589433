"""gunicorn settings (`gunicorn -c python:asyncqueue.gunicorn_config ...`), from the environment.

Threads let one process serve keep-alive clients concurrently; the database pool is opened
lazily in each worker after fork, never in the master. The worker class is gunicorn's threaded
worker reading each request whole before a thread takes it, with time limits for headers and
bodies, and JSON for the errors gunicorn answers itself (asyncqueue/web_worker.py).
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "asyncqueue.web_worker.BufferingThreadWorker"
threads = int(os.environ.get("ASYNCQUEUE_WEB_THREADS", "4"))
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
