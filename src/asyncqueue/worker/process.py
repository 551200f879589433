"""The worker process: its parts, started in order, watched, and stopped in order.

    listener ── LISTEN ── wakes the dispatcher (it also wakes at the earliest next_run_at)
    dispatcher ── claim batch (one short transaction) ──> runner threads (one call each)
    runner ── outcome ──> completer ── batched, fenced, idempotent writes ──> notifier

Shutdown (SIGTERM/SIGINT): stop claiming; give calls the grace; cut the calls still open (their
sockets shut) and wait for them to return; flush the completer (every outcome and retry is
written); hand back the tasks whose calls were cut and have ended (due again at once, never a
task whose call is still open, never over a written retry); give onComplete deliveries what is
left of the grace; stop the other services. A part that dies makes the process exit 1, so the
platform restarts it; it never stays alive claiming nothing. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import threading
import time

from asyncqueue import db
from asyncqueue.config import Settings
from asyncqueue.db import claims as claims_db
from asyncqueue.logs import log_event
from asyncqueue.worker import execute, metrics
from asyncqueue.worker.claim_plans import KeptPlans
from asyncqueue.worker.completer import Completer
from asyncqueue.worker.dispatcher import Dispatcher
from asyncqueue.worker.fairness import NotifyingEvent, TeamSlots
from asyncqueue.worker.heartbeat import Heartbeat
from asyncqueue.worker.http_client import make_session
from asyncqueue.worker.notifier import Notifier
from asyncqueue.worker.pruner import Pruner
from asyncqueue.worker.runner import Runner
from asyncqueue.worker.slots import SlotTable
from asyncqueue.worker.wakeup import Listener

log = logging.getLogger("asyncqueue.worker")

SUPERVISE_EVERY = 1.0  # seconds between looks at the parts' health
# After the grace, at most about 5 s more (so 30 s with the default grace of 25 s):
CUT_WAIT = 1.5  # seconds cut calls get to return
FLUSH_WAIT = 2.0  # seconds the completer gets to write what is left, at most
HAND_BACK_WAIT = 1.0  # seconds to get a connection for the hand-back
NOTIFY_WAIT_MIN = 0.5  # seconds queued onComplete events get at least, after the flush
HAND_BACK_STATEMENT_TIMEOUT = 1.0  # seconds the hand-back query itself may take
POOL_CLOSE_WAIT = 0.5  # seconds the pool's connections get to close at exit
# How the worker's statements are planned. psycopg prepares a statement after five runs, and
# PostgreSQL may then switch to a generic plan, made once for any parameters and any table size: a
# generic task_claim_skipping seq-scans tasks (two orders of magnitude slower on a large table), and
# a generic finish or retry write made while the table was small seq-scans it once a backlog
# arrives, until something invalidates the plan (an ANALYZE or VACUUM of tasks). So the worker's
# connections prepare only what asks to be (the plain claim, db/claims.py), and every other
# statement is planned for its own parameters on each run (PostgreSQL never keeps a generic plan of
# an unprepared statement). The plain claim is on every pickup's path, and keeping its plan saves a
# planning there; its one hazard (a plan made on a nearly empty table) is handled in claim_plans.py.
# plan_cache_mode=auto, PostgreSQL's default, is set in case the database or role changed it
# (forcing generic plans would give the unprepared statements generic plans too), unless
# DATABASE_URL's own options (or PGOPTIONS) set it: an operator's choice, say force_custom_plan to
# plan every claim afresh (the claim's plans are then not managed: nothing is kept). Keepalives: see
# db.KEEPALIVE_CONNECT_KWARGS.
PLAN_CACHE_AUTO = "-c plan_cache_mode=auto"
# psycopg's prepare_threshold: never reached, so only prepare=True prepares. Not None: that
# would turn off prepare=True too.
PREPARE_ONLY_WHEN_ASKED = sys.maxsize


# PostgreSQL reads a setting's name in any case, with dashes for underscores.
OPERATOR_PLAN_CACHE_MODE = re.compile(r"plan[-_]cache[-_]mode\s*=\s*([\w-]+)", re.IGNORECASE)


def operator_plan_cache_mode(database_url: str) -> str | None:
    """The plan_cache_mode DATABASE_URL's own options (or PGOPTIONS) set, if they set one."""
    found = OPERATOR_PLAN_CACHE_MODE.search(db.own_options(database_url) or "")
    return found.group(1).lower().replace("-", "_") if found else None


