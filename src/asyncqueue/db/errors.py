"""Which database errors are worth waiting out: a pure classification, no I/O.

psycopg files almost everything under OperationalError: a lost connection, but also a statement
timeout, a full disk, a lock not available. Only a lost connection (or a pool with none to give)
is retried for as long as it lasts; a deadlock or serialization failure is retried a few times;
anything else is a failure, counted by the caller's supervision.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

CONNECTION_LOST = "connection lost"  # retry while it lasts
CONFLICT = "conflict"  # retry a few times (MAX_CONFLICT_RETRIES)
FAILURE = "failure"  # not retried: counted as a failure

MAX_CONFLICT_RETRIES = 3

_CONNECTION_LOST_STATES = frozenset(
    {
        "57P01",  # admin_shutdown: terminated by the administrator (or a restart)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up or shutting down
        "57P05",  # idle_session_timeout
        "25P03",  # idle_in_transaction_session_timeout
    }
)
_CONFLICT_STATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def classify(exc: BaseException) -> str:
    """CONNECTION_LOST, CONFLICT or FAILURE."""
    if isinstance(exc, PoolTimeout):
        return CONNECTION_LOST
    if not isinstance(exc, psycopg.Error):
        return FAILURE
    state = exc.sqlstate
    if state is None:
        # Raised by the client, not the server: the connection closed or never opened.
        return CONNECTION_LOST if isinstance(exc, psycopg.OperationalError) else FAILURE
    if state.startswith("08") or state in _CONNECTION_LOST_STATES:  # class 08: connection
        return CONNECTION_LOST
    if state in _CONFLICT_STATES:
        return CONFLICT
    return FAILURE


def worth_retrying(exc: BaseException, conflicts_so_far: int) -> bool:
    """Whether to try again after `exc`, given how many conflicts in a row came before it."""
    kind = classify(exc)
    return kind == CONNECTION_LOST or (kind == CONFLICT and conflicts_so_far < MAX_CONFLICT_RETRIES)
