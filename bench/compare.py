"""bin/bench --against REV: this checkout and another revision, measured alternately in one run.

Both run against one embedded PostgreSQL (a database each, migrated by its own code) and one
receiver, with the same settings (the default log level); both web servers stay up throughout
(the idle one's background work, a create-limit sync five times a second, is the only load it
adds). Each round measures create, dispatch (fast and 50 ms receivers) and pickup for one side
and then the other, the order swapped every round, so that the machine's drift falls on both
alike; for each measure the median over the rounds is reported with every round's figure, and
the ratio after / before. The harness's own SQL (due rows inserted straight into `tasks`) must
suit the other revision's schema: revisions since the tasks table took its present columns do.

    python -m bench.compare OTHER_ROOT [--label REV] [--rounds N] [--quick|--tiny] [--only PHASES]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from asyncqueue.dev import embedded_pg
from bench.harness import FULL, QUICK, ROOT, TINY, Bench, log

# (phase, name, how to read it off the phase's result, True where higher is better)
MEASURES = (
    ("create", "create, tasks/s", lambda r: r["tasks_per_s"], True),
    ("create", "create p99, ms", lambda r: r["p99_ms"], False),
    ("create", "create web CPU, ms/request", lambda r: r["cpu_ms_per_request"]["web"], False),
    ("dispatch", "dispatch, callbacks/s", lambda r: r["callbacks_per_s"], True),
    ("dispatch", "dispatch CPU s / 1,000", lambda r: r["cpu_s_per_1000"], False),
    ("dispatch_50ms", "dispatch 50 ms, callbacks/s", lambda r: r["callbacks_per_s"], True),
    ("pickup", "pickup p50, ms", lambda r: r["p50_ms"], False),
    ("pickup", "pickup p99, ms", lambda r: r["p99_ms"], False),
)
PHASES = ("create", "dispatch", "dispatch_50ms", "pickup")


def measure_round(side: Bench, phases: tuple[str, ...]) -> dict:
    sizes = side.sizes
    measure = {
        "create": lambda: side.measure_create(),
        "dispatch": lambda: side.measure_dispatch(sizes.dispatch_tasks, "/fast"),
        "dispatch_50ms": lambda: side.measure_dispatch(sizes.slow_tasks, "/slow"),
        "pickup": lambda: side.measure_pickup(sizes.pickup_tasks),
    }
    return {phase: measure[phase]() for phase in phases}


def run(other: Path, rounds: int, sizes, phases: tuple[str, ...] = PHASES) -> dict:
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
                results[name].append(measure_round(sides[name], phases))
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
    for phase, name, read, higher_better in MEASURES:
        if phase not in results["before"][0]:
            continue
        b = [read(r[phase]) for r in results["before"]]
        a = [read(r[phase]) for r in results["after"]]
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
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"phases to measure, comma-separated (of {', '.join(PHASES)})",
    )
    args = parser.parse_args()
    phases = tuple(p.strip() for p in args.only.split(",") if p.strip())
    if not phases or set(phases) - set(PHASES):
        parser.error(f"--only takes phases among {', '.join(PHASES)}, got {args.only!r}")
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    started = time.monotonic()
    results = run(args.other.resolve(), args.rounds, sizes, phases)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2, default=str))
    markdown = table(results, args.label)
    (out / "compare.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\n({args.rounds} rounds, {time.monotonic() - started:.0f} s; results in {out})")


if __name__ == "__main__":
    main()
