"""POST /v1/tasks and GET /v1/tasks input rules, as a table (no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from asyncqueue import domain
from asyncqueue.api.schemas import validate_list_query, validate_new_task

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
URL = "https://api.example.com/webhook"
TIMEOUT_MESSAGE = "timeout must be a number of seconds from 0.001 to 120"
WAIT_MESSAGE = "maxWaitTime must be a number of seconds of at least 0.001"
RETRIES_MESSAGE = "maxRetries must be a number between 0 and 10"
INVALID_URL = "callbackUrl must be a valid HTTP/HTTPS URL"
LOOPBACK = "callbackUrl must not point to a private or reserved address (127.0.0.1 is loopback)"


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
        ({"callbackUrl": "https://example.com:0/x"}, "callbackUrl must be a valid HTTP/HTTPS URL"),
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
            f"headers must be at most {domain.MAX_HEADERS_TOTAL} bytes in total",
        ),
        (
            {"callbackUrl": URL, "body": {"a": 1}},
            "body must be a string (JSON-stringify an object first)",
        ),
        (
            {"callbackUrl": URL, "body": "x" * (domain.MAX_CALLBACK_BODY + 1)},
            f"body must be at most {domain.MAX_CALLBACK_BODY} bytes",
        ),
        ({"callbackUrl": URL, "maxWaitTime": 0}, WAIT_MESSAGE),
        ({"callbackUrl": URL, "maxWaitTime": "30"}, WAIT_MESSAGE),
        (
            {"callbackUrl": URL, "maxWaitTime": 31},
            "maxWaitTime must be at most 30 seconds on the free plan",
        ),
        (
            {"callbackUrl": URL, "timeout": -1},
            TIMEOUT_MESSAGE,
        ),
        (
            {"callbackUrl": URL, "timeout": 121},
            TIMEOUT_MESSAGE,
        ),
        (
            {"callbackUrl": URL, "timeout": True},
            TIMEOUT_MESSAGE,
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
        # null means "not given" only for the document's fields (schemathesis found this)
        ({"callbackUrl": URL, "colour": None}, "Unknown field: colour"),
        ({"callbackUrl": URL, "": None}, "Unknown field: "),
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


@pytest.mark.parametrize("days, said", [(0.5, "0.5"), (1.25, "1.25"), (2, "2"), (365, "365")])
def test_the_delay_limit_is_said_as_configured(days, said):
    # max_delay as the API builds it from ASYNCQUEUE_MAX_DELAY_DAYS: 0.5 is not "at most 0 days".
    max_delay = timedelta(days=days)

    def check_delay(delay_until):
        payload = {"callbackUrl": URL, "delayUntil": delay_until.isoformat()}
        return validate_new_task(
            payload, plan="free", allow_private_networks=False, max_delay=max_delay, now=NOW
        )

    assert check_delay(NOW + max_delay)[1] is None
    assert check_delay(NOW + max_delay + timedelta(seconds=1))[1] == (
        f"delayUntil must be at most {said} days in the future"
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


# -- the API's edges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        # Integers of 309-4,300 digits overflowed float() (a 500 before authentication).
        ("maxRetries", 10**400, RETRIES_MESSAGE),
        ("maxRetries", -(10**4000), RETRIES_MESSAGE),
        ("timeout", 10**308 * 10, TIMEOUT_MESSAGE),
        ("maxWaitTime", 10**4200, WAIT_MESSAGE),
        ("maxRetries", 2**53 + 1, RETRIES_MESSAGE),
        # A floor for durations: 1e-320 s is no time limit anyone means.
        ("timeout", 1e-320, TIMEOUT_MESSAGE),
        ("timeout", 0.0009, TIMEOUT_MESSAGE),
        ("maxWaitTime", 1e-5, WAIT_MESSAGE),
        ("timeout", -0.0, TIMEOUT_MESSAGE),
    ],
    ids=lambda v: f"{str(v)[:12]}..({len(str(v))} chars)" if len(str(v)) > 40 else None,
)
def test_numbers_out_of_range_are_refused_not_overflowed(field, value, message):
    assert check({"callbackUrl": URL, field: value}) == (None, message)


def test_the_duration_floor_itself_is_accepted():
    task, error = check({"callbackUrl": URL, "timeout": 0.001, "maxWaitTime": 0.001})
    assert error is None and (task["timeout"], task["max_wait_time"]) == (0.001, 0.001)


@pytest.mark.parametrize(
    "value, problem",
    [
        ("a\x01b", "must not contain control characters (tab is allowed)"),
        ("a\x7fb", "must not contain control characters (tab is allowed)"),
        ("a\x0bb", "must not contain control characters (tab is allowed)"),
        ("a\x00b", "must not contain control characters (tab is allowed)"),
        ("a\x85b", "must not contain control characters (tab is allowed)"),
        ("a\rb", "must not contain line breaks"),
        (" leading", "must not start with a space or tab"),
        ("\tleading", "must not start with a space or tab"),
        # The worker's client counts it as whitespace and would refuse to send the value.
        ("\xa0leading", "must not start with a no-break space (U+00A0)"),
        ("caf\u20ac", "must contain only Latin-1 characters (up to U+00FF)"),
        ("\U0001f600", "must contain only Latin-1 characters (up to U+00FF)"),
    ],
)
def test_header_values_the_worker_cannot_send_are_refused_naming_the_header(value, problem):
    assert check({"callbackUrl": URL, "headers": {"X-Token": value}}) == (
        None,
        f"headers value for X-Token {problem}",
    )


@pytest.mark.parametrize("value", ["a\tb", "café", "trailing ", "", "x" * 100, "nbsp\xa0inside"])
def test_sendable_header_values_are_accepted(value):
    task, error = check({"callbackUrl": URL, "headers": {"X-Token": value}})
    assert error is None and task["headers"] == {"X-Token": value}


@pytest.mark.parametrize(
    "url, message",
    [
        # Literal hosts a browser (and the worker's client) reads as loopback.
        ("http://127.0.0.1./x", LOOPBACK),
        ("http://0x7f000001./x", LOOPBACK),
        ("http://127\u30020\u30020\u30021/x", LOOPBACK),  # ideographic full stops
        ("http://\uff11\uff12\uff17.0.0.1/x", LOOPBACK),  # fullwidth digits
        ("http://\u2460\u2461\u2466.0.0.1/x", LOOPBACK),  # circled digits
        ("http://127\uff0e0\uff0e0\uff0e1/x", LOOPBACK),  # fullwidth full stops
        ("http://0x7F.1/x", LOOPBACK),
        ("http://[::ffff:127.0.0.1]/x", LOOPBACK.replace(")", " (carried in ::ffff:7f00:1))")),
        # Hosts that cannot be valid: refused at creation, never sent to a resolver.
        ("http://[v1.x]/x", INVALID_URL),
        ("http://[fe80::1%25eth0]/x", INVALID_URL),
        ("http://[127.0.0.1]/x", INVALID_URL),
        ("http://1.2.3.4.5/x", INVALID_URL),
        ("http://example.123/x", INVALID_URL),
        ("http://256.0.0.1/x", INVALID_URL),
        ("http://0x100000000/x", INVALID_URL),
        ("http://08.0.0.1/x", INVALID_URL),
        ("http://1" + "0" * 5000 + "/x", "callbackUrl must be at most 2048 characters"),
        ("http://1" + "0" * 2000 + "/x", INVALID_URL),
        ("http://a..b/x", INVALID_URL),
        ("http://exa%6dple.com/x", INVALID_URL),
        ("http://x\u200dy.com/x", INVALID_URL),  # a joiner UTS-46 does not allow there
    ],
)
def test_hosts_are_read_as_a_browser_reads_them(url, message):
    assert check({"callbackUrl": url}) == (None, message)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com./x",
        "http://b\u00fccher.de/x",
        "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/x",  # fullwidth letters
        "http://xn--bcher-kva.de/x",
        "http://my_host.internal/x",
        "http://1e100.net/x",
        "http://deadbeef/x",
        "http://[2606:2800:220:1:248:1893:25c8:1946]:8443/x",
        "http://93.184.215.14/x",
        "http://" + "a" * 64 + ".com/x",  # no DNS length limits, as in a browser
        "https://" + ".".join(["a" * 63] * 20) + "/x",
    ],
)
def test_valid_hosts_are_accepted(url):
    task, error = check({"callbackUrl": url})
    assert error is None and task["callback_url"] == url


@pytest.mark.parametrize(
    "host, reason",
    [
        ("192.0.0.192", "192.0.0.192 is cloud metadata (Oracle Cloud)"),
        ("168.63.129.16", "168.63.129.16 is a cloud host endpoint (Azure WireServer)"),
        (
            "[::ffff:0:169.254.169.254]",
            "169.254.169.254 is cloud metadata (carried in ::ffff:0:a9fe:a9fe)",
        ),
        ("[fd00:ec2::254]", "fd00:ec2::254 is cloud metadata (AWS instance services)"),
        ("[fd20:ce::254]", "fd20:ce::254 is cloud metadata (Google Cloud)"),
        ("100.100.100.200", "100.100.100.200 is cloud metadata"),
    ],
)
def test_cloud_endpoints_are_refused_even_with_private_networks_allowed(host, reason):
    for allow_private in (False, True):
        assert check({"callbackUrl": f"http://{host}/x"}, allow_private=allow_private) == (
            None,
            f"callbackUrl must not point to a private or reserved address ({reason})",
        )


@pytest.mark.parametrize(
    "args, message",
    [
        ({"sortOrder": ""}, "sortOrder must be one of: asc, desc"),
        (
            {"status": ""},
            "status must be one of: pending, delayed, processing, completed, failed, timeout, cancelled",
        ),
        ({"limit": ""}, "limit must be a whole number of at least 1"),
        ({"offset": ""}, "offset must be a whole number of at least 0"),
        ({"offset": "9" * 5000}, "offset must be at most 10000000"),
    ],
)
def test_empty_or_huge_list_parameters_are_refused(args, message):
    assert validate_list_query(args) == (None, message)


def test_a_huge_limit_is_capped_like_any_other():
    assert validate_list_query({"limit": "9" * 5000})[0]["limit"] == 100
