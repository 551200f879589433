"""How tasks are shown: names, times and which fields appear."""

import uuid
from datetime import UTC, datetime

from asyncqueue.db.rows import TaskRow
from asyncqueue.task_json import completion_event, format_time, task_to_json

ROW = {
    "id": uuid.UUID("550e8400-e29b-41d4-a716-446655440000"),
    "team_id": uuid.UUID("11111111-1111-1111-1111-111111111111"),
    "status": "completed",
    "callback_url": "https://api.example.com/webhook",
    "method": "POST",
    "headers": {"X-Custom-Header": "value"},
    "body": None,
    "max_wait_time": 60.0,
    "timeout": 0.5,
    "max_retries": 3,
    "retry_count": 0,
    "retry_backoff": "exponential",
    "on_complete_url": None,
    "delay_until": None,
    "result": {"statusCode": 200, "headers": {}, "body": "{}", "duration": 1234},
    "error": None,
    "created_at": datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
    "started_at": datetime(2024, 1, 15, 10, 30, 1, tzinfo=UTC),
    "completed_at": datetime(2024, 1, 15, 10, 30, 2, 234567, tzinfo=UTC),
}


def test_times_are_iso_utc_with_milliseconds():
    assert format_time(ROW["completed_at"]) == "2024-01-15T10:30:02.234Z"
    assert format_time(None) is None


def test_task_has_the_documented_names_and_omits_unknowns():
    task = task_to_json(TaskRow(**ROW))
    assert list(task) == [
        "id",
        "teamId",
        "status",
        "callbackUrl",
        "method",
        "headers",
        "maxWaitTime",
        "timeout",
        "maxRetries",
        "retryCount",
        "retryBackoff",
        "result",
        "createdAt",
        "startedAt",
        "completedAt",
    ]
    assert task["maxWaitTime"] == 60 and isinstance(task["maxWaitTime"], int)
    assert task["timeout"] == 0.5
    assert task["createdAt"] == "2024-01-15T10:30:00.000Z"


def test_completion_event_has_the_documented_shape():
    event = completion_event(
        TaskRow(**{**ROW, "result": None, "status": "failed", "error": "HTTP 503"})
    )
    assert event == {
        "event": "task.completed",
        "task": {
            "id": "550e8400-e29b-41d4-a716-446655440000",
            "status": "failed",
            "result": None,
            "error": "HTTP 503",
            "retryCount": 0,
            "createdAt": "2024-01-15T10:30:00.000Z",
            "completedAt": "2024-01-15T10:30:02.234Z",
        },
    }


def test_truncation_marks_are_shown_in_the_task_and_the_completion_event():
    result = {
        "statusCode": 200,
        "headers": {"a": "1"},
        "headersTruncated": True,
        "body": "x",
        "bodyTruncated": True,
        "duration": 5,
    }
    row = {**ROW, "result": result}
    assert task_to_json(TaskRow(**row))["result"] == result
    assert completion_event(TaskRow(**row))["task"]["result"] == result
