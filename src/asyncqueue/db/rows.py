"""The rows the database package returns: typed, one class per shape, each matching the column
list of the queries that return it (tests/integration/test_db_rows.py checks them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task as clients see it (the scheduling columns, next_run_at and the claim's, stay in
    the database)."""

    id: uuid.UUID
    team_id: uuid.UUID
    status: str
    callback_url: str
    method: str
    headers: dict
    body: str | None
    max_wait_time: float
    timeout: float
    max_retries: int
    retry_count: int
    retry_backoff: str
    on_complete_url: str | None
    delay_until: datetime | None
    result: dict | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


def column_names(row_class) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_class))
