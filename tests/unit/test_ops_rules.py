"""Pure rules behind metrics and heartbeats, in tables."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from asyncqueue.api.metrics import method_label, queue_families, route_label
from asyncqueue.config import ConfigError, Settings
from asyncqueue.db.rows import QueueFigureRow
from asyncqueue.metrics_auth import metrics_allowed
from asyncqueue.worker.heartbeat import SILENT_AFTER, worker_state


@pytest.mark.parametrize(
    "header, token, allowed",
    [
        (None, None, True),
        ("Bearer anything", None, True),
        (None, "s3cret", False),
        ("", "s3cret", False),
        ("Bearer s3cret", "s3cret", True),
        ("bearer s3cret", "s3cret", True),
        ("Bearer  s3cret ", "s3cret", True),
        ("Bearer wrong", "s3cret", False),
        ("Basic s3cret", "s3cret", False),
        ("s3cret", "s3cret", False),
        ("Bearer s3cre", "s3cret", False),
        ("\tBearer\ts3cret\t", "s3cret", False),  # the scheme ends at a space
        (" Bearer s3cret\t", "s3cret", True),
        ("Bearer s3cret\u00a0", "s3cret", False),  # no-break space is not HTTP whitespace
        ("Bearer \u0085s3cret", "s3cret", False),  # nor is NEL
        ("Bearer", "s3cret", False),
    ],
)
def test_metrics_token(header, token, allowed):
    assert metrics_allowed(header, token) is allowed


@pytest.mark.parametrize(
    "seconds, state",
    [
        (0, "live"),
        (SILENT_AFTER - 0.1, "live"),
        (SILENT_AFTER, "live"),
        (SILENT_AFTER + 0.1, "silent"),
        (3600, "silent"),
    ],
)
def test_worker_state(seconds, state):
    assert worker_state(seconds) == state


class Rule:
    def __init__(self, rule):
        self.rule = rule


@pytest.mark.parametrize(
    "rule, label",
    [(Rule("/v1/tasks/<task_id>"), "/v1/tasks/<task_id>"), (None, "unmatched")],
)
def test_route_label_is_the_template_never_the_path(rule, label):
    assert route_label(rule) == label


@pytest.mark.parametrize(
    "method, label", [("GET", "GET"), ("POST", "POST"), ("BREW", "other"), ("get", "other")]
)
def test_method_label_is_bounded(method, label):
    assert method_label(method) == label


def families(rows):
    registry = CollectorRegistry()

    class Fixed:
        def collect(self):
            return queue_families(rows)

    registry.register(Fixed())
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_queue_families_fill_missing_statuses_and_add_deleted_to_finished():
    got = families(
        [
            QueueFigureRow("tasks", "pending", 3.0),
            QueueFigureRow("tasks", "completed", 5.0),
            QueueFigureRow("deleted", "completed", 1000.0),
            QueueFigureRow("deleted", "cancelled", 2.0),
            QueueFigureRow("lag", None, 12.5),
            QueueFigureRow("workers", None, 2.0),
        ]
    )
    assert got[("asyncqueue_tasks", (("status", "pending"),))] == 3
    assert got[("asyncqueue_tasks", (("status", "delayed"),))] == 0
    assert got[("asyncqueue_tasks", (("status", "completed"),))] == 5
    assert got[("asyncqueue_tasks_finished_total", (("status", "completed"),))] == 1005
    assert got[("asyncqueue_tasks_finished_total", (("status", "cancelled"),))] == 2
    assert got[("asyncqueue_tasks_finished_total", (("status", "failed"),))] == 0
    assert ("asyncqueue_tasks_finished_total", (("status", "pending"),)) not in got
    assert got[("asyncqueue_queue_lag_seconds", ())] == 12.5
    assert got[("asyncqueue_workers_live", ())] == 2


def test_queue_lag_is_never_negative():
    got = families([QueueFigureRow("lag", None, -0.002)])
    assert got[("asyncqueue_queue_lag_seconds", ())] == 0


@pytest.mark.parametrize(
    "env, field, value",
    [
        ({}, "retention_days", 30.0),
        ({"ASYNCQUEUE_RETENTION_DAYS": "0"}, "retention_days", 0.0),
        ({"ASYNCQUEUE_RETENTION_DAYS": "7.5"}, "retention_days", 7.5),
        ({}, "worker_metrics_port", None),
        ({"ASYNCQUEUE_WORKER_METRICS_PORT": "9100"}, "worker_metrics_port", 9100),
        ({}, "metrics_token", None),
        ({"ASYNCQUEUE_METRICS_TOKEN": "t"}, "metrics_token", "t"),
    ],
)
def test_ops_settings(env, field, value):
    assert getattr(Settings.from_env({"DATABASE_URL": "postgresql://x", **env}), field) == value


@pytest.mark.parametrize(
    "env", [{"ASYNCQUEUE_RETENTION_DAYS": "-1"}, {"ASYNCQUEUE_WORKER_METRICS_PORT": "0"}]
)
def test_ops_settings_refused(env):
    with pytest.raises(ConfigError):
        Settings.from_env({"DATABASE_URL": "postgresql://x", **env})


def documented_metrics() -> dict:
    """(name -> (type, labels)) from docs/operations.md's metrics table."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text.split("### Metrics", 1)[1].split("\n### ", 1)[0]
    found = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`asyncqueue_"):
            labels = set(re.findall(r"`(\w+)`", re.sub(r"\(.*?\)", "", cells[2])))
            found[cells[0].strip("`")] = (cells[1], labels)
    return found


