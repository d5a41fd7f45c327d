"""In-process throughput: N no-op tasks enqueued and completed in one process, and its peak RSS.

Each measurement runs in a fresh interpreter (``python -m bench.inprocess ...``, one JSON
line out) so the peak RSS belongs to that N alone. taskservice's side enqueues through
``FastAPITaskService`` with records retained (the default ``TASK_RESULT_TTL_S``); the raw
side is ``asyncio.create_task`` for async functions and Starlette's ``run_in_threadpool``
(what ``BackgroundTasks`` uses) for sync ones. Both sides get the same arrival pattern and
the harness keeps no per-task state, so memory that grows with N is the backend's.

How taskservice's side enqueues (``--enqueue``): ``sync`` calls ``service.enqueue`` in a loop on
the event loop (what an ``async def`` endpoint does); ``async`` has a block's calls made by
concurrent callers, each awaiting ``service.aenqueue`` (concurrent requests of an async app), which
the SQLite store commits together. Either way each record is durable (SQLite) once its call
returns. The full run uses ``sync`` for ``memory://`` (nothing to wait for) and ``async`` for SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.processes import REPO_ROOT, base_env
from bench.stats import Row, Series, median_of

# Tasks are enqueued in blocks, the loop runs in between, and at most this many blocks are
# unfinished at a time: the runner never starves, and the backlog (whose memory is the
# caller's doing, on either side) stays the same for every N, so RSS that grows with N is retention.
BLOCK = 1000
BLOCKS_IN_FLIGHT = 2
POLL_S = 0.0005


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``); unlike ``ru_maxrss``, it does not inherit the
    high-water mark of the process that forked this one before ``exec``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


ENQUEUE_BY_STORE = {"memory": "sync", "sqlite": "async"}


async def run_taskservice(kind: str, store_url: str, n: int, enqueue: str = "sync") -> dict[str, float]:
    from bench.tasks import async_noop, noop
    from taskservice import TaskSettings, TaskStatus, create_task_service

    settings = TaskSettings(backend="fastapi", store_url=store_url, modules="bench.tasks")
    service = create_task_service(settings)
    await service.start()
    func = async_noop if kind == "async" else noop

    async def finished(task_id: str) -> None:
        # async callers read asynchronously too: a sync read would wait on the store's lock on the loop
        while not (
            await service.aget_status(task_id) if enqueue == "async" else service.get_status(task_id)
        ).status.is_final:
            await asyncio.sleep(POLL_S)

    rss_start_mb = peak_rss_mb()
    started_at = datetime.now(UTC)
    cpu_started_s = time.process_time()
    block_ends: collections.deque[str] = collections.deque()
    last_id = ""
    for block in range(0, n, BLOCK):
        if enqueue == "async":
            ids = await asyncio.gather(*(service.aenqueue(func, i) for i in range(block, min(n, block + BLOCK))))
            last_id = ids[-1]
        else:
            for i in range(block, min(n, block + BLOCK)):
                last_id = service.enqueue(func, i)
        block_ends.append(last_id)
        await asyncio.sleep(0)
        while len(block_ends) > BLOCKS_IN_FLIGHT:
            await finished(block_ends.popleft())
    await finished(last_id)
    await service.adrain(timeout_s=600)  # nothing older is still going; then read when the last one ended
    cpu_s = time.process_time() - cpu_started_s
    rss_peak_mb = peak_rss_mb()
    recent = service.list_tasks(limit=2 * BLOCK)
    failed = sum(1 for result in recent if result.status != TaskStatus.SUCCEEDED)
    elapsed_s = (max(result.finished_at or started_at for result in recent) - started_at).total_seconds()
    await service.stop()
    return figures(n, elapsed_s, cpu_s, rss_start_mb, rss_peak_mb, failed)


async def run_raw(kind: str, n: int) -> dict[str, float]:
    from starlette.concurrency import run_in_threadpool

    def sync_noop(i: int) -> None:
        return None

    async def async_noop(i: int) -> None:
        return None

    call: Callable[[int], Coroutine[Any, Any, Any]] = async_noop
    if kind == "sync":
        call = lambda i: run_in_threadpool(sync_noop, i)  # noqa: E731
    running: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to tasks
    block_ends: collections.deque[asyncio.Task[Any]] = collections.deque()
    rss_start_mb = peak_rss_mb()
    started = time.perf_counter()
    cpu_started_s = time.process_time()
    for block in range(0, n, BLOCK):
        for i in range(block, min(n, block + BLOCK)):
            job = asyncio.create_task(call(i))
            running.add(job)
            job.add_done_callback(running.discard)
        block_ends.append(job)
        await asyncio.sleep(0)
        while len(block_ends) > BLOCKS_IN_FLIGHT:
            await block_ends.popleft()
    while running:
        await asyncio.sleep(POLL_S)
    elapsed_s = time.perf_counter() - started
    return figures(n, elapsed_s, time.process_time() - cpu_started_s, rss_start_mb, peak_rss_mb(), 0)


def figures(
    n: int, elapsed_s: float, cpu_s: float, rss_start_mb: float, rss_peak_mb: float, failed: int
) -> dict[str, float]:
    return {
        "n": n,
        "elapsed_s": elapsed_s,
        "tasks_per_s": n / elapsed_s,
        "cpu_us_per_task": cpu_s * 1e6 / n,  # all threads; what other load on the machine disturbs least
        "rss_start_mb": rss_start_mb,
        "rss_peak_mb": rss_peak_mb,
        "rss_growth_mb": rss_peak_mb - rss_start_mb,
        "failed": failed,
    }


def measure(config: Config, side: str, kind: str, store: str, n: int, repetitions: int) -> dict[str, float]:
    """The median of ``repetitions`` runs, each in a fresh interpreter."""
    runs = []
    for repetition in range(repetitions):
        db = config.work_dir / f"inprocess-{side}-{kind}-{store}-{n}-{repetition}.db"
        db.unlink(missing_ok=True)
        args = [sys.executable, "-m", "bench.inprocess", side, kind, store, str(n), "--db", str(db)]
        args += ["--enqueue", ENQUEUE_BY_STORE.get(store, "sync")]
        done = subprocess.run(args, cwd=REPO_ROOT, env=base_env(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"in-process run {side} {kind} {store} {n} failed:\n{done.stderr[-3000:]}")
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        if result["failed"]:
            raise RuntimeError(f"in-process run {side} {kind} {store} {n}: {result['failed']} tasks did not succeed")
        runs.append(result)
        db.unlink(missing_ok=True)
    return median_of(runs)


def run(config: Config) -> tuple[list[Row], list[Series]]:
    """Every N of both kinds, both stores and the raw call; rows for the table, lines for the chart."""
    series_sizes = {"async": config.inprocess_async_tasks, "sync": config.inprocess_sync_tasks}
    jobs = [
        (side, kind, store, n)
        for kind, sizes in series_sizes.items()
        for n in sizes
        for side, store in (("raw", "none"), ("taskservice", "memory"), ("taskservice", "sqlite"))
    ]
    # measurements run one at a time; only the smoke run, whose figures mean nothing, overlaps them
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 if config.smoke else 1) as pool:
        futures = {
            job: pool.submit(measure, config, *job, config.repetitions_for(job[3], series_sizes[job[1]]))
            for job in jobs
        }
        results = {job: future.result() for job, future in futures.items()}
    rows: list[Row] = []
    series: list[Series] = []
    for kind, sizes in series_sizes.items():
        raw_label = "create_task" if kind == "async" else "run_in_threadpool"
        panel = f"in-process, {kind} tasks"
        raw_line = Series(panel, f"raw {raw_label}", raw=True)
        lines = {store: Series(panel, f"taskservice ({store})", raw=False) for store in ("memory", "sqlite")}
        for n in sizes:
            raw = results["raw", kind, "none", n]
            raw_line.points[n] = raw["tasks_per_s"]
            for store, line in lines.items():
                ts = results["taskservice", kind, store, n]
                line.points[n] = ts["tasks_per_s"]
                scenario = f"in-process {kind}, N={n:,} ({store})"
                single = config.repetitions_for(n, sizes) == 1 < config.repetitions
                note = "; ".join(
                    part for part in ("single run" if single else "", f"{ENQUEUE_BY_STORE[store]} enqueue") if part
                )
                rows += [
                    Row(
                        scenario, "throughput", "tasks/s", ts["tasks_per_s"], raw["tasks_per_s"], raw_label, True, note
                    ),
                    Row(scenario, "CPU", "µs/task", ts["cpu_us_per_task"], raw["cpu_us_per_task"], raw_label, False),
                    Row(scenario, "peak RSS", "MB", ts["rss_peak_mb"], raw["rss_peak_mb"], raw_label, False),
                ]
        series += [*lines.values(), raw_line]
    return rows, series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("side", choices=["taskservice", "raw"])
    parser.add_argument("kind", choices=["async", "sync"])
    parser.add_argument("store", choices=["memory", "sqlite", "none"])
    parser.add_argument("n", type=int)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--enqueue", choices=["sync", "async"], default="sync", help="enqueue or aenqueue")
    options = parser.parse_args()
    if options.side == "raw":
        result = asyncio.run(run_raw(options.kind, options.n))
    else:
        store_url = "memory://" if options.store == "memory" else f"sqlite:///{options.db}"
        result = asyncio.run(run_taskservice(options.kind, store_url, options.n, options.enqueue))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
