"""Async I/O capacity: N async tasks each awaiting S seconds, in-process and drained by one Celery worker host.

Both sides run ``TASK_ASYNC_CONCURRENCY`` tasks at a time (the in-process runner's bound, and the
Celery worker's async pool, started by the one ``celery worker`` command next to its prefork pool).
As in the drain benchmark, the Celery tasks are queued first and then drained by a worker started
after; the time on both sides is from the first task's ``started_at`` to the last one's
``finished_at`` as the records say, so neither enqueueing nor the harness's polling counts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.config import Config
from bench.processes import RedisServer, Worker, base_env, celery_workers
from bench.stats import Row, median_of

POLL_S = 0.05


def _span_s(results: list[Any]) -> float:
    started = [result.started_at for result in results if result.started_at is not None]
    finished = [result.finished_at for result in results if result.finished_at is not None]
    if len(finished) != len(results) or len(started) != len(results):
        raise RuntimeError(f"{len(results) - len(finished)} tasks did not finish")
    return float((max(finished) - min(started)).total_seconds())


async def _inprocess(n: int, seconds: float, concurrency: int) -> float:
    from bench.tasks import async_io
    from taskservice import TaskSettings, create_task_service

    settings = TaskSettings(backend="fastapi", store_url="memory://", modules="bench.tasks")
    service = create_task_service(settings.model_copy(update={"async_concurrency": concurrency}))
    await service.start()
    try:
        ids = [service.enqueue(async_io, seconds) for _ in range(n)]
        return _span_s([await service.await_result(task_id, timeout_s=60 + n * seconds) for task_id in ids])
    finally:
        await service.stop()


def inprocess_s(n: int, seconds: float, concurrency: int) -> float:
    return asyncio.run(_inprocess(n, seconds, concurrency))


def celery_s(config: Config, redis: RedisServer, n: int, seconds: float, concurrency: int, label: str) -> float:
    from bench.tasks import async_io
    from taskservice import TaskSettings, TaskStatus, create_task_service

    redis.reset()
    env = base_env(
        TASK_BACKEND="celery", REDIS_URL=redis.url, TASK_MODULES="bench.tasks", TASK_ASYNC_CONCURRENCY=str(concurrency)
    )
    log = config.work_dir / f"async-io-{label}.log"
    service = create_task_service(TaskSettings(backend="celery", redis_url=redis.url, modules="bench.tasks"))
    try:
        ids = [service.enqueue(async_io, seconds) for _ in range(n)]
        with celery_workers(Worker("backends.celery_app", env, log, concurrency=2)):
            deadline = time.monotonic() + 60 + n * seconds
            while service.stats().counts[TaskStatus.SUCCEEDED] < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"async I/O on Celery: not all {n} tasks done")
                time.sleep(POLL_S)
        return _span_s([service.get_status(task_id) for task_id in ids])
    finally:
        service.close()


def run(config: Config, redis: RedisServer) -> list[Row]:
    """Both sides, alternating, ``config.repetitions`` times; the medians side by side."""
    n, seconds, concurrency = config.async_io_tasks, config.async_io_seconds, config.async_io_concurrency
    runs: dict[str, list[dict[str, float]]] = {"celery": [], "inprocess": []}
    for repetition in range(config.repetitions):
        runs["inprocess"].append({"s": inprocess_s(n, seconds, concurrency)})
        runs["celery"].append({"s": celery_s(config, redis, n, seconds, concurrency, str(repetition))})
    celery, inprocess = median_of(runs["celery"])["s"], median_of(runs["inprocess"])["s"]
    scenario = f"async I/O, N={n:,} x {seconds:g} s, TASK_ASYNC_CONCURRENCY={concurrency}"
    note = "one Celery worker host (prefork -c2 + its async pool) vs the in-process runner"
    return [Row(scenario, "time to drain", "s", celery, inprocess, "in-process", False, note)]
