"""The loop-lag benchmark's app: async endpoints that enqueue, and a monitor of the event loop's lag.

``POST /none`` enqueues nothing (what serving the request alone costs), ``POST /raw`` calls
``apply_async`` (kombu is synchronous: the loop waits for Redis), ``POST /sync`` calls
``service.enqueue`` (synchronous too), ``POST /async`` awaits ``service.aenqueue``. While the app
runs, a monitor sleeps ``TICK_S`` at a time and records how much later than asked it woke: that
lateness is the time the loop was busy or blocked, which is what every other request on the loop
waits too. ``GET /lag`` reports it since ``POST /lag/reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from bench import raw_celery
from bench.stats import percentile
from bench.tasks import noop
from taskservice import TaskServiceDep, TaskServiceMiddleware, get_task_service

TICK_S = 0.002
_lags_s: list[float] = []


async def _monitor() -> None:
    while True:
        started = time.perf_counter()
        await asyncio.sleep(TICK_S)
        _lags_s.append(time.perf_counter() - started - TICK_S)


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    service = get_task_service()
    await service.start()
    monitor = asyncio.create_task(_monitor())
    try:
        yield
    finally:
        monitor.cancel()
        await service.stop()


app = FastAPI(lifespan=lifespan)
app.add_middleware(TaskServiceMiddleware)


@app.post("/none")
async def no_enqueue() -> dict[str, str]:
    """The same request with nothing enqueued: the loop lag of serving HTTP alone."""
    return {"task_id": ""}


@app.post("/raw")
async def raw_apply_async() -> dict[str, str]:
    return {"task_id": raw_celery.noop.apply_async((1,)).id}


@app.post("/sync")
async def sync_enqueue(service: TaskServiceDep) -> dict[str, str]:
    return {"task_id": service.enqueue(noop, 1)}


@app.post("/async")
async def async_enqueue(service: TaskServiceDep) -> dict[str, str]:
    return {"task_id": await service.aenqueue(noop, 1)}


@app.post("/lag/reset")
async def reset_lag() -> dict[str, int]:
    _lags_s.clear()
    return {"samples": 0}


@app.get("/lag")
async def lag() -> dict[str, float]:
    samples = list(_lags_s)
    return {
        "samples": len(samples),
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "max_ms": max(samples, default=0.0) * 1000,
    }
