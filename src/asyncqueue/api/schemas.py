"""Marshmallow schemas for the API's input, with the exact messages the API document promises.

Validation is pure (no I/O): `validate_new_task` takes the request's JSON, the team's plan and the
settings that matter, and returns either clean values or the first error message, in the order of
the document's field table so that a request with several mistakes always gets the same answer.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields

from asyncqueue import domain, http_headers
from asyncqueue.outbound.destinations import blocked_reason
from asyncqueue.outbound.hosts import IPAddress, parse_host, raw_host

# Whitespace (re's \s is str.isspace) and control characters: never part of a sendable URL.
UNSENDABLE_IN_URL = re.compile(r"[\s\x00-\x1f\x7f]")


def url_host(value: str) -> IPAddress | str | None:
    """The host of an absolute http(s) URL as a browser reads it (an address or an ASCII name),
    or None when `value` is not one (user info is judged separately)."""
    return _url_facts(value)[0]


def url_has_userinfo(value: str) -> bool:
    """Whether `value`'s authority carries a user name or password (`user:pw@host`)."""
    return _url_facts(value)[1]


# A create reads each URL's facts three times (the field's checks, then the address policy),
# and clients send the same few URLs again and again: split each once. Pure and immutable.
@functools.lru_cache(maxsize=1024)
def _url_facts(value: str) -> tuple[IPAddress | str | None, bool]:
    if UNSENDABLE_IN_URL.search(value):
        return None, False
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return None, False
    has_userinfo = "@" in parts.netloc
    if port == 0:  # nothing can be called on port 0
        return None, has_userinfo
    if parts.scheme.lower() not in ("http", "https"):
        return None, has_userinfo
    return parse_host(raw_host(parts.netloc)), has_userinfo


