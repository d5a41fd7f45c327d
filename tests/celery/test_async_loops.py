"""The Celery async verbs and event loops: one client per loop, the loop never blocked, outages in time.

Every loop (one ``asyncio.run`` after another, loops in threads side by side) gets its own client,
closed when the loop ends, when the lifespan stops, or when the service is closed from another
thread. Behind a Redis 100 ms away, 50 concurrent ``aenqueue`` leave the loop free where the sync
verb visibly blocks it; with Redis gone or hung every async verb gives up within
``TASK_REDIS_TIMEOUT_S`` and the loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from backends.celery.service import CeleryTaskService
from taskservice import BackendUnavailable, TaskStatus
from taskservice.testing.delay_proxy import delay_proxy
from tests import tasks
from tests.celery.async_support import (
    Cluster,
    async_connections,
    cluster_in,
    no_async_connections_left,
    run,
    settings_at,
    with_loop_lag,
)
from tests.celery_harness import celery_settings
from tests.processes import redis_server

pytestmark = pytest.mark.slow
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_in(tmp_path_factory.mktemp("async-loops")) as started:
        yield started


# --- event loops ----------------------------------------------------------------------------------


def test_one_client_per_loop_closed_when_the_loop_ends(cluster: Cluster) -> None:
    """Loops one after another and side by side in threads: each gets its own client, none leaks."""
    service = cluster.service
    client = cluster.redis.client()
    try:
        opened: list[int] = []

        async def one_loop() -> int:
            result = await service.await_result(await service.aenqueue(tasks.add, 2, 2), timeout_s=20)
            opened.append(async_connections(client))
            return int(result.result)

        for _ in range(3):
            assert run(one_loop()) == 4
            assert no_async_connections_left(client)
        assert min(opened) >= 2  # the loop's commands and its subscription

        results: list[int] = []

        def in_a_thread() -> None:
            async def scenario() -> int:
                task_ids = await asyncio.gather(*(service.aenqueue(tasks.add, i, 1) for i in range(5)))
                finished = await asyncio.gather(*(service.await_result(t, timeout_s=20) for t in task_ids))
                return sum(r.result for r in finished)

            results.append(asyncio.run(scenario()))

        threads = [threading.Thread(target=in_a_thread) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert results == [15] * 4
        assert no_async_connections_left(client)
    finally:
        client.close()


def test_the_lifespan_stop_closes_the_loops_client(cluster: Cluster) -> None:
    service = cluster.service
    client = cluster.redis.client()
    try:

        async def scenario() -> tuple[int, bool]:
            await service.aget_status(service.enqueue(tasks.add, 1, 2))
            opened = async_connections(client)
            await service.stop()
            closed = no_async_connections_left(client)
            assert (await service.aget_status(service.enqueue(tasks.add, 1, 2))).name == tasks.add.name  # works again
            return opened, closed

        opened, closed = run(scenario())
        assert opened >= 1 and closed
    finally:
        client.close()


def test_close_from_another_thread_closes_a_running_loops_client(cluster: Cluster) -> None:
    service = CeleryTaskService(cluster.service.settings)
    client = cluster.redis.client()
    try:

        async def scenario() -> bool:
            await service.aget_status(service.enqueue(tasks.add, 1, 2))
            closer = threading.Thread(target=service.close)
            closer.start()
            closer.join()
            await asyncio.sleep(0.2)  # the close runs on this loop, soon
            return no_async_connections_left(client)

        assert run(scenario())
    finally:
        service.close()
        client.close()


# --- the loop stays free ---------------------------------------------------------------------------


def test_aenqueue_never_blocks_the_loop_on_a_slow_redis(tmp_path: Path) -> None:
    """Redis 100 ms away: 50 concurrent ``aenqueue`` leave the loop free; sync ``enqueue`` blocks it.

    50 calls started at once still cost the loop their CPU (encoding, parsing: a few ms in all);
    what must not show is the round trip, so the delay is far above that.
    """
    delay_s = 0.1
    with redis_server(tmp_path / "redis") as server, delay_proxy(server.port, delay_s, tmp_path / "proxy.log") as port:
        service = CeleryTaskService(settings_at(f"redis://127.0.0.1:{port}/0"))
        try:

            async def concurrent() -> list[str]:
                return list(await asyncio.gather(*(service.aenqueue(tasks.add, i, 1) for i in range(50))))

            async def blocking() -> None:
                for i in range(3):
                    service.enqueue(tasks.add, i, 1)

            async def warm_then(work: Callable[[], Awaitable[T]]) -> tuple[T, float]:
                await concurrent()  # connections are opened outside the measurement
                service.enqueue(tasks.add, 0, 0)
                return await with_loop_lag(work())

            ids, async_lag_s = asyncio.run(warm_then(concurrent))
            _, sync_lag_s = asyncio.run(warm_then(blocking))
        finally:
            service.close()
        assert len(set(ids)) == 50
        assert sync_lag_s >= delay_s, "the measurement cannot see a blocked loop"
        assert async_lag_s < delay_s / 2, f"the loop was blocked for {async_lag_s * 1000:.1f} ms"
        client = server.client()
        assert client.llen("celery") == 2 * (50 + 1) + 50 + 3
        client.close()


# --- Redis gone or hung ---------------------------------------------------------------------------


def test_async_verbs_give_up_in_time_and_recover(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        service = CeleryTaskService(celery_settings(server, redis_timeout_s=1.0))
        try:

            async def calls(known: str) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
                return [
                    ("aenqueue", lambda: service.aenqueue(tasks.add, 1, 2)),
                    ("aschedule", lambda: service.aschedule(tasks.add, timedelta(minutes=5), 1, 2)),
                    ("aget_status", lambda: service.aget_status(known)),
                    ("acancel", lambda: service.acancel(known)),
                    ("alist_tasks", lambda: service.alist_tasks()),
                    ("astats", lambda: service.astats()),
                    ("await_result", lambda: service.await_result(known, timeout_s=10)),
                ]

            async def every_call_fails_fast(known: str, match: str) -> None:
                for name, call in await calls(known):
                    started = time.monotonic()
                    with pytest.raises(BackendUnavailable, match=match):
                        await call()
                    elapsed_s = time.monotonic() - started
                    assert elapsed_s < 2.0, f"{name} took {elapsed_s:.1f} s to give up"

            async def scenario() -> None:
                known = await service.aenqueue(tasks.add, 1, 2)
                server.stop()
                await every_call_fails_fast(known, "check REDIS_URL and that Redis is running")
                server.restart()  # an empty Redis: the same service works at once
                known = await service.aenqueue(tasks.add, 1, 2)
                os.kill(server.process.pid, signal.SIGSTOP)  # hung: connections open, nothing answers
                try:
                    await every_call_fails_fast(known, "cannot reach Redis")
                finally:
                    os.kill(server.process.pid, signal.SIGCONT)
                fresh = await service.aenqueue(tasks.add, 1, 2)
                assert (await service.aget_status(fresh)).status == TaskStatus.PENDING

            run(scenario())
        finally:
            service.close()


def test_a_hung_redis_does_not_freeze_the_loop(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        service = CeleryTaskService(celery_settings(server, redis_timeout_s=1.0))
        try:

            async def scenario() -> float:
                await service.aenqueue(tasks.add, 1, 2)
                os.kill(server.process.pid, signal.SIGSTOP)
                try:

                    async def attempt() -> None:
                        with pytest.raises(BackendUnavailable):
                            await service.aenqueue(tasks.add, 1, 2)

                    _, lag_s = await with_loop_lag(attempt())
                    return lag_s
                finally:
                    os.kill(server.process.pid, signal.SIGCONT)

            assert run(scenario()) < 0.05
        finally:
            service.close()
