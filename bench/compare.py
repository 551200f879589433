"""bin/bench --against REV: this checkout and another revision, measured alternately in one run.

Both run against one embedded PostgreSQL (a database each, migrated by its own code) and one
receiver, with the same settings (the default log level); both web servers stay up throughout
(the idle one's background work, a create-limit sync five times a second, is the only load it
adds). Each round measures create, dispatch (fast and 50 ms receivers) and pickup for one side
and then the other, the order swapped every round, so that the machine's drift falls on both
alike; for each measure the median over the rounds is reported with every round's figure, and
the ratio after / before. The harness's own SQL (due rows inserted straight into `tasks`) must
suit the other revision's schema: revisions since the tasks table took its present columns do.

    python -m bench.compare OTHER_ROOT [--label REV] [--rounds N] [--quick|--tiny]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from asyncqueue import embedded_pg
from bench.harness import FULL, QUICK, ROOT, TINY, Bench, log

# (name, how to read it off a result, True where higher is better)
MEASURES = (
    ("create, tasks/s", lambda r: r["create"]["tasks_per_s"], True),
    ("create p99, ms", lambda r: r["create"]["p99_ms"], False),
    ("create web CPU, ms/request", lambda r: r["create"]["cpu_ms_per_request"]["web"], False),
    ("dispatch, callbacks/s", lambda r: r["dispatch"]["callbacks_per_s"], True),
    ("dispatch CPU s / 1,000", lambda r: r["dispatch"]["cpu_s_per_1000"], False),
    ("dispatch 50 ms, callbacks/s", lambda r: r["dispatch_50ms"]["callbacks_per_s"], True),
    ("pickup p50, ms", lambda r: r["pickup"]["p50_ms"], False),
    ("pickup p99, ms", lambda r: r["pickup"]["p99_ms"], False),
)


def measure_round(side: Bench) -> dict:
    sizes = side.sizes
    return {
        "create": side.measure_create(),
        "dispatch": side.measure_dispatch(sizes.dispatch_tasks, "/fast"),
        "dispatch_50ms": side.measure_dispatch(sizes.slow_tasks, "/slow"),
        "pickup": side.measure_pickup(sizes.pickup_tasks),
    }


def run(other: Path, rounds: int, sizes) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="asyncqueue-compare-"))
    before = Bench(sizes, workdir, bin_dir=other / ".venv" / "bin", code_root=other)
    after = Bench(sizes, workdir)
    before.pg = after.pg = embedded_pg.ensure_running(workdir / "pgdata", fast_unsafe=True)
    sides = {"before": before, "after": after}
    results: dict[str, list[dict]] = {name: [] for name in sides}
    try:
        after.start_receiver()
        before.receiver, before.receiver_port = after.receiver, after.receiver_port
        for name, side in sides.items():
            side.start_database(name)
            side.start_web()
            side.measure_create(seconds=1.0)  # warm-up: pools, prepared statements, imports
        for i in range(rounds):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for name in order:
                log(f"{name} (round {i + 1} of {rounds})")
                results[name].append(measure_round(sides[name]))
    finally:
        before.stop_processes(before.all_workers + ([before.web] if hasattr(before, "web") else []))
        after.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def table(results: dict[str, list[dict]], label: str) -> str:
    lines = [
        f"| measure | before ({label}) | after (this checkout) | after / before | rounds, before "
        "| rounds, after |",
        "|---|---|---|---|---|---|",
    ]
    for name, read, higher_better in MEASURES:
        b = [read(r) for r in results["before"]]
        a = [read(r) for r in results["after"]]
        mb, ma = statistics.median(b), statistics.median(a)
        if mb and mb == mb and ma == ma:
            change = (ma / mb - 1) * 100
            better = "better" if (change > 0) == higher_better else "worse"
            ratio = f"{ma / mb:.3f} ({change:+.1f} %, {better})"
        else:
            ratio = "—"
        lines.append(
            f"| {name} | {mb:,.2f} | {ma:,.2f} | {ratio} | "
            + ", ".join(f"{x:,.1f}" for x in b)
            + " | "
            + ", ".join(f"{x:,.1f}" for x in a)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bin/bench --against REV")
    parser.add_argument("other", type=Path, help="a checkout of the other revision, with .venv")
    parser.add_argument("--label", default="other")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    started = time.monotonic()
    results = run(args.other.resolve(), args.rounds, sizes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2, default=str))
    markdown = table(results, args.label)
    (out / "compare.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\n({args.rounds} rounds, {time.monotonic() - started:.0f} s; results in {out})")


if __name__ == "__main__":
    main()
