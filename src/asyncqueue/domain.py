"""Every limit the service enforces, in one place; docs/guarantees.md lists them."""

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

LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 100
LIST_MAX_OFFSET = 10_000_000  # deeper pages would scan millions of rows each

# Plan limits, from the API document's table. None means unlimited.
PLAN_MAX_WAIT_TIME = {"free": 30, "pro": 120}
PLAN_MAX_API_KEYS = {"free": 1, "pro": None}
PLAN_MAX_MEMBERS = {"free": 2, "pro": None}
PLANS = tuple(PLAN_MAX_WAIT_TIME)
# Tasks a team may create per second, over all web processes (429 above; a burst of one second's
# worth at once). ASYNCQUEUE_CREATE_RATE overrides them. Free: enough for a real workload, not
# for a load test on someone else's machine; pro: about half of what two web processes serve.
PLAN_CREATE_RATE = {"free": 20, "pro": 500}

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

# Workers write a heartbeat this often; one whose last is older than SILENT_AFTER is "silent"
# (the CLI's `workers list` and /metrics both judge by it).
HEARTBEAT_INTERVAL = 5.0
SILENT_AFTER = 3 * HEARTBEAT_INTERVAL
