"""End-to-end latency: enqueue one no-op, wait until it has succeeded; p50/p99 over many.

Celery: taskservice's ``service.wait`` and ``await_result`` (after ``aenqueue``, on an event
loop), both woken by the task's result channel like raw ``AsyncResult.get()``, and a 1 ms
``get_status`` poll (how fast the status really turns), against raw ``AsyncResult.get()``.
In-process: taskservice's status seen as ``succeeded`` (polled on every loop turn) and the
moment the task body runs (an ``asyncio.Event`` it sets), against a raw ``asyncio.create_task``
that sets an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import raw_celery
from bench.config import Config
from bench.processes import RedisServer, Worker, base_env, celery_workers
from bench.stats import Row, median_of, percentile

WARMUP = 5


def summary(samples_s: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples_s, 50) * 1000, "p99_ms": percentile(samples_s, 99) * 1000}


def rows_for(scenario: str, ts: dict[str, float], raw: dict[str, float], raw_label: str, note: str = "") -> list[Row]:
    return [
        Row(scenario, "latency p50", "ms", ts["p50_ms"], raw["p50_ms"], raw_label, False, note),
        Row(scenario, "latency p99", "ms", ts["p99_ms"], raw["p99_ms"], raw_label, False),
    ]


def time_round_trips(round_trip: Callable[[int], Any], n: int) -> list[float]:
    for i in range(WARMUP):
        round_trip(i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        round_trip(i)
        samples.append(time.perf_counter() - started)
    return samples


def run_celery(config: Config, redis: RedisServer) -> list[Row]:
    from bench.tasks import noop
    from taskservice import TaskSettings, create_task_service

    redis.reset()
    raw_celery.configure(redis.url)
    ts_env = base_env(TASK_BACKEND="celery", REDIS_URL=redis.url, TASK_MODULES="bench.tasks")
    service = create_task_service(TaskSettings(backend="celery", redis_url=redis.url, modules="bench.tasks"))

    def wait_default(i: int) -> None:
        service.wait(service.enqueue(noop, i), timeout_s=30)

    def poll_1ms(i: int) -> None:
        service.wait(service.enqueue(noop, i), timeout_s=30, poll_interval_s=0.001)

    def raw_get(i: int) -> None:
        raw_celery.noop.apply_async((i,)).get(timeout=30)

    async def awaited(n: int) -> list[float]:
        for i in range(WARMUP):
            await service.await_result(await service.aenqueue(noop, i), timeout_s=30)
        samples = []
        for i in range(n):
            started = time.perf_counter()
            await service.await_result(await service.aenqueue(noop, i), timeout_s=30)
            samples.append(time.perf_counter() - started)
        return samples

    sides = {"wait": wait_default, "poll 1 ms": poll_1ms, "raw": raw_get}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in [*sides, "await_result"]}
    # both workers stay up, idle between round trips; they listen on different queues
    with contextlib.ExitStack() as stack:
        stack.callback(service.close)
        raw_env = base_env(REDIS_URL=redis.url)
        stack.enter_context(
            celery_workers(
                Worker("backends.celery_app", ts_env, config.work_dir / "latency-ts-worker.log"),
                Worker("bench.raw_celery", raw_env, config.work_dir / "latency-raw-worker.log"),
            )
        )
        for _ in range(config.repetitions):
            for name, round_trip in sides.items():
                runs[name].append(summary(time_round_trips(round_trip, config.latency_samples)))
            runs["await_result"].append(summary(asyncio.run(awaited(config.latency_samples))))
    raw = median_of(runs["raw"])
    return (
        rows_for("enqueue→succeeded, Celery, service.wait()", median_of(runs["wait"]), raw, "AsyncResult.get()")
        + rows_for(
            "aenqueue→succeeded, Celery, await_result()", median_of(runs["await_result"]), raw, "AsyncResult.get()"
        )
        + rows_for(
            "enqueue→succeeded, Celery, get_status every 1 ms", median_of(runs["poll 1 ms"]), raw, "AsyncResult.get()"
        )
    )


async def _inprocess(config: Config, store_url: str) -> dict[str, list[dict[str, float]]]:
    from bench.tasks import EVENTS, async_noop, async_signal
    from taskservice import TaskSettings, create_task_service

    service = create_task_service(TaskSettings(backend="fastapi", store_url=store_url, modules="bench.tasks"))
    await service.start()

    async def status_succeeded() -> None:
        task_id = service.enqueue(async_noop, 1)
        while not service.get_status(task_id).status.is_final:
            await asyncio.sleep(0)

    async def body_ran() -> None:
        token = uuid.uuid4().hex
        event = EVENTS[token] = asyncio.Event()
        service.enqueue(async_signal, token)
        await event.wait()

    async def raw_event() -> None:
        event = asyncio.Event()

        async def signal() -> None:
            event.set()

        job = asyncio.create_task(signal())
        await event.wait()
        await job

    sides = {"succeeded": status_succeeded, "body": body_ran, "raw": raw_event}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(config.repetitions):
        for name, round_trip in sides.items():
            for _ in range(WARMUP):
                await round_trip()
            samples = []
            for _ in range(config.latency_samples):
                started = time.perf_counter()
                await asyncio.wait_for(round_trip(), timeout=10)
                samples.append(time.perf_counter() - started)
            runs[name].append(summary(samples))
    await service.stop()
    return runs


def run_inprocess(config: Config) -> list[Row]:
    rows: list[Row] = []
    for store, store_url in (("memory", "memory://"), ("sqlite", f"sqlite:///{config.work_dir}/latency.db")):
        runs = asyncio.run(_inprocess(config, store_url))
        raw = median_of(runs["raw"])
        rows += rows_for(f"enqueue→succeeded, in-process ({store})", median_of(runs["succeeded"]), raw, "create_task")
        rows += rows_for(f"enqueue→body runs, in-process ({store})", median_of(runs["body"]), raw, "create_task")
    return rows


def run(config: Config, redis: RedisServer) -> list[Row]:
    return run_celery(config, redis) + run_inprocess(config)
