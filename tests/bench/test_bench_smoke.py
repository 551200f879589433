"""The benchmark harness on a tiny workload, so that bin/bench cannot rot unnoticed. (Speed is
not asserted here: machines are shared and noisy. Correctness of what it measures is.)"""

import json
import subprocess
import sys
from pathlib import Path

from tests.support import report

ROOT = Path(__file__).resolve().parents[2]


def test_bench_harness_runs_on_a_tiny_workload(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.harness", "--tiny", "--no-peers", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "tiny.json").read_text())
    create = data["create"]
    assert create["non_2xx"] == 0 and create["rows"] == create["requests"], create["statuses"]
    assert data["dispatch"]["lost"] == 0 and data["dispatch"]["duplicates"] == 0
    assert data["dispatch_50ms"]["lost"] == 0
    assert data["bare_loop"]["received"] == data["bare_loop"]["tasks"]
    assert data["pickup"]["received"] == data["pickup"]["tasks"]
    assert data["delays"]["received"] == data["delays"]["tasks"]
    assert data["delays"]["early"] == 0
    assert "| dispatch, callbacks/s |" in (tmp_path / "tiny.md").read_text()
    prune = data["prune"]  # bench/prune.py (retention)
    assert prune["prune"]["deleted"] == prune["rows"] and prune["counts_match"]
    assert prune["while_pruning"]["dispatch"]["lost"] == 0 and prune["scrape"]["p99_ms"] > 0
    report(
        f"bench smoke (tiny): dispatch {data['dispatch']['callbacks_per_s']:.0f}/s, "
        f"pickup p50 {data['pickup']['p50_ms']:.1f} ms, delays early {data['delays']['early']}"
    )