class HttpUrl(fields.String):
    """An absolute http(s) URL, at most MAX_URL_LENGTH characters, without user or password."""

    def __init__(self, name: str, **kwargs):
        self.public_name = name
        super().__init__(
            metadata={"format": "uri", "maxLength": domain.MAX_URL_LENGTH},
            error_messages={
                "invalid": f"{name} must be a valid HTTP/HTTPS URL",
                "required": f"{name} is required",
                "null": f"{name} is required",
            },
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if len(value) > domain.MAX_URL_LENGTH:
            raise ValidationError(
                f"{self.public_name} must be at most {domain.MAX_URL_LENGTH} characters"
            )
        if url_host(value) is None:
            raise self.make_error("invalid")
        if url_has_userinfo(value):
            raise ValidationError(f"{self.public_name} must not contain a user name or password")
        return value


class Choice(fields.String):
    """One of a fixed set of strings, matched exactly (the document lists them case and all)."""

    def __init__(self, name: str, choices: tuple[str, ...], **kwargs):
        self.choices = choices
        message = f"{name} must be one of: {', '.join(choices)}"
        # A nullable enum must list null too, or no schema validator accepts it.
        enum = [*choices, None] if kwargs.get("allow_none") else list(choices)
        super().__init__(
            metadata={"enum": enum},
            error_messages={"invalid": message, "null": message},
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if value not in self.choices:
            raise self.make_error("invalid")
        return value


def _finite_number(value: Any) -> float | None:
    """The value as a float if it is a JSON number (not a boolean, NaN, infinity, or an integer
    too large for a float: those are refused as out of range, not overflowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return float(value) if -MAX_EXACT_INT <= value <= MAX_EXACT_INT else None
    return value if math.isfinite(value) else None


# Integers beyond this are no valid count or duration, and float() of one past ~1e308 raises.
MAX_EXACT_INT = 2**53


class WholeNumber(fields.Integer):
    """An integer in [low, high]; 3.0 counts as 3, 2.5 and "3" do not."""

    def __init__(self, name: str, low: int, high: int, **kwargs):
        self.low, self.high = low, high
        message = f"{name} must be a number between {low} and {high}"
        super().__init__(
            metadata={"minimum": low, "maximum": high},
            error_messages={"invalid": message, "null": message},
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        number = _finite_number(value)
        if number is None or not number.is_integer() or not self.low <= number <= self.high:
            raise self.make_error("invalid")
        return int(number)


class Seconds(fields.Float):
    """A number of seconds from MIN_SECONDS to `high` (None: the caller checks the upper bound)."""

    def __init__(self, name: str, high: float | None, max_documented: float = 0, **kwargs):
        self.high = high
        low = domain.MIN_SECONDS
        message = (
            f"{name} must be a number of seconds from {low:g} to {high:g}"
            if high is not None
            else f"{name} must be a number of seconds of at least {low:g}"
        )
        metadata = {"minimum": low, "maximum": high or max_documented}
        super().__init__(
            metadata=metadata,
            error_messages={"invalid": message, "null": message},
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        number = _finite_number(value)
        if (
            number is None
            or number < domain.MIN_SECONDS
            or (self.high is not None and number > self.high)
        ):
            raise self.make_error("invalid")
        return number


class IsoDateTime(fields.String):
    """An ISO 8601 date-time; one without an offset is taken as UTC."""

    def __init__(self, name: str, **kwargs):
        message = f"{name} must be a valid ISO 8601 date"
        super().__init__(
            metadata={"format": "date-time"},
            error_messages={"invalid": message, "null": message},
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            parsed = datetime.fromisoformat(value.strip())
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
            raise self.make_error("invalid") from None


def _any_case(name: str) -> str:
    """A pattern matching the header name in any case (names are letters and "-" only)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in name)


# The same rules for the OpenAPI document (what a client can check before sending): a token
# that is not a framing header, in any case; a value the worker can send.
HEADER_NAME_PATTERN = (
    "^(?!(?:"
    + "|".join(_any_case(n) for n in sorted(domain.FORBIDDEN_HEADERS))
    + f")$){http_headers.TOKEN}$"
)
HEADER_VALUE_PATTERN = http_headers.VALUE_PATTERN


class CallbackHeaders(fields.Dict):
    """Headers to send with the callback: string values, no framing headers, nothing the worker
    could not send."""

    def __init__(self, **kwargs):
        super().__init__(
            keys=fields.String(metadata={"pattern": HEADER_NAME_PATTERN}),
            values=fields.String(metadata={"pattern": HEADER_VALUE_PATTERN}),
            metadata={
                "maxProperties": domain.MAX_HEADER_COUNT,
                "description": f"At most {domain.MAX_HEADERS_TOTAL} bytes of names and values "
                "in all, as UTF-8.",
            },
            error_messages={
                "invalid": "headers must be an object of string values",
                "null": "headers must be an object of string values",
            },
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        total = 0
        for name, header_value in value.items():
            if not isinstance(header_value, str):
                raise self.make_error("invalid")
            if not http_headers.is_token(name):
                raise ValidationError(f"headers has an invalid header name: {name!r}")
            problem = http_headers.value_problem(header_value)
            if problem:
                raise ValidationError(f"headers value for {name} {problem}")
            if name.lower() in domain.FORBIDDEN_HEADERS:
                raise ValidationError(f"headers must not set {name}: the HTTP client sets it")
            total += len(name.encode()) + len(header_value.encode())
        if len(value) > domain.MAX_HEADER_COUNT:
            raise ValidationError(f"headers must have at most {domain.MAX_HEADER_COUNT} entries")
        if total > domain.MAX_HEADERS_TOTAL:
            raise ValidationError(
                f"headers must be at most {domain.MAX_HEADERS_TOTAL} bytes in total"
            )
        return dict(value)


class CallbackBody(fields.String):
    def __init__(self, **kwargs):
        super().__init__(
            # The pattern tells the OpenAPI document what _deserialize refuses: NUL.
            metadata={"maxLength": domain.MAX_CALLBACK_BODY, "pattern": "^[^\\u0000]*$"},
            error_messages={
                "invalid": "body must be a string (JSON-stringify an object first)",
                "null": "body must be a string (JSON-stringify an object first)",
            },
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if len(value.encode()) > domain.MAX_CALLBACK_BODY:
            raise ValidationError(f"body must be at most {domain.MAX_CALLBACK_BODY} bytes")
        if "\0" in value:  # PostgreSQL text cannot hold it, and no JSON-stringified body has one
            raise ValidationError("body must not contain NUL characters")
        return value


class NewTaskSchema(Schema):
    """POST /v1/tasks. Fields are declared in the API document's order, which is the order in
    which errors are reported."""

    class Meta:
        unknown = RAISE

    callback_url = HttpUrl("callbackUrl", data_key="callbackUrl", required=True)
    # Every optional field is nullable: a JSON null means "not given" (the document says so too).
    method = Choice("method", domain.METHODS, load_default=domain.DEFAULT_METHOD, allow_none=True)
    headers = CallbackHeaders(load_default=dict, allow_none=True)
    body = CallbackBody(load_default=None)
    # The upper bound depends on the team's plan, so it is checked after loading; the OpenAPI
    # document shows the highest plan's.
    max_wait_time = Seconds(
        "maxWaitTime",
        None,
        max(domain.PLAN_MAX_WAIT_TIME.values()),
        data_key="maxWaitTime",
        load_default=domain.DEFAULT_MAX_WAIT_TIME,
        allow_none=True,
    )
    timeout = Seconds(
        "timeout", domain.MAX_TIMEOUT, load_default=domain.DEFAULT_TIMEOUT, allow_none=True
    )
    delay_until = IsoDateTime("delayUntil", data_key="delayUntil", load_default=None)
    max_retries = WholeNumber(
        "maxRetries",
        0,
        domain.MAX_RETRIES,
        data_key="maxRetries",
        load_default=domain.DEFAULT_MAX_RETRIES,
        allow_none=True,
    )
    retry_backoff = Choice(
        "retryBackoff",
        domain.BACKOFFS,
        data_key="retryBackoff",
        load_default=domain.DEFAULT_BACKOFF,
        allow_none=True,
    )
    on_complete_url = HttpUrl("onCompleteUrl", data_key="onCompleteUrl", load_default=None)


class ListQuerySchema(Schema):
    """GET /v1/tasks query parameters."""

    # Documentation only (validate_list_query reads the query): absent means "all".
    status = Choice("status", domain.STATUSES)
    limit = fields.Integer(load_default=domain.LIST_DEFAULT_LIMIT, metadata={"minimum": 1})
    offset = fields.Integer(
        load_default=0, metadata={"minimum": 0, "maximum": domain.LIST_MAX_OFFSET}
    )
    sort_order = Choice("sortOrder", ("asc", "desc"), data_key="sortOrder", load_default="desc")


NEW_TASK_FIELDS = [f.data_key or name for name, f in NewTaskSchema().fields.items()]
_NEW_TASK_SCHEMA = NewTaskSchema()
OPTIONAL_FIELDS = frozenset(NEW_TASK_FIELDS) - {"callbackUrl"}


def first_error(messages: dict, order: list[str]) -> str:
    """The message to show for a marshmallow error dict: the earliest field's, then unknown ones."""
    for name in order:
        if name in messages:
            found = messages[name]
            return found[0] if isinstance(found, list) else str(found)
    unknown = sorted(k for k in messages if k not in order)
    return f"Unknown field: {unknown[0]}" if unknown else "Invalid request"


def validate_new_task(
    payload: Any,
    *,
    plan: str,
    allow_private_networks: bool,
    max_delay: timedelta,
    now: datetime,
) -> tuple[dict | None, str | None]:
    """Clean values for a new task, or the first error message for the caller."""
    if not isinstance(payload, dict):
        return None, "Request body must be a JSON object"
    # A JSON null for an optional field means "not given", as leaving it out would; an unknown
    # field is refused whatever its value, null included.
    payload = {k: v for k, v in payload.items() if v is not None or k not in OPTIONAL_FIELDS}
    try:
        task = _NEW_TASK_SCHEMA.load(payload)
    except ValidationError as err:
        return None, first_error(err.messages, NEW_TASK_FIELDS)

    plan_limit = domain.PLAN_MAX_WAIT_TIME[plan]
    if task["max_wait_time"] > plan_limit:
        return None, f"maxWaitTime must be at most {plan_limit} seconds on the {plan} plan"
    if task["delay_until"] is not None and task["delay_until"] > now + max_delay:
        days = max_delay / timedelta(days=1)  # as configured: 0.5 is not "0 days"
        return None, f"delayUntil must be at most {days:.15g} days in the future"
    for name, key in (("callbackUrl", "callback_url"), ("onCompleteUrl", "on_complete_url")):
        if task[key] is None:
            continue
        host = url_host(task[key])
        reason = not isinstance(host, str) and blocked_reason(
            host, allow_private=allow_private_networks
        )
        if reason:
            return None, f"{name} must not point to a private or reserved address ({reason})"
    if not domain.sends_body(task["method"]):
        task["body"] = None  # the document: a body is ignored for GET requests
    return task, None


def validate_list_query(args: dict) -> tuple[dict | None, str | None]:
    """Clean list parameters, or an error. A limit above the maximum is capped, not refused; a
    parameter given empty (`?status=`) is refused like any value outside the document's."""
    clean: dict[str, Any] = {}
    status = args.get("status")
    if status is not None and status not in domain.STATUSES:
        return None, f"status must be one of: {', '.join(domain.STATUSES)}"
    clean["status"] = status
    for name, default, low in (("limit", domain.LIST_DEFAULT_LIMIT, 1), ("offset", 0, 0)):
        raw = args.get(name)
        if raw is None:
            clean[name] = default
            continue
        if not (raw.isascii() and raw.isdigit()):
            return None, f"{name} must be a whole number of at least {low}"
        # Python refuses int() of more than 4,300 digits; anything past 20 is "too many" anyway.
        number = int(raw) if len(raw) <= 20 else 10**20
        if number < low:
            return None, f"{name} must be a whole number of at least {low}"
        clean[name] = number
    clean["limit"] = min(clean["limit"], domain.LIST_MAX_LIMIT)
    if clean["offset"] > domain.LIST_MAX_OFFSET:
        return None, f"offset must be at most {domain.LIST_MAX_OFFSET}"
    sort_order = args.get("sortOrder", "desc")
    if sort_order not in ("asc", "desc"):
        return None, "sortOrder must be one of: asc, desc"
    clean["sort_order"] = sort_order
    return clean, None