def pool_connect_kwargs(database_url: str) -> dict:
    if operator_plan_cache_mode(database_url) is not None:
        return dict(db.KEEPALIVE_CONNECT_KWARGS)
    return {
        **db.KEEPALIVE_CONNECT_KWARGS,
        "options": db.options_adding(database_url, PLAN_CACHE_AUTO),
    }


def kept_plans_for(database_url: str) -> KeptPlans:
    """How the claim's kept plans are managed: not at all where the operator chose a
    plan_cache_mode other than auto (nothing is kept, or nothing can be made again)."""
    if operator_plan_cache_mode(database_url) in (None, "auto"):
        return KeptPlans()
    return KeptPlans.unmanaged()


def prepare_only_when_asked(conn) -> None:
    conn.prepare_threshold = PREPARE_ONLY_WHEN_ASKED


class StartupError(Exception):
    """The worker cannot start (nothing of it runs yet): one line for the operator."""


class WorkerProcess:
    def __init__(self, settings: Settings, services: list | None = None):
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        concurrency = settings.worker_concurrency
        self.pool = db.make_pool(
            settings.database_url,
            max(2, min(concurrency, 10)),
            name="asyncqueue-worker",
            timeout=10.0,
            connect_kwargs=pool_connect_kwargs(settings.database_url),
            configure=prepare_only_when_asked,
        )
        self.stop_requested = threading.Event()
        self.wake = threading.Event()
        self.fairness = TeamSlots(concurrency, settings.fairness_reserve)
        self.slots = SlotTable(concurrency, self.fairness.reserve)

        def session():
            return make_session(
                allow_private=settings.allow_private_networks, ca_bundle=settings.ca_bundle
            )

        self.listener = Listener(settings.database_url, NotifyingEvent(self.wake, self.fairness))
        self.notifier = Notifier(session)
        self.completer = Completer(self.pool, self.slots, self.notifier.put, self.wake)
        self.runner = Runner(
            self.slots,
            self.completer.put,
            self.wake,
            threads=concurrency + self.fairness.reserve,
            body_cap=settings.max_response_body,
            make_session=session,
        )
        self.dispatcher = Dispatcher(
            self.pool,
            self.slots,
            self.runner.submit,
            self.wake,
            worker_name=self.name,
            lease_grace=settings.lease_grace,
            fairness=self.fairness,
            plans=kept_plans_for(settings.database_url),
        )
        # Maintenance services: objects with start() and stop(), each with its own interval,
        # started after the core parts and stopped before them, in reverse order (so the
        # heartbeat, first, is the last to go and its row stays while the others stop).
        self.heartbeat = Heartbeat(self.pool, self.name, self.slots.held)
        self.services: list = [self.heartbeat, Pruner(settings, self.pool), *(services or [])]

    def add_service(self, service) -> None:
        self.services.append(service)

    # -- running ---------------------------------------------------------------------------

    def parts(self) -> list:
        return [
            self.listener,
            self.notifier,
            self.completer,
            self.runner,
            self.dispatcher,
            *self.services,
        ]

    def start(self) -> None:
        # Bound first: a port in use stops the worker before any part runs or its heartbeat
        # registers it (a row that would then show a silent worker that never was).
        metrics_server = None
        if self.settings.worker_metrics_port:
            host, port = self.settings.worker_metrics_host, self.settings.worker_metrics_port
            try:
                metrics_server = metrics.bind_worker_metrics(
                    host, port, self.settings.metrics_token
                )
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {host} port {port}: {exc}") from None
        self.listener.start()
        self.notifier.start()
        self.completer.start()
        self.runner.start()
        for service in self.services:
            service.start()
        self.dispatcher.start()
        metrics.track_in_flight(self.slots.held)
        if metrics_server is not None:
            metrics.serve_in_background(metrics_server)
        log_event(
            log,
            "worker started",
            worker=self.name,
            concurrency=self.settings.worker_concurrency,
            private_networks=self.settings.allow_private_networks,
        )

    def dead_part(self) -> str | None:
        for part in self.parts():
            alive = getattr(part, "alive", None)
            if alive is not None and not alive():
                return getattr(part, "name", type(part).__name__)
        return None

    def run(self, install_signals: bool = True) -> int:
        """Run until a signal (or request_stop()); the exit code: 0, or 1 if a part failed."""
        if install_signals:
            self._install_signal_handlers()
        try:
            self.start()
        except StartupError:
            self.pool.close(timeout=POOL_CLOSE_WAIT)
            raise
        failed = None
        while not self.stop_requested.wait(SUPERVISE_EVERY):
            failed = self.dead_part()
            if failed:
                log_event(
                    log, "worker part failed; exiting to be restarted", logging.ERROR, part=failed
                )
                break
        self.shutdown()
        return 1 if failed else 0

    def request_stop(self) -> None:
        self.stop_requested.set()

    def _install_signal_handlers(self) -> None:
        def handle(signum, _frame):
            if self.stop_requested.is_set():
                log_event(log, "second signal: exiting now", logging.WARNING)
                os._exit(1)
            log_event(
                log,
                "shutting down",
                signal=signal.Signals(signum).name,
                in_flight=self.slots.held(),
                grace=self.settings.shutdown_grace,
            )
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- stopping --------------------------------------------------------------------------

    def shutdown(self) -> None:
        end = time.monotonic() + self.settings.shutdown_grace
        self.slots.close()  # a claim still in flight hands its rows straight back
        self.dispatcher.stop()
        if not self.slots.wait_until(self.slots.no_calls_running, end):
            self._cut_calls()
        self.completer.stop(FLUSH_WAIT)
        self.hand_back()
        self.runner.stop()
        self.notifier.stop(max(end - time.monotonic(), NOTIFY_WAIT_MIN))
        for service in reversed(self.services):
            service.stop()
        self.listener.stop()
        self.pool.close(timeout=POOL_CLOSE_WAIT)
        log_event(log, "worker stopped", worker=self.name)

    def _cut_calls(self) -> None:
        """Cut the calls still open: mark their claims (so no outcome is recorded for them),
        shut their sockets, and wait a little for them to return."""
        open_calls = self.slots.running()
        for claim in open_calls:
            claim.cut = True
        cut = execute.cut_all_attempts()
        returned = self.slots.wait_until(self.slots.no_calls_running, time.monotonic() + CUT_WAIT)
        log_event(
            log,
            "calls cut at shutdown",
            open=len(open_calls),
            cut=cut,
            returned=returned,
        )

    def hand_back(self) -> None:
        """Make due again at once the tasks whose calls were cut and have ended. A call still
        open (it could not be cut) keeps its task until the lease runs out, so that no other
        worker can start it meanwhile; a written retry has no claim token left to match."""
        claims = self.slots.claims()
        ended = [c for c in claims if c.cut and not c.running and not c.outcome_queued]
        still_open = [c for c in claims if c.running]
        if ended:
            try:
                with self.pool.connection(timeout=HAND_BACK_WAIT) as conn, conn.transaction():
                    db.set_statement_timeout(conn, HAND_BACK_STATEMENT_TIMEOUT)
                    claims_db.release(conn, ((c.task_id, c.token) for c in ended))
                log_event(log, "handed back unfinished tasks", count=len(ended))
            except Exception as exc:
                log_event(
                    log,
                    "could not hand back tasks; their leases will",
                    logging.WARNING,
                    count=len(ended),
                    error=str(exc).strip(),
                )
        if still_open:
            log_event(
                log,
                "calls still open at exit; their leases will bring the tasks back",
                logging.WARNING,
                count=len(still_open),
            )
        self.slots.release(ended)


def run_worker(settings: Settings) -> int:
    """Run a worker process until SIGTERM; exits the interpreter with its code (threads still
    inside a call cannot be interrupted, and their tasks are handed back or left to leases)."""
    code = WorkerProcess(settings).run()
    logging.shutdown()
    os._exit(code)
