"""The benchmark's smoke mode runs every scenario end to end and writes its results (not a timed test)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import REPO_ROOT, base_env, require_redis_server

pytestmark = pytest.mark.slow


def test_smoke_run_writes_every_scenario(tmp_path: Path) -> None:
    require_redis_server()
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    results = (out / "RESULTS.md").read_text()
    assert "smoke run" in results
    for scenario in (
        "enqueue, Celery",
        "enqueue, in-process (sqlite), sync task",
        "enqueue→succeeded, Celery",
        "enqueue→succeeded, in-process (memory)",
        "drain N=50, prefork -c2",
        "drain N=50, prefork -c1",
        "HTTP celery, sync task",
        "HTTP in-process, async task",
        "async endpoint, Celery, Redis +20 ms, 8 connections, aenqueue",
        "aenqueue→succeeded, Celery, await_result()",
        "in-process async, N=200 (sqlite)",
        "in-process sync, N=100 (memory)",
    ):
        assert scenario in results, f"{scenario!r} is missing from the table"
    assert (out / "chart.png").read_bytes().startswith(b"\x89PNG")

    payload = json.loads((out / "results.json").read_text())
    for row in payload["rows"]:
        for side in ("taskservice", "raw"):
            # CPU is counted in clock ticks: a tiny smoke run may use less than one per task
            floor_ok = row[side] >= 0 if "CPU" in row["metric"] else row[side] > 0
            assert math.isfinite(row[side]) and floor_ok, row
    # the smoke run never touches the published results
    published = REPO_ROOT / "bench" / "RESULTS.md"
    if published.exists():
        assert "smoke run" not in published.read_text()
