"""The service's vocabulary, in one place: task statuses and their sets, plans and every limit
the service enforces, methods, backoffs, and the names processes share through the database
(the NOTIFY channel, advisory-lock ids). docs/guarantees.md lists the limits;
tests/integration/test_domain_sql.py checks sql/ against this module."""

from __future__ import annotations

# -- task statuses ----------------------------------------------------------------------------

PENDING, DELAYED, PROCESSING = "pending", "delayed", "processing"
COMPLETED, FAILED, TIMEOUT, CANCELLED = "completed", "failed", "timeout", "cancelled"
STATUSES = (PENDING, DELAYED, PROCESSING, COMPLETED, FAILED, TIMEOUT, CANCELLED)
# Waiting for their time (delayed: until delayUntil); the only ones a cancel may stop.
WAITING = (PENDING, DELAYED)
# Unfinished: claimed when due (a processing one when its lease runs out).
ACTIVE = (*WAITING, PROCESSING)
# Final: never claimed again; retention deletes them.
FINISHED = (COMPLETED, FAILED, TIMEOUT, CANCELLED)
# The final statuses an attempt's outcome sets (a cancel is the API's, never a worker's).
OUTCOMES = (COMPLETED, FAILED, TIMEOUT)

# -- a task's request -------------------------------------------------------------------------

GET, POST, PUT, DELETE = "GET", "POST", "PUT", "DELETE"
METHODS = (GET, POST, PUT, DELETE)
DEFAULT_METHOD = POST
ON_COMPLETE_METHOD = POST  # the onComplete notification's


def sends_body(method: str) -> bool:
    """Whether a call with `method` carries the task's body (the document: ignored for GET)."""
    return method != GET


LINEAR, EXPONENTIAL = "linear", "exponential"
BACKOFFS = (LINEAR, EXPONENTIAL)
DEFAULT_BACKOFF = EXPONENTIAL
DEFAULT_MAX_WAIT_TIME = 30  # seconds
DEFAULT_TIMEOUT = 30  # seconds
DEFAULT_MAX_RETRIES = 3

# -- limits -----------------------------------------------------------------------------------

KIB = 1024
MIB = 1024 * KIB

MAX_REQUEST_BODY = 1 * MIB  # the whole JSON body of an API request (413 above)
MAX_URL_LENGTH = 2048  # callbackUrl and onCompleteUrl
MAX_CALLBACK_BODY = 256 * KIB  # the task's `body`, as UTF-8
MAX_HEADERS_TOTAL = 16 * KIB  # the task's `headers`, names plus values, as UTF-8
MAX_HEADER_COUNT = 64
MAX_TIMEOUT = 120  # seconds, the per-attempt `timeout`
MIN_SECONDS = 0.001  # the least `timeout` or `maxWaitTime` (1e-320 s is no time limit anyone means)
MAX_RETRIES = 10
MAX_REDIRECTS = 5
# A callback's response, as stored: headers past these are left out (result.headersTruncated).
MAX_RESPONSE_HEADERS_TOTAL = 16 * KIB  # names plus values, as UTF-8
MAX_RESPONSE_HEADER_COUNT = 64
# A redirect's body is never decoded; one this small is read (raw) so its connection can be
# kept alive, a larger one is not read at all (the connection is closed instead).
MAX_REDIRECT_BODY_DRAINED = 4 * KIB
ON_COMPLETE_TIMEOUT = 10  # seconds, as the API document promises
# Days a finished task is kept (ASYNCQUEUE_RETENTION_DAYS, prune --older-than): a century, well
# inside what a PostgreSQL interval holds.
MAX_RETENTION_DAYS = 36_500
# How far ahead ASYNCQUEUE_MAX_DELAY_DAYS may let delayUntil be: a century, far inside what a date
# (year 9999) and a PostgreSQL timestamp hold.
MAX_DELAY_DAYS = 36_500

LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 100
LIST_MAX_OFFSET = 10_000_000  # deeper pages would scan millions of rows each

# -- plans ------------------------------------------------------------------------------------

FREE, PRO = "free", "pro"
PLANS = (FREE, PRO)
DEFAULT_PLAN = FREE  # a new team's (also the teams.plan column's default)
UPGRADE_PLAN = PRO  # what a refusal at a plan limit suggests
# Plan limits, from the API document's table. None means unlimited.
PLAN_MAX_WAIT_TIME = {FREE: 30, PRO: 120}
PLAN_MAX_API_KEYS = {FREE: 1, PRO: None}
PLAN_MAX_MEMBERS = {FREE: 2, PRO: None}
# Tasks a team may create per second, over all web processes (429 above; a burst of one second's
# worth at once). ASYNCQUEUE_CREATE_RATE overrides them. Free: enough for a real workload, not
# for a load test on someone else's machine; pro: about half of what two web processes serve.
PLAN_CREATE_RATE = {FREE: 20, PRO: 500}


# A plan limit is read two ways. Adding one more (a key, a member) needs room for it: refused
# at the limit. Moving a team to a plan is refused only over it: a team exactly at the new
# plan's limit fits it, and can add nothing more there.
def room_for_one_more(count: int, limit: int | None) -> bool:
    """Whether one more can be added to `count` under `limit` (None: unlimited)."""
    return limit is None or count < limit


def over_limit(count: int, limit: int | None) -> bool:
    """Whether `count` is more than `limit` allows (None: unlimited)."""
    return limit is not None and count > limit


# -- callback headers -------------------------------------------------------------------------

# Headers a caller may not set on a callback: the HTTP client owns framing and routing.
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)

# -- workers ----------------------------------------------------------------------------------

# Workers write a heartbeat this often; one whose last is older than SILENT_AFTER is "silent"
# (the CLI's `workers list` and /metrics both judge by it).
HEARTBEAT_INTERVAL = 5.0
SILENT_AFTER = 3 * HEARTBEAT_INTERVAL

# -- names shared through the database --------------------------------------------------------

# NOTIFY'd when tasks are inserted, a retry is scheduled or claims are handed back: a hint to
# sleeping workers that work may be due (the tasks_notify trigger and sql/queries/tasks.sql).
TASKS_CHANNEL = "asyncqueue_tasks"
# Advisory-lock ids, one per job that runs alone across every process on a database. Any fixed
# numbers work; they only have to be the same in every process and differ from one another.
MIGRATION_LOCK_ID = 7_302_001  # migrations, applied by one process at a time
PRUNE_LOCK_ID = 7_302_005  # one retention batch at a time
CREATE_LIMITS_LOCK_ID = 7_302_010  # the web processes' create-limit syncs, one at a time
LOCK_IDS = (MIGRATION_LOCK_ID, PRUNE_LOCK_ID, CREATE_LIMITS_LOCK_ID)
