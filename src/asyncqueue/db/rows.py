"""The rows the database package returns: typed, one class per shape, each matching the column
list of the queries that return it (tests/unit/test_db_door.py checks them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime


@dataclass(slots=True)
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


@dataclass(slots=True)
class ClaimedTask:
    """A task as a claim hands it to the worker: what its call and its outcome need, with the
    database's time of the claim and the task's maxWaitTime deadline."""

    id: uuid.UUID
    team_id: uuid.UUID
    claim_token: uuid.UUID
    attempts: int
    retry_count: int
    max_retries: int
    retry_backoff: str
    max_wait_time: float
    timeout: float
    headers: dict
    method: str
    callback_url: str
    body: str | None
    result: dict | None
    claimed_at: datetime
    deadline: datetime


@dataclass(slots=True)
class FinishedTask:
    """A task whose outcome was recorded, as its onComplete needs it (the result only where
    there is an onCompleteUrl)."""

    id: uuid.UUID
    team_id: uuid.UUID
    status: str
    error: str | None
    retry_count: int
    created_at: datetime
    completed_at: datetime
    on_complete_url: str | None
    result: dict | None


def column_names(row_class) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_class))


@dataclass(slots=True)
class TeamRow:
    id: uuid.UUID
    name: str
    plan: str
    created_at: datetime


@dataclass(slots=True)
class TeamSummaryRow:
    """A team with its member and active API key counts (`asyncqueue teams list`)."""

    id: uuid.UUID
    name: str
    plan: str
    created_at: datetime
    members: int
    active_keys: int


@dataclass(slots=True)
class MemberRow:
    team_id: uuid.UUID
    email: str
    created_at: datetime


@dataclass(slots=True)
class ApiKeyRow:
    """An API key as it is listed: never its hash."""

    id: uuid.UUID
    team_id: uuid.UUID
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(slots=True)
class KeyOwnerRow:
    """What a live API key speaks for: the key's id, its team and the team's plan."""

    key_id: uuid.UUID
    team_id: uuid.UUID
    plan: str


@dataclass(slots=True)
class WorkerIdentity:
    """What a worker's row says of it from its first heartbeat on (what a heartbeat writes)."""

    id: uuid.UUID
    name: str
    host: str
    pid: int
    version: str
    started_at: datetime


@dataclass(slots=True)
class WorkerRow(WorkerIdentity):
    """A worker's heartbeat row, and how long ago (by the database's clock) it was written."""

    last_seen_at: datetime
    in_flight: int
    seen_seconds_ago: float


@dataclass(slots=True)
class QueueFigureRow:
    """One of the queue-wide figures /metrics reports: `figure` is tasks, deleted, lag or
    workers; `label` the status the tasks and deleted counts are of."""

    figure: str
    label: str | None
    value: float


@dataclass(slots=True)
class TeamCreateCounts:
    """What a create-limit sync reads of one team (an element of CreateSyncRow.teams): its plan,
    the allowances the other live web processes took, their creates by tenth of a second and
    the creates they were asked for."""

    team_id: uuid.UUID
    plan: str
    allowance: float
    others: dict[int, int]
    wanted: int


@dataclass(slots=True)
class CreateSyncRow:
    """A create-limit sync's reading: the database's clock (epoch seconds), the live web
    processes (the one syncing included), and the teams it asked about."""

    now: float
    processes: int
    teams: tuple[TeamCreateCounts, ...]
