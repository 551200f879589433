"""The values an attempt is described by: what to call, and what happened. No I/O here, so the
pure decisions (decide.py) can use them without importing the HTTP client."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallSpec:
    method: str
    url: str
    headers: dict
    body: str | None


@dataclass
class AttemptResult:
    """What happened: a response (status_code set) or a failure (error set).

    Failures are of four kinds: a network failure or time-out (retried); `blocked`, a
    destination the SSRF policy refuses, and `unsendable`, a request that cannot be sent as the
    task gives it (a header value outside Latin-1, say): both would fail the same way again, so
    they are not retried; and `internal`, an unexpected error of the worker's own ("internal
    error: ..."), retried like a network failure within the task's maxRetries.
    """

    status_code: int | None = None
    headers: dict = field(default_factory=dict)
    body: str | None = None
    body_truncated: bool = False
    headers_truncated: bool = False
    duration_ms: int = 0
    error: str | None = None
    timed_out: bool = False
    cut_short: bool = False  # timed out because the worker cut every attempt (shutting down)
    blocked: bool = False
    unsendable: bool = False
    internal: bool = False

    def result_json(self) -> dict | None:
        if self.status_code is None:
            return None
        result = {
            "statusCode": self.status_code,
            "headers": self.headers,
            "body": self.body,
            "duration": self.duration_ms,
        }
        if self.body_truncated:
            result["bodyTruncated"] = True
        if self.headers_truncated:
            result["headersTruncated"] = True
        return result