def code_metrics() -> dict:
    """(name -> (type, labels)) of every metric the web and the worker serve."""
    from asyncqueue.api import metrics as web
    from asyncqueue.worker import metrics as worker

    objects = [web.HTTP_REQUESTS, web.HTTP_DURATION]
    objects += list(worker.REGISTRY._collector_to_names)
    found = {}
    for metric in objects:
        (family,) = metric.describe()
        found[family.name] = (family.type, set(metric._labelnames))
    for family in [*web.queue_families([]), *web.QueueCollector(None).collect()]:
        found[family.name] = (family.type, {k for s in family.samples for k in s.labels})
    return {
        name + "_total" if kind == "counter" else name: (kind, labels)
        for name, (kind, labels) in found.items()
    }


def test_the_documented_metrics_table_matches_the_code():
    assert documented_metrics() == code_metrics()


def test_multiproc_dir_made_fresh_when_unset(monkeypatch):
    from asyncqueue.web import metrics_multiprocess

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(metrics_multiprocess, "_made_here", None)
    made = metrics_multiprocess.prepare_directory()
    try:
        assert Path(made).is_dir() and not list(Path(made).iterdir())
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == made
    finally:
        metrics_multiprocess.on_exit(None)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR")  # set by the code, not by monkeypatch
    assert not Path(made).exists()


def test_multiproc_dir_given_holds_one_directory_per_master(monkeypatch, tmp_path):
    # Two masters on one host with the same PROMETHEUS_MULTIPROC_DIR: the second to start
    # must not delete (or add to) the live first one's files.
    from asyncqueue.web import metrics_multiprocess

    (tmp_path / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(metrics_multiprocess, "_made_here", None)
    first = Path(metrics_multiprocess.prepare_directory())
    (first / "counter_123.db").write_bytes(b"live")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # the second master's env
    second = Path(metrics_multiprocess.prepare_directory())
    assert first.parent == second.parent == tmp_path and first != second
    assert (first / "counter_123.db").read_bytes() == b"live"
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(second)
    assert not list(second.iterdir())
    metrics_multiprocess.on_exit(None)  # the second master exits: only its own directory goes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["keep.txt", first.name])


def test_directories_of_killed_masters_are_removed(tmp_path):
    from asyncqueue.web.metrics_multiprocess import PREFIX, remove_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = tmp_path / f"{PREFIX}{os.getpid()}-abc"
    gone = tmp_path / f"{PREFIX}{dead.pid}-def"
    other = tmp_path / "unrelated-999999-x"
    for path in (mine, gone, other):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")
    remove_orphans(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])
