"""Per-team create limits in a web process: the check on the create path, and the thread that
syncs this process's counts with the others' (the maths is asyncqueue/api/create_limiter.py).

An admission makes no database call: a request's key is mapped to its team from memory (learnt
by one read at the key's first create in this process) and the decision is CreateLimiter's; a
team new to the process waits for the next sync first (milliseconds), once. A create past this
process's allowance, with the team's counts still under its rate, waits for a sync started at
once (one sync for every create waiting then) which decides it on fresh counts: a refusal is
only ever decided on counts the team has surely made. Only creates that succeed count: an
admission is given back when the request then fails (401, 400, ...), and a key answered 401 is
forgotten. A background thread per process syncs every SYNC_INTERVAL, and when a create asks, on
a connection of its own: one short transaction, serialised with the other processes' syncs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from flask import Flask, current_app

from asyncqueue import db
from asyncqueue.api.create_limiter import (
    ADMITTED,
    ASK,
    KEPT_TENTHS,
    LOCAL,
    SYNC_INTERVAL,
    CreateLimiter,
    TeamSync,
    retry_after_header,
)
from asyncqueue.api.errors import error_response
from asyncqueue.db import create_limits as create_limit_rows
from asyncqueue.logs import log_event

log = logging.getLogger("asyncqueue.api")

KEYS_REMEMBERED = 10_000  # key -> team entries kept per process (the oldest dropped when full)
PRUNE_EVERY = 50  # syncs (about 10 s) between two deletions of old counts
SYNC_DEADLINE = 2.0  # seconds a sync may take, lock wait included, before it is abandoned
# A create waiting for a sync to decide it: a successful sync answers every one, and once syncs
# are stale (STALE_AFTER) it decides on this process's counts, so this only bounds a wait gone
# wrong.
ASK_TIMEOUT = 10.0


def process_name() -> str:
    """This web process among the others in the syncs' tables: host, pid, and a random part
    (a pid is reused after a restart; the old name's rows must not be taken for the new's)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CreateLimits:
    def __init__(self, database_url: str, rates: dict[str, float | None]):
        self.database_url = database_url
        self.enabled = any(rates.values())
        self.limiter = CreateLimiter(rates)
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)  # notified after every sync
        self._team_of_key: dict[bytes, object] = {}
        self._pid: int | None = None
        self._sync_now = threading.Event()
        self._stopped = threading.Event()
        self.process = process_name()

    def admit(self, key_hash: bytes):
        """(None, admission) if this create may go ahead, else (the 429 response, None).

        The admission counts the create at once (so that concurrent requests cannot all take the
        last slot), and must be given back with `undo` if the create then fails (401, 400, ...):
        only tasks actually created use up a team's budget. A key this process has not learnt
        (`learn`) is let through uncounted (admission None): the caller learns it first."""
        if not self.enabled:
            return None, None
        team_id = self._team_of_key.get(key_hash)
        if team_id is None:
            return None, None
        self._ensure_syncing()
        with self._lock:
            if self.limiter.needs_sync(team_id, time.monotonic()):
                self._await_team_sync(team_id)
            now = time.monotonic()
            wait = self.limiter.admit(team_id, now)
            if wait == ASK:
                wait, tenth = self._await_decision(team_id)
                if wait is None:
                    return None, (team_id, tenth)
            elif wait is None:
                return None, (team_id, self.limiter.tenth_at(now))
            window = self.limiter.teams[team_id]
            plan, rate = window.plan, self.limiter.rate(window)
        plan_text = f"the {plan} plan" if plan else "your plan"
        response = error_response(
            429,
            f"Too many tasks created: {plan_text} allows {rate:g} per second; "
            f"retry after {retry_after_header(wait)} s",
        )
        response.headers["Retry-After"] = retry_after_header(wait)
        return response, None

    def _await_team_sync(self, team_id) -> None:
        """Wait (the lock held by the caller is released meanwhile) for a sync that tells this
        process what the others may still admit for the team: once per team per process, and
        again after the team has been away FORGET_AFTER. A sync takes milliseconds; the wait
        ends at the latest when syncs count as stale (STALE_AFTER), and the create is then
        decided on this process's own counts, as while the database is away."""
        now = time.monotonic()
        self.limiter.track(team_id, now)  # with the plan last known, if the team was forgotten
        self._sync_now.set()
        self._synced.wait_for(
            lambda: getattr(self.limiter.teams.get(team_id), "synced", True),
            timeout=max(0.0, self.limiter.stale_at() - now),
        )

    def _await_decision(self, team_id):
        """Wait (the caller's lock released meanwhile) for a sync to decide a create past this
        process's allowance: (None, the tenth it is counted in) if admitted, else (the seconds
        to wait, None). A failed sync is no answer: the create waits for the next one, until
        syncs are stale (STALE_AFTER); it is then decided on this process's counts alone."""
        self._sync_now.set()
        deadline = time.monotonic() + ASK_TIMEOUT
        while True:
            outcome = self.limiter.take_outcome(team_id)
            now = time.monotonic()
            if outcome is not None or now >= min(deadline, self.limiter.stale_at()):
                break
            # Woken by every sync, failed or not; the stale moment moves with each success.
            self._synced.wait(min(deadline, self.limiter.stale_at()) - now)
        taken = outcome is not None
        outcome = outcome if taken else LOCAL
        if outcome == ADMITTED:  # counted by the sync that decided it, at its moment
            return None, self.limiter.tenth_at(self.limiter.synced_at)
        if outcome == LOCAL:
            if not taken:
                self.limiter.withdraw(team_id)
            now = time.monotonic()
            wait = self.limiter.admit(team_id, now, may_ask=False, asked=True)
            return (None, self.limiter.tenth_at(now)) if wait is None else (wait, None)
        return outcome, None

    def undo(self, admission) -> None:
        """Give back an admission whose create did not happen."""
        if admission is None:
            return
        with self._lock:
            self.limiter.undo(*admission)

    def forget(self, key_hash: bytes) -> None:
        """The key (by its hash, keys.hash_key) was refused (401): stop mapping it to a team, so
        it counts against nothing."""
        with self._lock:
            self._team_of_key.pop(key_hash, None)

    def knows(self, key_hash: bytes) -> bool:
        """Whether this process has learnt the key's team (by the key's hash)."""
        return key_hash in self._team_of_key

    def learn(self, key_hash: bytes, team_id, plan: str) -> None:
        """The key with this hash is a live key of `team_id`, on `plan` (read from the
        database): remember whose key it is, and the team's plan until a sync says otherwise."""
        if not self.enabled:
            return
        self._ensure_syncing()
        with self._lock:
            while len(self._team_of_key) >= KEYS_REMEMBERED:
                # dicts keep insertion order: the first entry is the oldest learnt.
                del self._team_of_key[next(iter(self._team_of_key))]
            self._team_of_key[key_hash] = team_id
            self.limiter.track(team_id, time.monotonic(), plan)

    def stop(self) -> None:
        """End the sync thread (tests; a process that exits just leaves it, a daemon)."""
        self._stopped.set()
        self._sync_now.set()

    def start(self) -> None:
        """Sync at once: this process counts among the live ones before its first request, so
        that no process sharing a team with it takes the whole of the team's headroom."""
        if self.enabled:
            self._ensure_syncing()
            self._sync_now.set()

    # -- the sync thread ------------------------------------------------------------------------

    def _ensure_syncing(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (gunicorn forks)
                self._pid = os.getpid()
                self.limiter = CreateLimiter(self.limiter.rates)
                self.process = process_name()
                threading.Thread(
                    target=self._sync_forever, name="create-limits", daemon=True
                ).start()

    def _sync_forever(self) -> None:
        conn, syncs, failures = None, 0, 0
        while not self._stopped.is_set():
            self._sync_now.wait(SYNC_INTERVAL)
            self._sync_now.clear()
            if self._stopped.is_set():
                break
            try:
                if conn is None or conn.closed:
                    conn = create_limit_rows.connect(self.database_url)
                self.sync(conn)
                syncs, failures = syncs + 1, 0
                if syncs % PRUNE_EVERY == 0:
                    create_limit_rows.prune(conn)
            except Exception as exc:  # the database is away: decide on our own counts meanwhile
                failures += 1
                with self._synced:  # creates waiting for a sync see whether syncs are stale
                    self._synced.notify_all()
                if failures in (1, 10) or failures % 100 == 0:
                    log_event(
                        log, "create limit sync failed", logging.WARNING, error=str(exc).strip()
                    )
                if conn is not None and conn.broken:  # else (say, lock_timeout) keep it
                    conn.close()
                    conn = None
                self._stopped.wait(min(0.2 * failures, 2.0))
        if conn is not None:
            conn.close()

    def sync(self, conn) -> None:
        """One sync, one short transaction under a lock that every web process's sync takes:
        read the others' counts and allowances, then write this process's counts and the
        allowances it takes until its next sync, both as of one moment. The allowances apply
        once written: if the transaction fails, the last ones stand (and go stale)."""
        # A backend that stops answering (stopped, a hung host) must not hold this thread, and
        # with it the lock, for ever: the sync is abandoned after SYNC_DEADLINE.
        with db.answered_within(conn, SYNC_DEADLINE):
            create_limit_rows.lock(conn)
            with self._lock:
                teams = list(self.limiter.teams)
            # The clock offset from this round trip alone (not the wait for the lock).
            before = time.monotonic()
            read = create_limit_rows.read(conn, self.process, teams, KEPT_TENTHS)
            middle = (before + time.monotonic()) / 2
            answer = {
                t.team_id: TeamSync(
                    plan=t.plan, others=t.others, allowance=t.allowance, wanted=t.wanted
                )
                for t in read.teams
            }
            with self._lock:
                result = self.limiter.prepare_sync(middle, read.now, read.processes, answer)
            create_limit_rows.write(conn, self.process, result.counts, result.allowances)
        with self._synced:  # committed: take it on; creates waiting for a sync go on
            self.limiter.apply_sync(result)
            self._synced.notify_all()


def create_limits() -> CreateLimits:
    """This app's CreateLimits, made on first use."""
    return for_app(current_app)


def for_app(app: Flask) -> CreateLimits:
    limits = app.extensions.get("asyncqueue_create_limits")
    if limits is None:
        settings = app.extensions["asyncqueue"].settings
        limits = app.extensions.setdefault(
            "asyncqueue_create_limits",
            CreateLimits(settings.database_url, settings.create_rates),
        )
    return limits
