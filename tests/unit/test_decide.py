"""The outcome rules and backoff maths, as tables, with time passed in."""

from datetime import UTC, datetime, timedelta

import pytest

from asyncqueue.worker.attempt import AttemptResult
from asyncqueue.worker.backoff import retry_delay
from asyncqueue.worker.decide import (
    COMPLETED,
    FAILED,
    RETRY,
    TIMEOUT,
    TaskState,
    attempt_time_limit,
    decide_outcome,
)

T0 = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "strategy, delays",
    [
        ("exponential", [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]),
        ("linear", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ],
)
def test_retry_delays_are_the_documented_ones(strategy, delays):
    assert [retry_delay(strategy, n) for n in range(1, 11)] == delays


def test_retry_delay_rejects_nonsense():
    with pytest.raises(ValueError):
        retry_delay("exponential", 0)
    with pytest.raises(ValueError):
        retry_delay("fibonacci", 1)


def state(retry_count=0, max_retries=3, backoff="exponential", max_wait=30, timeout=30):
    return TaskState(
        retry_count=retry_count,
        max_retries=max_retries,
        retry_backoff=backoff,
        max_wait_time=max_wait,
        timeout=timeout,
        deadline=T0 + timedelta(seconds=max_wait),
    )


def response(code):
    return AttemptResult(status_code=code, headers={}, body="", duration_ms=5)


REFUSED = AttemptResult(error="fetch failed: ECONNREFUSED")
TIMED_OUT = AttemptResult(timed_out=True)
BLOCKED = AttemptResult(error="blocked destination: x: 10.0.0.1 is private", blocked=True)
UNSENDABLE = AttemptResult(error="invalid request: header 'X-A' ...", unsendable=True)
INTERNAL = AttemptResult(error="internal error: RuntimeError: boom", internal=True)


@pytest.mark.parametrize(
    "task, attempt, deadline_limited, elapsed, kind, error, retry_in",
    [
        # Success, redirects (already followed) and client errors complete the task.
        (state(), response(200), False, 1, COMPLETED, None, None),
        (state(), response(204), False, 1, COMPLETED, None, None),
        (state(), response(304), False, 1, COMPLETED, None, None),
        (state(), response(404), False, 1, COMPLETED, None, None),
        (state(), response(499), False, 1, COMPLETED, None, None),
        (state(retry_count=3), response(400), False, 1, COMPLETED, None, None),
        # 5xx, network errors and attempt timeouts are retried with the documented delays...
        (state(), response(500), False, 1, RETRY, "HTTP 500", 1),
        (state(retry_count=1), response(503), False, 1, RETRY, "HTTP 503", 2),
        (state(retry_count=2), REFUSED, False, 1, RETRY, "fetch failed: ECONNREFUSED", 4),
        (state(retry_count=2, backoff="linear"), response(502), False, 1, RETRY, "HTTP 502", 3),
        (state(timeout=5), TIMED_OUT, False, 5, RETRY, "attempt timed out after 5 s", 1),
        # ... until the retries are used up.
        (state(retry_count=3), response(503), False, 1, FAILED, "HTTP 503", None),
        (state(max_retries=0), REFUSED, False, 1, FAILED, "fetch failed: ECONNREFUSED", None),
        (
            state(retry_count=3, timeout=5),
            TIMED_OUT,
            False,
            5,
            FAILED,
            "attempt timed out after 5 s",
            None,
        ),
        # A blocked destination fails at once: retrying cannot help.
        (state(), BLOCKED, False, 0, FAILED, "blocked destination: x: 10.0.0.1 is private", None),
        # So does a request that cannot be sent as given (it would fail the same way again).
        (state(), UNSENDABLE, False, 0, FAILED, "invalid request: header 'X-A' ...", None),
        # An internal error of the worker's own is retried like a network error, within
        # maxRetries, so the task still ends.
        (state(), INTERNAL, False, 0, RETRY, "internal error: RuntimeError: boom", 1),
        (
            state(retry_count=3),
            INTERNAL,
            False,
            0,
            FAILED,
            "internal error: RuntimeError: boom",
            None,
        ),
        # maxWaitTime: an attempt cut by the deadline, or a retry that would start after it.
        (
            state(max_wait=10, timeout=30),
            TIMED_OUT,
            True,
            10,
            TIMEOUT,
            "maxWaitTime of 10 s exceeded",
            None,
        ),
        (
            state(max_wait=10),
            response(503),
            False,
            9.5,
            TIMEOUT,
            "maxWaitTime of 10 s exceeded (last attempt: HTTP 503)",
            None,
        ),
        (
            state(max_wait=10, retry_count=2),
            response(503),
            False,
            6.5,
            TIMEOUT,
            "maxWaitTime of 10 s exceeded (last attempt: HTTP 503)",
            None,
        ),
        (state(max_wait=10, retry_count=2), response(503), False, 5.5, RETRY, "HTTP 503", 4),
    ],
)
def test_decide_outcome(task, attempt, deadline_limited, elapsed, kind, error, retry_in):
    outcome = decide_outcome(
        task, attempt, limit_was_deadline=deadline_limited, now=T0 + timedelta(seconds=elapsed)
    )
    assert (outcome.kind, outcome.error, outcome.retry_in) == (kind, error, retry_in)


def test_result_is_kept_for_completed_and_failed_responses():
    outcome = decide_outcome(state(retry_count=3), response(503), limit_was_deadline=False, now=T0)
    assert outcome.result == {"statusCode": 503, "headers": {}, "body": "", "duration": 5}
    outcome = decide_outcome(state(), REFUSED, limit_was_deadline=False, now=T0)
    assert outcome.result is None


@pytest.mark.parametrize(
    "max_wait, timeout, elapsed, limit",
    [
        (30, 30, 0, 30),  # first attempt: its own timeout
        (30, 10, 5, 10),
        (30, 10, 25, 5),  # five seconds before the deadline: cut to five
        (30, 10, 30, 0),
        (30, 10, 31, -1),  # past the deadline: no attempt at all
    ],
)
def test_attempt_time_limit(max_wait, timeout, elapsed, limit):
    task = state(max_wait=max_wait, timeout=timeout)
    assert attempt_time_limit(task, T0 + timedelta(seconds=elapsed)) == limit


def test_truncated_headers_are_marked_in_the_result():
    attempt = AttemptResult(status_code=200, headers={"a": "b"}, body="", headers_truncated=True)
    outcome = decide_outcome(state(), attempt, limit_was_deadline=False, now=T0)
    assert outcome.result["headersTruncated"] is True
    assert "bodyTruncated" not in outcome.result


def test_decide_does_not_import_the_http_client():
    # decide is pure: importing it must not pull in requests or the worker's I/O modules.
    import subprocess
    import sys

    code = (
        "import sys, asyncqueue.worker.decide; "
        "bad = [m for m in ('requests', 'urllib3', 'asyncqueue.worker.http_client', "
        "'asyncqueue.worker.execute') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
