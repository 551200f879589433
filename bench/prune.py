"""bin/bench's retention phase, run on the at-scale phase's finished rows (completed 40 days
ago, so all past the default 30-day retention): /metrics scrape time with them in the table,
then dispatch and pickup without pruning, while `asyncqueue tasks prune` deletes them, and
without again (the "not pruning" figure is the mean of the runs either side, as one drain can
differ from the next on a shared machine), and the prune's own rate. Tiny and quick runs (no at-scale phase) fill a few rows of their own.
"""

from __future__ import annotations

import json
import subprocess
import time

TINY_ROWS = 5_000


def measure(bench, sizes) -> dict:
    from bench.harness import BIN, log  # here, not at the top: the harness imports this module

    rows = sizes.scale_rows or TINY_ROWS
    if not sizes.scale_rows:
        bench.fill_finished(rows)
    out: dict = {"rows": rows, "scrape": measure_scrape(bench, 200 if sizes.scale_rows else 20)}
    log("retention: dispatch and pickup without pruning")
    before = measure_both(bench, sizes)
    log(f"retention: dispatch and pickup while {rows:,} rows are pruned")
    started = time.monotonic()
    prune = subprocess.Popen(
        [str(BIN / "asyncqueue"), "tasks", "prune", "--older-than", "30", "--json"],
        env=bench.env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    out["while_pruning"] = measure_both(bench, sizes)
    measured_for = time.monotonic() - started
    # If the prune ended before the measurements did, part of them ran without it: say so.
    out["prune_outlasted_measurements"] = prune.poll() is None
    stdout, _ = prune.communicate(timeout=1800)
    result = json.loads(stdout)
    out["prune"] = {
        "deleted": result["tasks"],
        "seconds": result["seconds"],
        "rows_per_s": result["tasks"] / result["seconds"] if result["seconds"] else float("nan"),
        "measurements_seconds": measured_for,
    }
    log("retention: dispatch and pickup without pruning, again")
    after = measure_both(bench, sizes)
    out["without"] = {"runs": [before, after], **mean_of(before, after)}
    out["counts_match"] = bench.sql(
        "SELECT (SELECT coalesce(sum(n), 0) FROM task_counts) = (SELECT count(*) FROM tasks)"
    )[0][0]
    return out


def measure_both(bench, sizes) -> dict:
    return {
        "dispatch": bench.measure_dispatch(sizes.dispatch_tasks, "/fast"),
        "pickup": bench.measure_pickup(sizes.pickup_tasks),
    }


def mean_of(a: dict, b: dict) -> dict:
    """The figures the table compares, averaged over two runs."""
    return {
        "dispatch": {
            "callbacks_per_s": (a["dispatch"]["callbacks_per_s"] + b["dispatch"]["callbacks_per_s"])
            / 2
        },
        "pickup": {k: (a["pickup"][k] + b["pickup"][k]) / 2 for k in ("p50_ms", "p99_ms")},
    }


def measure_scrape(bench, n: int) -> dict:
    """Milliseconds per GET /metrics (queue figures read from the database each time)."""
    from bench.harness import percentile

    url = f"http://127.0.0.1:{bench.web_port}/metrics"
    bench.http.get(url, timeout=30)  # warm: each process's first scrape imports and connects
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        r = bench.http.get(url, timeout=30)
        latencies.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200 and "asyncqueue_tasks{" in r.text
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def table(r: dict) -> list[str]:
    """The retention phase's lines for the Markdown results."""
    if "prune" not in r:
        return []
    p = r["prune"]
    without, during = p["without"], p["while_pruning"]

    def change(a, b):
        return f"{(b / a - 1) * 100:+.0f} %" if a else "—"

    d0, d1 = without["dispatch"]["callbacks_per_s"], during["dispatch"]["callbacks_per_s"]
    lines = [
        "",
        f"Retention, with {p['rows']:,} finished tasks past it:",
        "",
        "| measure | not pruning (mean of the runs before and after) | while pruning | change |",
        "|---|---|---|---|",
        f"| dispatch, callbacks/s | {d0:,.0f} | {d1:,.0f} | {change(d0, d1)} |",
    ]
    for stat in ("p50_ms", "p99_ms"):
        a, b = without["pickup"][stat], during["pickup"][stat]
        lines.append(f"| pickup {stat[:3]}, ms | {a:.1f} | {b:.1f} | {change(a, b)} |")
    lines += [
        "",
        f"Prune: {p['prune']['deleted']:,} rows in {p['prune']['seconds']:.1f} s "
        f"({p['prune']['rows_per_s']:,.0f} rows/s); it "
        + ("outlasted" if p["prune_outlasted_measurements"] else "ended before the end of")
        + f" the {p['prune']['measurements_seconds']:.0f} s of measurements beside it. "
        "Not pruning, before / after: dispatch "
        + " / ".join(f"{x['dispatch']['callbacks_per_s']:,.0f}" for x in without["runs"])
        + " callbacks/s, pickup p99 "
        + " / ".join(f"{x['pickup']['p99_ms']:.1f}" for x in without["runs"])
        + " ms. "
        f"List totals match count(*) afterwards: {p['counts_match']}. "
        f"GET /metrics with the rows in the table: p50 {p['scrape']['p50_ms']:.1f} ms, "
        f"p99 {p['scrape']['p99_ms']:.1f} ms.",
    ]
    return lines
