"""Structured logs: one JSON object per line on stderr, easy to grep and to ship."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_configured = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("asyncqueue")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _configured = True


def log_event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields) -> None:
    """Log `message` with `fields` as top-level keys of the JSON line."""
    logger.log(level, message, extra={"fields": fields})
