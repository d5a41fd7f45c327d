"""Write a run's results: the raw figures (results.json), the table (RESULTS.md), the chart (chart.png).

``python -m bench.report [DIR]`` renders RESULTS.md and chart.png again from DIR/results.json
(default: bench/), e.g. after NOTES.md, the hand-written findings, changed.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.stats import Row, Series

BENCH_DIR = Path(__file__).resolve().parent
NOTES = BENCH_DIR / "NOTES.md"  # hand-written findings, kept across runs and included verbatim


@dataclass(frozen=True)
class Target:
    """A goal from the benchmark's issue and whether this run reached it."""

    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def machine() -> dict[str, str]:
    cpu = "unknown"
    memory = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(),
        "load average before the run": ", ".join(f"{load:.2f}" for load in os.getloadavg()),
    }


def source() -> str:
    """The commit measured, and whether the code under test had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "taskservice", "backends", "bench"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (" with uncommitted changes to the code under test" if changed else "")


def versions(redis_server_version: str) -> dict[str, str]:
    found = {"python": platform.python_version(), "redis server": redis_server_version}
    for package in ("celery", "kombu", "redis", "fastapi", "starlette", "uvicorn", "uvloop", "pydantic"):
        try:
            found[package if package != "redis" else "redis-py"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| scenario | metric | taskservice | raw | raw tool | ratio ts/raw | better |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for row in rows:
        better = "higher" if row.higher_is_better else "lower"
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| {row.scenario} | {row.metric} ({row.unit}){note} | {number(row.taskservice)} | {number(row.raw)} "
            f"| {row.raw_label} | {row.ratio:.2f}x | {better} |"
        )
    return lines


def chart(series: Sequence[Series], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(line.panel for line in series if line.points))
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for line in series:
            if line.panel != panel or not line.points:
                continue
            sizes = sorted(line.points)
            axis.plot(
                sizes,
                [line.points[n] for n in sizes],
                linestyle="--" if line.raw else "-",
                marker="o",
                label=line.label,
            )
        axis.set_xscale("log")
        values = [tps for line in series if line.panel == panel for tps in line.points.values() if tps > 0]
        if values and max(values) / min(values) > 10:
            axis.set_yscale("log")
        else:  # a narrow range on a log axis makes noise look like a trend
            axis.set_ylim(bottom=0, top=max(values, default=1) * 1.15)
        axis.set_title(panel)
        axis.set_xlabel("tasks (N)")
        axis.set_ylabel("tasks/s")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle("Throughput against N: taskservice (solid) and the raw tool (dashed)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(
    out_dir: Path,
    rows: Sequence[Row],
    series: Sequence[Series],
    targets: Sequence[Target],
    context: dict[str, dict[str, str]],
    command: str,
    duration_s: float,
    smoke: bool,
) -> Path:
    """Save the run as results.json in ``out_dir``, then render RESULTS.md and chart.png from it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "finished_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": command,
        "duration_s": duration_s,
        "smoke": smoke,
        "context": context,
        "targets": [dataclasses.asdict(target) for target in targets],
        "rows": [dataclasses.asdict(row) | {"ratio": row.ratio} for row in rows],
        "series": [dataclasses.asdict(line) for line in series],
    }
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return render(out_dir)


def render(out_dir: Path) -> Path:
    """RESULTS.md and chart.png from ``out_dir``/results.json, with NOTES.md as it is now."""
    payload = json.loads((out_dir / "results.json").read_text())
    rows = [Row(**{key: value for key, value in row.items() if key != "ratio"}) for row in payload["rows"]]
    series = [
        Series(line["panel"], line["label"], line["raw"], {int(n): tps for n, tps in line["points"].items()})
        for line in payload["series"]
    ]
    targets = [Target(**target) for target in payload["targets"]]
    context = payload["context"]
    chart(series, out_dir / "chart.png")
    met = sum(1 for target in targets if target.met)
    measured = sum(1 for target in targets if target.met is not None)
    lines = [
        "# Benchmarks: taskservice next to the raw tools it wraps",
        "",
        f"Run of {payload['finished_at']}, {payload['duration_s'] / 60:.1f} min"
        + (" — **smoke run: tiny sizes, not for publishing**" if payload["smoke"] else "")
        + f". Targets met: **{met} of {measured}**.",
        "",
        f"Command: `{payload['command']}`, on {context['source']['code']}.",
        "",
        "## Targets",
        "",
        "| goal | measured | |",
        "|---|---|---|",
    ]
    for target in targets:
        verdict = "n/a" if target.met is None else ("met" if target.met else "**missed**")
        lines.append(f"| {target.goal} | {target.measured} | {verdict} |")
    lines += ["", "## Results", "", "Each figure is the median over the run's repetitions.", "", *table(rows)]
    lines += ["", "![throughput against N](chart.png)", "", "## Machine and versions", ""]
    for section in ("machine", "versions"):
        lines.append(", ".join(f"{key}: {value}" for key, value in context[section].items()))
        lines.append("")
    if NOTES.exists():
        lines += [NOTES.read_text().rstrip(), ""]
    results = out_dir / "RESULTS.md"
    results.write_text("\n".join(lines) + "\n")
    return results


if __name__ == "__main__":  # python -m bench.report [DIR]: render again, e.g. after editing NOTES.md
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH_DIR))
