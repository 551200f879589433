"""How a task row is shown to clients: camelCase, ISO 8601 UTC times with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asyncqueue.db.rows import FinishedTask, TaskRow


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    # Not strftime: its %Y does not zero-pad years before 1000 on every platform.
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def _number(value: float) -> int | float:
    """30.0 is shown as 30, as the client sent it; 0.5 stays 0.5."""
    return int(value) if float(value).is_integer() else value


RESULT_KEYS = ("statusCode", "headers", "headersTruncated", "body", "bodyTruncated", "duration")


def _result(result: dict | None) -> dict | None:
    """The stored result in the document's key order (jsonb does not keep it)."""
    if result is None:
        return None
    return {k: result[k] for k in RESULT_KEYS if k in result}


def task_to_json(row: TaskRow) -> dict[str, Any]:
    """The task as the API document shows it. Fields not known yet (result, error, startedAt,
    completedAt) and optional fields the client did not give (body, onCompleteUrl, delayUntil)
    are left out rather than sent as null."""
    task: dict[str, Any] = {
        "id": str(row.id),
        "teamId": str(row.team_id),
        "status": row.status,
        "callbackUrl": row.callback_url,
        "method": row.method,
        "headers": row.headers,
    }
    if row.body is not None:
        task["body"] = row.body
    task["maxWaitTime"] = _number(row.max_wait_time)
    task["timeout"] = _number(row.timeout)
    task["maxRetries"] = row.max_retries
    task["retryCount"] = row.retry_count
    task["retryBackoff"] = row.retry_backoff
    if row.on_complete_url is not None:
        task["onCompleteUrl"] = row.on_complete_url
    if row.delay_until is not None:
        task["delayUntil"] = format_time(row.delay_until)
    if row.result is not None:
        task["result"] = _result(row.result)
    if row.error is not None:
        task["error"] = row.error
    task["createdAt"] = format_time(row.created_at)
    if row.started_at is not None:
        task["startedAt"] = format_time(row.started_at)
    if row.completed_at is not None:
        task["completedAt"] = format_time(row.completed_at)
    return task


def completion_event(row: FinishedTask | TaskRow) -> dict[str, Any]:
    """The onCompleteUrl payload, exactly the document's shape (result and error may be null)."""
    return {
        "event": "task.completed",
        "task": {
            "id": str(row.id),
            "status": row.status,
            "result": _result(row.result),
            "error": row.error,
            "retryCount": row.retry_count,
            "createdAt": format_time(row.created_at),
            "completedAt": format_time(row.completed_at),
        },
    }
