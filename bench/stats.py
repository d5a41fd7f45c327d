"""Percentiles, medians of repetitions and ratios: the arithmetic every scenario shares."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median_of(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each metric over repetitions (metrics missing from a run are skipped)."""
    keys = {key for run in runs for key in run}
    return {key: statistics.median([run[key] for run in runs if key in run]) for key in sorted(keys)}


def latency_summary(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p99 in milliseconds and calls per second (from the sum of the samples)."""
    total_s = sum(samples_s)
    return {
        "p50_ms": percentile(samples_s, 50) * 1000,
        "p99_ms": percentile(samples_s, 99) * 1000,
        "per_s": len(samples_s) / total_s if total_s > 0 else math.nan,
    }


@dataclass
class Row:
    """One line of a result table: a measured figure of taskservice next to the raw tool's."""

    scenario: str
    metric: str
    unit: str
    taskservice: float
    raw: float
    raw_label: str
    higher_is_better: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.taskservice / self.raw if self.raw else math.nan


@dataclass
class Series:
    """Throughput against N for one side of one comparison: a line of the chart."""

    panel: str  # which chart panel, e.g. "in-process, async tasks"
    label: str  # e.g. "taskservice (memory)" or "raw asyncio.create_task"
    raw: bool
    points: dict[int, float] = field(default_factory=dict)  # N -> tasks/s
