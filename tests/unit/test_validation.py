"""POST /v1/tasks and GET /v1/tasks input rules, as a table (no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from asyncqueue import limits
from asyncqueue.api.schemas import validate_list_query, validate_new_task

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
URL = "https://api.example.com/webhook"


def check(payload, plan="free", allow_private=False):
    return validate_new_task(
        payload,
        plan=plan,
        allow_private_networks=allow_private,
        max_delay=timedelta(days=365),
        now=NOW,
    )


@pytest.mark.parametrize(
    "payload, message",
    [
        ({}, "callbackUrl is required"),
        ({"callbackUrl": None}, "callbackUrl is required"),
        ({"callbackUrl": ""}, "callbackUrl must be a valid HTTP/HTTPS URL"),
        ({"callbackUrl": "ftp://example.com/x"}, "callbackUrl must be a valid HTTP/HTTPS URL"),
        ({"callbackUrl": "not a url"}, "callbackUrl must be a valid HTTP/HTTPS URL"),
        ({"callbackUrl": "https://"}, "callbackUrl must be a valid HTTP/HTTPS URL"),
        ({"callbackUrl": "https://exa mple.com"}, "callbackUrl must be a valid HTTP/HTTPS URL"),
        (
            {"callbackUrl": "https://example.com:99999/"},
            "callbackUrl must be a valid HTTP/HTTPS URL",
        ),
        ({"callbackUrl": 42}, "callbackUrl must be a valid HTTP/HTTPS URL"),
        (
            {"callbackUrl": "https://u:p@example.com/"},
            "callbackUrl must not contain a user name or password",
        ),
        (
            {"callbackUrl": "https://e.com/" + "a" * 2040},
            "callbackUrl must be at most 2048 characters",
        ),
        ({"callbackUrl": URL, "method": "PATCH"}, "method must be one of: GET, POST, PUT, DELETE"),
        ({"callbackUrl": URL, "method": "post"}, "method must be one of: GET, POST, PUT, DELETE"),
        ({"callbackUrl": URL, "method": 1}, "method must be one of: GET, POST, PUT, DELETE"),
        ({"callbackUrl": URL, "headers": []}, "headers must be an object of string values"),
        ({"callbackUrl": URL, "headers": {"A": 1}}, "headers must be an object of string values"),
        (
            {"callbackUrl": URL, "headers": {"Host": "x"}},
            "headers must not set Host: the HTTP client sets it",
        ),
        (
            {"callbackUrl": URL, "headers": {"Content-Length": "1"}},
            "headers must not set Content-Length: the HTTP client sets it",
        ),
        (
            {"callbackUrl": URL, "headers": {"X-A": "a\r\nX-B: b"}},
            "headers value for X-A must not contain line breaks",
        ),
        (
            {"callbackUrl": URL, "headers": {"Bad Name": "x"}},
            "headers has an invalid header name: 'Bad Name'",
        ),
        (
            {"callbackUrl": URL, "headers": {"X-A": "x" * 17000}},
            f"headers must be at most {limits.MAX_HEADERS_TOTAL} bytes in total",
        ),
        (
            {"callbackUrl": URL, "body": {"a": 1}},
            "body must be a string (JSON-stringify an object first)",
        ),
        (
            {"callbackUrl": URL, "body": "x" * (limits.MAX_CALLBACK_BODY + 1)},
            f"body must be at most {limits.MAX_CALLBACK_BODY} bytes",
        ),
        ({"callbackUrl": URL, "maxWaitTime": 0}, "maxWaitTime must be a number greater than 0"),
        ({"callbackUrl": URL, "maxWaitTime": "30"}, "maxWaitTime must be a number greater than 0"),
        (
            {"callbackUrl": URL, "maxWaitTime": 31},
            "maxWaitTime must be at most 30 seconds on the free plan",
        ),
        (
            {"callbackUrl": URL, "timeout": -1},
            "timeout must be a number greater than 0 and at most 120",
        ),
        (
            {"callbackUrl": URL, "timeout": 121},
            "timeout must be a number greater than 0 and at most 120",
        ),
        (
            {"callbackUrl": URL, "timeout": True},
            "timeout must be a number greater than 0 and at most 120",
        ),
        (
            {"callbackUrl": URL, "delayUntil": "tomorrow"},
            "delayUntil must be a valid ISO 8601 date",
        ),
        (
            {"callbackUrl": URL, "delayUntil": 1700000000},
            "delayUntil must be a valid ISO 8601 date",
        ),
        (
            {"callbackUrl": URL, "delayUntil": "2027-02-01T00:00:00Z"},
            "delayUntil must be at most 365 days in the future",
        ),
        ({"callbackUrl": URL, "maxRetries": 11}, "maxRetries must be a number between 0 and 10"),
        ({"callbackUrl": URL, "maxRetries": -1}, "maxRetries must be a number between 0 and 10"),
        ({"callbackUrl": URL, "maxRetries": 2.5}, "maxRetries must be a number between 0 and 10"),
        ({"callbackUrl": URL, "maxRetries": "3"}, "maxRetries must be a number between 0 and 10"),
        ({"callbackUrl": URL, "maxRetries": False}, "maxRetries must be a number between 0 and 10"),
        (
            {"callbackUrl": URL, "retryBackoff": "fibonacci"},
            "retryBackoff must be one of: linear, exponential",
        ),
        (
            {"callbackUrl": URL, "onCompleteUrl": "mailto:x@y.z"},
            "onCompleteUrl must be a valid HTTP/HTTPS URL",
        ),
        ({"callbackUrl": URL, "colour": "blue"}, "Unknown field: colour"),
        (
            {"callbackUrl": "http://127.0.0.1/x"},
            "callbackUrl must not point to a private or reserved address (127.0.0.1 is loopback)",
        ),
        (
            {"callbackUrl": "http://2130706433/x"},
            "callbackUrl must not point to a private or reserved address (127.0.0.1 is loopback)",
        ),
        (
            {"callbackUrl": URL, "onCompleteUrl": "http://169.254.169.254/latest"},
            "onCompleteUrl must not point to a private or reserved address "
            "(169.254.169.254 is cloud metadata)",
        ),
        ([], "Request body must be a JSON object"),
        ("callbackUrl", "Request body must be a JSON object"),
        # The first problem in the document's field order is the one reported.
        ({"method": "PATCH", "maxRetries": 99}, "callbackUrl is required"),
        (
            {"callbackUrl": URL, "maxRetries": 99, "method": "PATCH"},
            "method must be one of: GET, POST, PUT, DELETE",
        ),
    ],
)
def test_invalid_task_is_refused_with_the_documented_message(payload, message):
    task, error = check(payload)
    assert task is None
    assert error == message


def test_defaults_match_the_document():
    task, error = check({"callbackUrl": URL})
    assert error is None
    assert task == {
        "callback_url": URL,
        "method": "POST",
        "headers": {},
        "body": None,
        "max_wait_time": 30,
        "timeout": 30,
        "delay_until": None,
        "max_retries": 3,
        "retry_backoff": "exponential",
        "on_complete_url": None,
    }


@pytest.mark.parametrize(
    "field, value, key, expected",
    [
        ("method", "GET", "method", "GET"),
        ("maxRetries", 0, "max_retries", 0),
        ("maxRetries", 10, "max_retries", 10),
        ("maxRetries", 3.0, "max_retries", 3),
        ("timeout", 0.5, "timeout", 0.5),
        ("retryBackoff", "linear", "retry_backoff", "linear"),
        (
            "delayUntil",
            "2026-01-15T14:00:00.000Z",
            "delay_until",
            datetime(2026, 1, 15, 14, tzinfo=UTC),
        ),
        (
            "delayUntil",
            "2026-01-15T15:00:00+01:00",
            "delay_until",
            datetime(2026, 1, 15, 14, tzinfo=UTC),
        ),
        ("delayUntil", "2026-01-15T14:00:00", "delay_until", datetime(2026, 1, 15, 14, tzinfo=UTC)),
        ("onCompleteUrl", None, "on_complete_url", None),
        ("callbackUrl", "http://localhost:8080/x", "callback_url", "http://localhost:8080/x"),
    ],
)
def test_valid_values_are_accepted(field, value, key, expected):
    task, error = check({"callbackUrl": URL, field: value})
    assert error is None
    assert task[key] == expected


def test_pro_plan_allows_two_minutes_of_waiting():
    task, error = check({"callbackUrl": URL, "maxWaitTime": 120}, plan="pro")
    assert error is None and task["max_wait_time"] == 120
    assert check({"callbackUrl": URL, "maxWaitTime": 121}, plan="pro")[1] == (
        "maxWaitTime must be at most 120 seconds on the pro plan"
    )


def test_body_is_dropped_for_get():
    task, _ = check({"callbackUrl": URL, "method": "GET", "body": "x"})
    assert task["body"] is None


def test_private_addresses_allowed_when_configured():
    task, error = check({"callbackUrl": "http://127.0.0.1:9/x"}, allow_private=True)
    assert error is None
    _, error = check({"callbackUrl": "http://169.254.169.254/"}, allow_private=True)
    assert error.startswith("callbackUrl must not point to a private or reserved address")


@pytest.mark.parametrize(
    "args, expected",
    [
        ({}, {"status": None, "limit": 50, "offset": 0, "sort_order": "desc"}),
        (
            {"status": "pending", "limit": "10"},
            {"status": "pending", "limit": 10, "offset": 0, "sort_order": "desc"},
        ),
        (
            {"limit": "500", "offset": "20", "sortOrder": "asc"},
            {"status": None, "limit": 100, "offset": 20, "sort_order": "asc"},
        ),
    ],
)
def test_list_query_accepted(args, expected):
    assert validate_list_query(args) == (expected, None)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            {"status": "done"},
            "status must be one of: pending, delayed, processing, completed, failed, timeout, cancelled",
        ),
        ({"limit": "0"}, "limit must be a whole number of at least 1"),
        ({"limit": "ten"}, "limit must be a whole number of at least 1"),
        ({"offset": "-1"}, "offset must be a whole number of at least 0"),
        ({"offset": "47787449693297049600"}, "offset must be at most 10000000"),
        ({"limit": "²"}, "limit must be a whole number of at least 1"),
        ({"sortOrder": "up"}, "sortOrder must be one of: asc, desc"),
    ],
)
def test_list_query_refused(args, message):
    assert validate_list_query(args) == (None, message)
