"""Enqueue cost: what one call costs the caller, taskservice next to the raw call it wraps.

Celery: ``CeleryTaskService.enqueue`` against ``apply_async`` on a plain Celery app, with
the Redis commands each call sends (``INFO commandstats`` deltas). In-process:
``FastAPITaskService.enqueue`` (called on a running event loop, as an endpoint would)
against ``asyncio.create_task`` and ``BackgroundTasks.add_task``. No worker runs during
the Celery measurement; the in-process tasks are left to finish between repetitions,
outside the timed part.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench import raw_celery
from bench.config import Config
from bench.processes import CommandCounter, RedisServer
from bench.stats import Row, latency_summary, median_of

WARMUP_CALLS = 50


def time_calls(call: Callable[[int], Any], n: int) -> list[float]:
    samples = []
    clock = time.perf_counter
    for i in range(n):
        started = clock()
        call(i)
        samples.append(clock() - started)
    return samples


def rows_for(scenario: str, ts: dict[str, float], raw: dict[str, float], raw_label: str) -> list[Row]:
    rows = [
        Row(scenario, "per call p50", "µs", ts["p50_ms"] * 1000, raw["p50_ms"] * 1000, raw_label, False),
        Row(scenario, "per call p99", "µs", ts["p99_ms"] * 1000, raw["p99_ms"] * 1000, raw_label, False),
        Row(scenario, "calls/s", "calls/s", ts["per_s"], raw["per_s"], raw_label, True),
    ]
    if "redis_cmds" in ts:
        rows.append(Row(scenario, "Redis commands", "per call", ts["redis_cmds"], raw["redis_cmds"], raw_label, False))
    return rows


def run_celery(config: Config, redis: RedisServer) -> list[Row]:
    from bench.tasks import noop
    from taskservice import TaskSettings, create_task_service

    redis.reset()
    raw_celery.configure(redis.url)
    service = create_task_service(TaskSettings(backend="celery", redis_url=redis.url, modules="bench.tasks"))
    sides: dict[str, Callable[[int], Any]] = {
        "taskservice": lambda i: service.enqueue(noop, i),
        "raw": lambda i: raw_celery.noop.apply_async((i,)),
    }
    client = redis.client()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    try:
        for call in sides.values():
            time_calls(call, WARMUP_CALLS)  # connections, first-call imports
        for _ in range(config.repetitions):
            for name, call in sides.items():
                counter = CommandCounter(client)
                counter.start()
                samples = time_calls(call, config.enqueue_calls)
                commands = counter.stop()
                runs[name].append({**latency_summary(samples), "redis_cmds": commands / config.enqueue_calls})
    finally:
        service.close()
        client.close()
    return rows_for("enqueue, Celery", median_of(runs["taskservice"]), median_of(runs["raw"]), "apply_async")


async def _inprocess(config: Config, store_url: str) -> dict[str, dict[str, float]]:
    from fastapi import BackgroundTasks

    from bench.tasks import async_noop, noop
    from taskservice import TaskSettings, create_task_service

    settings = TaskSettings(backend="fastapi", store_url=store_url, modules="bench.tasks")
    service = create_task_service(settings)
    await service.start()
    running: set[asyncio.Task[Any]] = set()

    async def raw_async_noop(i: int) -> None:
        return None

    def raw_sync_noop(i: int) -> None:
        return None

    def create_task(i: int) -> None:
        job = asyncio.create_task(raw_async_noop(i))
        running.add(job)
        job.add_done_callback(running.discard)

    background = BackgroundTasks()
    ids: list[str] = []
    sides: dict[str, Callable[[int], Any]] = {
        "taskservice async": lambda i: ids.append(service.enqueue(async_noop, i)),
        "taskservice sync": lambda i: ids.append(service.enqueue(noop, i)),
        "create_task": create_task,
        "add_task async": lambda i: background.add_task(raw_async_noop, i),
        "add_task sync": lambda i: background.add_task(raw_sync_noop, i),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for repetition in range(config.repetitions + 1):  # the first round warms up
        for name, call in sides.items():
            samples = time_calls(call, config.enqueue_calls if repetition else WARMUP_CALLS)
            if repetition:
                runs[name].append(latency_summary(samples))
            # let everything queued finish before the next side is timed
            await background()
            background.tasks.clear()
            while running:
                await asyncio.sleep(0.001)
            for task_id in ids:
                while not service.get_status(task_id).status.is_final:
                    await asyncio.sleep(0.001)
            ids.clear()
    await service.stop()
    return {name: median_of(side_runs) for name, side_runs in runs.items()}


def run_inprocess(config: Config) -> list[Row]:
    rows: list[Row] = []
    for store, store_url in (("memory", "memory://"), ("sqlite", f"sqlite:///{config.work_dir}/enqueue.db")):
        figures = asyncio.run(_inprocess(config, store_url))
        ts_async, ts_sync = figures["taskservice async"], figures["taskservice sync"]
        rows += rows_for(f"enqueue, in-process ({store}), async task", ts_async, figures["create_task"], "create_task")
        rows += rows_for(f"enqueue, in-process ({store}), async task", ts_async, figures["add_task async"], "add_task")
        rows += rows_for(f"enqueue, in-process ({store}), sync task", ts_sync, figures["add_task sync"], "add_task")
    return rows


def run(config: Config, redis: RedisServer) -> list[Row]:
    return run_celery(config, redis) + run_inprocess(config)
