"""What the Celery async tests share: a real Redis with a real worker, one loop per test, loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from backends.celery.connection import ASYNC_CLIENT_NAME
from backends.celery.service import CeleryTaskService
from backends.celery.settings import CelerySettings
from tests.celery_harness import celery_env, celery_settings
from tests.processes import RedisServer, celery_worker, redis_server

T = TypeVar("T")


@dataclass
class Cluster:
    redis: RedisServer
    service: CeleryTaskService


@contextlib.contextmanager
def cluster_in(directory: Path) -> Iterator[Cluster]:
    """A private redis-server, a prefork worker (2 processes) and a service bound to them."""
    with redis_server(directory / "redis") as server, celery_worker(celery_env(server), directory / "worker.log", 2):
        service = CeleryTaskService(celery_settings(server))
        try:
            yield Cluster(server, service)
        finally:
            service.close()


def settings_at(redis_url: str) -> CelerySettings:
    return CelerySettings(backend="celery", redis_url=redis_url, modules="tests.tasks")  # type: ignore[call-arg]


def run(coroutine: Awaitable[T]) -> T:
    """Each test drives its own loop, as a script would: clients must never leak from one loop to the next."""

    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


async def with_loop_lag(work: Awaitable[T], tick_s: float = 0.001) -> tuple[T, float]:
    """``work``'s result and the longest the loop was late to wake a sleeper while it ran."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(tick_s)
            lags.append(time.perf_counter() - started - tick_s)

    ticking = asyncio.create_task(ticker())
    # a collection of this test process's large heap can pause the loop for tens of ms: not what is measured
    gc.collect()
    gc.disable()
    await asyncio.sleep(0)
    try:
        result = await work
    finally:
        gc.enable()
        done.set()
        await ticking
    return result, max(lags, default=0.0)


def async_connections(client: redis.Redis) -> int:
    """Connections of the async verbs (the worker's own come and go as its pool processes start)."""
    return sum(entry.get("name") == ASYNC_CLIENT_NAME for entry in client.client_list())


def no_async_connections_left(client: redis.Redis) -> bool:
    deadline = time.monotonic() + 2
    while async_connections(client) and time.monotonic() < deadline:
        time.sleep(0.05)  # a disconnect reaches the server a moment later
    return async_connections(client) == 0
