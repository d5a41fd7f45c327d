"""Run every benchmark in one go and publish the results.

``python -m bench.run``          the full run: writes bench/RESULTS.md, bench/chart.png, bench/results.json
``python -m bench.run --smoke``  seconds-long sizes, written to a temporary directory (or ``--out``)

One private redis-server serves every Celery measurement; workers and uvicorn servers are
real processes started and stopped here. Each scenario alternates taskservice and the raw
tool and reports the median of its repetitions.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import async_io, drain, enqueue, http_load, inprocess, latency, loop_lag
from bench.config import Config
from bench.processes import RedisServer, redis_server
from bench.report import BENCH_DIR, Target, machine, source, versions, write
from bench.stats import Row, Series

SCENARIOS = ("enqueue", "latency", "drain", "async_io", "http", "loop-lag", "inprocess")


def find(rows: Sequence[Row], scenario: str, metric: str) -> Row | None:
    return next((row for row in rows if row.scenario == scenario and row.metric == metric), None)


def ratio_target(rows: Sequence[Row], goal: str, scenario: str, metric: str, bound: float, at_least: bool) -> Target:
    row = find(rows, scenario, metric)
    if row is None or math.isnan(row.ratio):
        return Target(goal, "not measured", None)
    met = row.ratio >= bound if at_least else row.ratio <= bound
    return Target(goal, f"{row.ratio:.2f}x ({row.taskservice:,.1f} vs {row.raw:,.1f} {row.unit})", met)


def targets(config: Config, rows: Sequence[Row]) -> list[Target]:
    drain_scenario = f"drain N={config.drain_tasks:,}, prefork -c2"
    found = [
        ratio_target(rows, "Celery enqueue p50 ≤ 1.0x raw apply_async", "enqueue, Celery", "per call p50", 1.0, False),
        ratio_target(rows, "Celery drain ≥ 0.95x raw Celery", drain_scenario, "throughput", 0.95, True),
        ratio_target(
            rows,
            "async I/O on one Celery worker host ≤ 1.25x the in-process time",
            f"async I/O, N={config.async_io_tasks:,} x {config.async_io_seconds:g} s, "
            f"TASK_ASYNC_CONCURRENCY={config.async_io_concurrency}",
            "time to drain",
            1.25,
            False,
        ),
    ]
    for kind in ("sync", "async"):
        found.append(
            ratio_target(
                rows,
                f"HTTP celery ({kind} task) ≥ 0.9x raw apply_async endpoint",
                f"HTTP celery, {kind} task",
                "throughput",
                0.9,
                True,
            )
        )
    # an in-process request counts as served once its task has finished: the sustained rate
    found.append(
        ratio_target(
            rows,
            "HTTP in-process async ≥ 0.9x raw BackgroundTasks (sustained req/s)",
            "HTTP in-process, async task",
            "sustained throughput",
            0.9,
            True,
        )
    )
    sync = ratio_target(
        rows,
        "HTTP in-process sync ≥ 2x raw BackgroundTasks (sustained req/s)",
        "HTTP in-process, sync task",
        "sustained throughput",
        2.0,
        True,
    )
    p99 = find(rows, "HTTP in-process, sync task", "latency p99")
    if p99 is not None:
        found += [sync, Target("… with p99 ≤ 50 ms", f"{p99.taskservice:.1f} ms", p99.taskservice <= 50)]
    else:
        found.append(sync)
    for connections in (config.http_connections, config.loop_lag_light_connections):
        at_load = loop_lag.scenario(dataclasses.replace(config, http_connections=connections))
        lag = find(rows, f"{at_load}, aenqueue", "event-loop lag p99")
        goal = f"aenqueue: event-loop lag p99 < 5 ms ({at_load})"
        found.append(
            Target(goal, "not measured", None)
            if lag is None
            else Target(goal, f"{lag.taskservice:.1f} ms (apply_async {lag.raw:.1f} ms)", lag.taskservice < 5.0)
        )
    largest = max(config.inprocess_async_tasks)
    for store, floor in (("memory", 30_000), ("sqlite", 10_000)):
        row = find(rows, f"in-process async, N={largest:,} ({store})", "throughput")
        goal = f"in-process ≥ {floor:,} async tasks/s ({store}, N={largest:,})"
        found.append(
            Target(goal, "not measured", None)
            if row is None
            else Target(goal, f"{row.taskservice:,.0f} tasks/s", row.taskservice >= floor)
        )
        smallest = min(config.inprocess_async_tasks)
        low = find(rows, f"in-process async, N={smallest:,} ({store})", "peak RSS")
        high = find(rows, f"in-process async, N={largest:,} ({store})", "peak RSS")
        goal = f"peak RSS flat in N ({store}): N={largest:,} within 1.25x of N={smallest:,}"
        if low is None or high is None or largest == smallest:
            found.append(Target(goal, "not measured", None))
        else:
            measured = f"{low.taskservice:.0f} MB → {high.taskservice:.0f} MB"
            found.append(Target(goal, measured, high.taskservice <= 1.25 * low.taskservice))
    return found


def run_scenarios(config: Config, redis: RedisServer, only: Sequence[str]) -> tuple[list[Row], list[Series]]:
    rows: list[Row] = []
    series: list[Series] = []

    def step(name: str, body: Callable[[], None]) -> None:
        if name not in only:
            return
        started = time.monotonic()
        print(f"bench: {name} ...", flush=True)
        body()
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", flush=True)

    def with_series(result: tuple[list[Row], list[Series]]) -> None:
        rows.extend(result[0])
        series.extend(result[1])

    step("enqueue", lambda: rows.extend(enqueue.run(config, redis)))
    step("latency", lambda: rows.extend(latency.run(config, redis)))
    step("drain", lambda: with_series(drain.run(config, redis)))
    step("async_io", lambda: rows.extend(async_io.run(config, redis)))
    step("http", lambda: rows.extend(http_load.run(config, redis)))
    step("loop-lag", lambda: rows.extend(loop_lag.run(config, redis)))
    step("inprocess", lambda: with_series(inprocess.run(config)))
    return rows, series


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; never overwrites bench/RESULTS.md")
    parser.add_argument("--out", type=Path, help="where to write the results (default: bench/, or a temp dir)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="run these scenarios")
    options = parser.parse_args(argv)
    # every setting a measurement uses is set explicitly; none leaks in from the caller's shell
    for name in [name for name in os.environ if name.startswith(("TASK_", "CELERY_"))]:
        del os.environ[name]
    work_dir = Path(tempfile.mkdtemp(prefix="taskservice-bench-"))
    if options.out is not None:
        out_dir = options.out
    elif options.smoke:
        out_dir = work_dir / "out"
    else:
        out_dir = BENCH_DIR
    config = (Config.smoke_run if options.smoke else Config.full)(out_dir, work_dir)
    command = shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    context = {"machine": machine(), "source": {"code": source()}}
    started = time.monotonic()
    with redis_server(work_dir / "redis") as redis:
        client = redis.client()
        redis_version = str(client.info("server")["redis_version"])
        client.close()
        rows, series = run_scenarios(config, redis, options.only)
    # other work on the machine shows here: the bench alone keeps about 2 processes busy
    context["machine"]["load average after the run"] = ", ".join(f"{load:.2f}" for load in os.getloadavg())
    results = write(
        out_dir,
        rows,
        series,
        targets(config, rows),
        {**context, "versions": versions(redis_version)},
        command,
        time.monotonic() - started,
        config.smoke,
    )
    print(f"bench: wrote {results} (logs in {work_dir})")
    return results


if __name__ == "__main__":
    main()
