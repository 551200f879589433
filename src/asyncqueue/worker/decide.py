"""What an attempt's result means for its task: a pure function, with time passed in.

The document's rules: 2xx, 3xx (after redirects) and 4xx complete the task; a network error, a
5xx or an attempt timeout is retried while retries are left, after the backoff delay counted from
the failure; then the task fails. Above all stands maxWaitTime: no attempt runs past
startedAt + maxWaitTime, and a retry that could only start after it ends the task as `timeout`.

Failures that would repeat identically are not retried: a blocked destination, and a request
that cannot be sent as given (`unsendable`). An internal error of the worker's own is retried
like a network error, within maxRetries: it may not recur, and the task still ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from asyncqueue.domain import COMPLETED, FAILED, TIMEOUT
from asyncqueue.worker.attempt import AttemptResult
from asyncqueue.worker.backoff import retry_delay

# An outcome's kind: a final status (domain.OUTCOMES), or RETRY (the task stays processing).
RETRY = "retry"


@dataclass(frozen=True)
class Outcome:
    kind: str  # completed | retry | failed | timeout
    result: dict | None = None
    error: str | None = None
    retry_in: float | None = None  # seconds, for kind == retry


@dataclass(frozen=True)
class TaskState:
    retry_count: int
    max_retries: int
    retry_backoff: str
    max_wait_time: float
    timeout: float
    deadline: datetime  # startedAt + maxWaitTime


def _seconds(value: float) -> str:
    return f"{value:g} s"


def max_wait_exceeded(state: TaskState) -> str:
    return f"maxWaitTime of {_seconds(state.max_wait_time)} exceeded"


def attempt_time_limit(state: TaskState, now: datetime) -> float:
    """Seconds the next attempt may take: its timeout, cut short by the maxWaitTime deadline."""
    return min(state.timeout, (state.deadline - now).total_seconds())


def decide_outcome(
    state: TaskState, attempt: AttemptResult, *, limit_was_deadline: bool, now: datetime
) -> Outcome:
    """The task's next step after `attempt`, which ended at `now`.

    `limit_was_deadline` says the attempt's time limit was the maxWaitTime deadline rather than
    the task's own timeout, so an attempt that ran out of time ends the task as `timeout`.
    """
    result = attempt.result_json()
    if attempt.blocked or attempt.unsendable:
        return Outcome(FAILED, error=attempt.error)
    if attempt.status_code is not None and attempt.status_code < 500:
        return Outcome(COMPLETED, result=result)
    if attempt.timed_out:
        if limit_was_deadline:
            return Outcome(TIMEOUT, error=max_wait_exceeded(state))
        error = f"attempt timed out after {_seconds(state.timeout)}"
    elif attempt.status_code is not None:
        error = f"HTTP {attempt.status_code}"
    else:
        error = attempt.error or "fetch failed"
    if state.retry_count >= state.max_retries:
        return Outcome(FAILED, result=result, error=error)
    delay = retry_delay(state.retry_backoff, state.retry_count + 1)
    if now + timedelta(seconds=delay) >= state.deadline:
        return Outcome(
            TIMEOUT, result=result, error=f"{max_wait_exceeded(state)} (last attempt: {error})"
        )
    return Outcome(RETRY, result=result, error=error, retry_in=delay)
