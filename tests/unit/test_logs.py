"""Log lines: one JSON object each, in the shape they always had."""

import json
import logging
from datetime import UTC, datetime

from asyncqueue.logs import JsonFormatter


def record(created: float, **fields) -> logging.LogRecord:
    r = logging.LogRecord("asyncqueue.worker", logging.INFO, __file__, 1, "task finished", (), None)
    r.created = created
    r.fields = fields
    return r


def test_a_line_is_one_json_object_with_the_fields_on_top():
    formatter = JsonFormatter()
    at = datetime(2026, 1, 15, 10, 30, 5, 123456, tzinfo=UTC).timestamp()
    line = formatter.format(record(at, task_id="t-1", status_code=200, at=datetime(2026, 1, 1)))
    assert json.loads(line) == {
        "time": "2026-01-15T10:30:05.123+00:00",
        "level": "info",
        "logger": "asyncqueue.worker",
        "message": "task finished",
        "task_id": "t-1",
        "status_code": 200,
        "at": "2026-01-01 00:00:00",
    }


def test_the_time_is_right_across_seconds():
    formatter = JsonFormatter()
    times = [1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5, 1_699_999_999.25]
    got = [json.loads(formatter.format(record(t)))["time"] for t in times]
    want = [datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds") for t in times]
    assert got == want


def test_other_libraries_log_json_lines_too(monkeypatch, capsys):
    """psycopg.pool's warnings during an outage were plain multi-line text."""
    from asyncqueue import logs

    monkeypatch.setattr(logs, "_configured", False)
    ours = logging.getLogger("asyncqueue")
    before = (list(ours.handlers), list(logging.getLogger().handlers), ours.level)
    try:
        logs.configure_logging("INFO")
        logging.getLogger("psycopg.pool").warning("error connecting:\nconnection refused\n")
        logging.getLogger("asyncqueue.worker").info("task finished")
    finally:
        ours.handlers[:] = before[0]
        logging.getLogger().handlers[:] = before[1]
        ours.setLevel(before[2])
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [e["logger"] for e in entries] == ["psycopg.pool", "asyncqueue.worker"]
    assert entries[0]["message"] == "error connecting:\nconnection refused\n"
