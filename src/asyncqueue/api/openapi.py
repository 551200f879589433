"""The OpenAPI document, generated from the same marshmallow schemas that validate requests."""

from __future__ import annotations

from functools import cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from asyncqueue import domain
from asyncqueue.api.schemas import HEADER_NAME_PATTERN, ListQuerySchema, NewTaskSchema


class ResultSchema(Schema):
    statusCode = fields.Integer()
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    headersTruncated = fields.Boolean()
    body = fields.String()
    duration = fields.Integer(metadata={"description": "milliseconds"})
    bodyTruncated = fields.Boolean()


class TaskSchema(Schema):
    id = fields.UUID(required=True)
    teamId = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": list(domain.STATUSES)})
    callbackUrl = fields.String(required=True)
    method = fields.String(required=True, metadata={"enum": list(domain.METHODS)})
    headers = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    body = fields.String()
    maxWaitTime = fields.Float(required=True)
    timeout = fields.Float(required=True)
    maxRetries = fields.Integer(required=True)
    retryCount = fields.Integer(required=True)
    retryBackoff = fields.String(required=True, metadata={"enum": list(domain.BACKOFFS)})
    onCompleteUrl = fields.String()
    delayUntil = fields.DateTime()
    result = fields.Nested(ResultSchema)
    error = fields.String()
    createdAt = fields.DateTime(required=True)
    startedAt = fields.DateTime()
    completedAt = fields.DateTime()


class TaskEnvelopeSchema(Schema):
    task = fields.Nested(TaskSchema, required=True)


class PaginationSchema(Schema):
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    hasMore = fields.Boolean(required=True)


class TaskListSchema(Schema):
    tasks = fields.List(fields.Nested(TaskSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class ErrorSchema(Schema):
    error = fields.String(required=True)


def _errors(*codes: int) -> dict:
    return {
        str(c): {"description": "Error", "content": {"application/json": {"schema": "Error"}}}
        for c in codes
    }


def _ok(code: int, schema: str) -> dict:
    return {str(code): {"description": "OK", "content": {"application/json": {"schema": schema}}}}


# What the server itself answers before the app sees a request (asyncqueue/web/worker.py): a
# request not received in time, a request line or headers over gunicorn's limits.
SERVER_REFUSALS = (408, 414, 431)

TASK_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


@cache
def openapi_document() -> dict:
    spec = APISpec(
        title="AsyncQueue Tasks API",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        servers=[{"url": "/"}],
        components={
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        },
        security=[{"bearer": []}, {"apiKey": []}],
    )
    spec.components.schema("NewTask", schema=NewTaskSchema)
    spec.components.schema("Task", schema=TaskSchema)
    spec.components.schema("TaskEnvelope", schema=TaskEnvelopeSchema)
    spec.components.schema("TaskList", schema=TaskListSchema)
    spec.components.schema("Error", schema=ErrorSchema)
    spec.path(
        path="/v1/tasks",
        operations={
            "post": {
                "summary": "Create a task",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": "NewTask"}},
                },
                "responses": {
                    **_ok(201, "TaskEnvelope"),
                    **_errors(400, 401, 413, 429, *SERVER_REFUSALS, 503),
                },
            },
            "get": {
                "summary": "List the team's tasks",
                "parameters": [{"in": "query", "schema": ListQuerySchema}],
                "responses": {**_ok(200, "TaskList"), **_errors(400, 401, *SERVER_REFUSALS, 503)},
            },
        },
    )
    spec.path(
        path="/v1/tasks/{id}",
        operations={
            "get": {
                "summary": "Get a task",
                "parameters": [TASK_ID],
                "responses": {
                    **_ok(200, "TaskEnvelope"),
                    **_errors(401, 403, 404, *SERVER_REFUSALS, 503),
                },
            }
        },
    )
    spec.path(
        path="/v1/tasks/{id}/cancel",
        operations={
            "post": {
                "summary": "Cancel a pending or delayed task",
                "parameters": [TASK_ID],
                "responses": {
                    **_ok(200, "TaskEnvelope"),
                    **_errors(401, 403, 404, 409, *SERVER_REFUSALS, 503),
                },
            }
        },
    )
    document = spec.to_dict()
    # apispec documents a Dict's values, not its keys: add the header-name rule by hand.
    headers = document["components"]["schemas"]["NewTask"]["properties"]["headers"]
    headers["propertyNames"] = {"type": "string", "pattern": HEADER_NAME_PATTERN}
    return document
