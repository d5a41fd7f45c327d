"""The async verbs of the Celery backend, on a real Redis and a real worker.

They write exactly what the sync verbs write, answer with the same results and errors, keep one
client per event loop (closed with the loop), never block the loop (proved against a Redis behind
a 20 ms delay, where the sync verb visibly does), and give up within ``TASK_REDIS_TIMEOUT_S``
when Redis is gone or hung. ``wait``/``await_result`` are woken by the result channel.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from backends.celery.connection import ASYNC_CLIENT_NAME
from backends.celery.service import CeleryTaskService
from backends.celery.settings import CelerySettings
from taskservice import BackendUnavailable, TaskConflict, TaskNotFound, TaskStatus
from taskservice.errors import TaskStillActive
from taskservice.service import TaskCall, TaskService
from taskservice.testing.delay_proxy import delay_proxy
from tests import tasks
from tests.celery_harness import celery_env, celery_settings
from tests.processes import RedisServer, celery_worker, redis_server

pytestmark = pytest.mark.slow
T = TypeVar("T")


@dataclass
class Cluster:
    redis: RedisServer
    service: CeleryTaskService


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("async-api")
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


# --- the same records, results and errors as the sync verbs ------------------------------------


def test_aenqueue_writes_the_record_and_message_enqueue_writes(cluster: Cluster) -> None:
    """One call, written once through each path into two empty databases: byte for byte the same."""
    service = cluster.service
    sync_side = CeleryTaskService(settings_at(cluster.redis.url[:-1] + "5"))
    async_side = CeleryTaskService(settings_at(cluster.redis.url[:-1] + "6"))
    try:
        for run_at in (None, datetime.now(UTC) + timedelta(hours=1)):
            prepared = service._prepare(tasks.add.options(unique_key="k", timeout=9), run_at, (1,), {"b": 2})
            call = TaskCall(**{**prepared.__dict__, "headers": {"traceparent": "00-ab-cd-01"}})
            sync_side._submit(call)
            run(async_side._asubmit(call))
            dumps = []
            for db in (5, 6):
                client = redis.Redis(port=cluster.redis.port, db=db)
                keys = sorted(client.keys("*"))
                dumps.append({key: _value(client, key) for key in keys})
                client.flushdb()
                client.close()
            assert dumps[0] == dumps[1]
            assert any(b"task:" + call.id.encode() in key for key in dumps[0])
    finally:
        sync_side.close()
        async_side.close()


def _value(client: redis.Redis, key: bytes) -> Any:
    kind = client.type(key)
    if kind == b"hash":
        record = client.hgetall(key)
        if b"message" in record:  # a scheduled task's message waits in its record
            record[b"message"] = _without_delivery_tag(record[b"message"])
        return record
    if kind == b"zset":
        return client.zrange(key, 0, -1)  # scores are times of the call itself: equal, but not compared
    if kind == b"list":
        return [_without_delivery_tag(item) for item in client.lrange(key, 0, -1)]
    return client.get(key)


def _without_delivery_tag(message: bytes) -> bytes:
    """The message minus the one field that is random per message."""
    envelope = json.loads(message)
    envelope["properties"].pop("delivery_tag")
    return json.dumps(envelope).encode()


def test_each_async_verb_answers_as_its_sync_form(cluster: Cluster) -> None:
    service = cluster.service

    async def scenario() -> None:
        task_id = await service.aenqueue(tasks.add, 20, 22)
        result = await service.await_result(task_id, timeout_s=20)
        assert (result.status, result.result) == (TaskStatus.SUCCEEDED, 42)
        assert (await service.aget_status(task_id)) == service.get_status(task_id)

        listed = await service.alist_tasks(limit=5)
        assert [r.id for r in listed] == [r.id for r in service.list_tasks(limit=5)]
        page = await service.alist_tasks(limit=1, cursor=listed[0].cursor)
        assert [r.id for r in page] == [r.id for r in service.list_tasks(limit=1, cursor=listed[0].cursor)]
        assert (await service.astats()) == service.stats() == TaskService.stats(service)  # the generic scan

        retried = await service.aretry(task_id)
        assert (await service.await_result(retried, timeout_s=20)).retry_of == task_id
        assert (await service.aget_status(task_id)).retried_as == [retried]

        later = await service.aschedule(tasks.add, timedelta(hours=1), 1, 2)
        assert (await service.aget_status(later)).status == TaskStatus.SCHEDULED
        with pytest.raises(TaskStillActive):
            await service.aretry(later)
        assert await service.acancel(later) is True
        assert (await service.aget_status(later)).status == TaskStatus.CANCELLED
        assert await service.acancel(later) is False
        await service.adrain(timeout_s=20)

    run(scenario())


def test_the_async_verbs_raise_what_the_sync_verbs_raise(cluster: Cluster) -> None:
    service = cluster.service
    unknown = "00000000-0000-4000-8000-0000000000aa"

    async def scenario() -> None:
        for verb in (service.aget_status, service.acancel, service.aretry):
            with pytest.raises(TaskNotFound):
                await verb(unknown)
        with pytest.raises(TaskNotFound):
            await service.await_result(unknown, timeout_s=1)
        naive = datetime.now()  # naive on purpose
        refused: list[tuple[Callable[[], Any], Callable[[], Awaitable[Any]]]] = [
            (lambda: service.enqueue(tasks.not_a_task, 1), lambda: service.aenqueue(tasks.not_a_task, 1)),
            (lambda: service.enqueue(tasks.mutate, {}, [1.5j]), lambda: service.aenqueue(tasks.mutate, {}, [1.5j])),
            (lambda: service.schedule(tasks.add, naive, 1, 2), lambda: service.aschedule(tasks.add, naive, 1, 2)),
        ]
        for sync_call, async_call in refused:
            with pytest.raises((TypeError, ValueError)) as sync_error:
                sync_call()
            with pytest.raises((TypeError, ValueError)) as async_error:
                await async_call()
            assert (type(async_error.value), str(async_error.value)) == (type(sync_error.value), str(sync_error.value))
        key = f"async-{time.monotonic_ns()}"
        held = await service.aschedule(tasks.add.options(unique_key=key), timedelta(hours=1), 1, 2)
        with pytest.raises(TaskConflict) as conflict:
            await service.aenqueue(tasks.add.options(unique_key=key), 1, 2)
        assert conflict.value.active_task_id == held
        with pytest.raises(TaskConflict):
            service.enqueue(tasks.add.options(unique_key=key), 1, 2)
        await service.acancel(held)
        blocked = await service.aenqueue(tasks.sleep_for, 3)
        with pytest.raises(TimeoutError, match=f"task {blocked} is still"):
            await service.await_result(blocked, timeout_s=0.3)
        with pytest.raises(TimeoutError, match="still outstanding"):
            await service.adrain(timeout_s=0.3)
        assert (await service.await_result(blocked, timeout_s=20)).status == TaskStatus.SUCCEEDED

    run(scenario())


def test_concurrent_enqueues_share_a_round_trip_and_survive_a_script_flush(cluster: Cluster) -> None:
    """50 ``aenqueue`` started together go out as one pipeline on one connection; a Redis that forgot the
    script (a restart) gets it again, and every call still gets its own answer."""
    service = cluster.service
    client = cluster.redis.client()
    key = f"batch-{time.monotonic_ns()}"
    try:

        async def scenario() -> tuple[list[Any], int]:
            client.script_flush()
            calls = [service.aenqueue(tasks.add, i, 0) for i in range(50)]
            calls += [service.aenqueue(tasks.add.options(unique_key=key), 0, 0) for _ in range(2)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            return outcomes, _connections(client)

        outcomes, connections = run(scenario())
    finally:
        client.close()
    assert connections == 1
    ids, (first, second) = outcomes[:50], outcomes[50:]
    assert all(isinstance(task_id, str) for task_id in ids) and len(set(ids)) == 50
    assert isinstance(first, str) and isinstance(second, TaskConflict) and second.active_task_id == first
    results = [service.wait(task_id, timeout_s=30).result for task_id in ids]
    assert results == list(range(50))


# --- waiting on the result channel ----------------------------------------------------------------


def _hmget_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


@pytest.mark.parametrize("form", ["wait", "await_result"])
def test_a_wait_is_woken_by_the_result_channel_not_by_polling(cluster: Cluster, form: str) -> None:
    """A 1.5 s task: polling every 20 ms would read the record about 75 times; the channel, a handful."""
    service = cluster.service
    client = cluster.redis.client()
    try:
        task_id = service.enqueue(tasks.sleep_for, 1.5)
        before = _hmget_calls(client)
        if form == "wait":
            result = service.wait(task_id, timeout_s=20)
        else:
            result = run(service.await_result(task_id, timeout_s=20))
        returned_at = datetime.now(UTC)
        reads = _hmget_calls(client) - before
    finally:
        client.close()
    assert result.status == TaskStatus.SUCCEEDED and result.finished_at is not None
    assert reads <= 12, f"{reads} record reads: the wait polled"
    # without the channel, the next look would come up to 0.8 s late (quiet rechecks double up to 1 s)
    assert (returned_at - result.finished_at).total_seconds() < 0.15


def test_a_wait_for_a_finished_task_returns_at_once_and_a_cancel_wakes_a_wait(cluster: Cluster) -> None:
    service = cluster.service
    done = service.wait(service.enqueue(tasks.add, 1, 1), timeout_s=20)
    started = time.monotonic()
    assert service.wait(done.id, timeout_s=20) == done
    assert run(service.await_result(done.id, timeout_s=20)) == done
    assert time.monotonic() - started < 0.5

    later = service.schedule(tasks.add, timedelta(hours=1), 1, 2)
    threading.Timer(0.3, service.cancel, args=(later,)).start()
    started = time.monotonic()
    assert run(service.await_result(later, timeout_s=10)).status == TaskStatus.CANCELLED
    assert time.monotonic() - started < 0.6


def test_many_concurrent_waits_in_one_loop(cluster: Cluster) -> None:
    service = cluster.service

    async def scenario() -> list[Any]:
        ids = [await service.aenqueue(tasks.add, i, i) for i in range(30)]
        results = await asyncio.gather(*(service.await_result(task_id, timeout_s=30) for task_id in ids))
        return [r.result for r in results]

    assert run(scenario()) == [2 * i for i in range(30)]


# --- event loops ----------------------------------------------------------------------------------


def _connections(client: redis.Redis) -> int:
    """Connections of the async verbs (the worker's own come and go as its pool processes start)."""
    return sum(entry.get("name") == ASYNC_CLIENT_NAME for entry in client.client_list())


def _no_async_connections_left(client: redis.Redis) -> bool:
    deadline = time.monotonic() + 2
    while _connections(client) and time.monotonic() < deadline:
        time.sleep(0.05)  # a disconnect reaches the server a moment later
    return _connections(client) == 0


def test_one_client_per_loop_closed_when_the_loop_ends(cluster: Cluster) -> None:
    """Loops one after another and side by side in threads: each gets its own client, none leaks."""
    service = cluster.service
    client = cluster.redis.client()
    try:
        opened: list[int] = []

        async def one_loop() -> int:
            result = await service.await_result(await service.aenqueue(tasks.add, 2, 2), timeout_s=20)
            opened.append(_connections(client))
            return int(result.result)

        for _ in range(3):
            assert run(one_loop()) == 4
            assert _no_async_connections_left(client)
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
        assert _no_async_connections_left(client)
    finally:
        client.close()


def test_the_lifespan_stop_closes_the_loops_client(cluster: Cluster) -> None:
    service = cluster.service
    client = cluster.redis.client()
    try:

        async def scenario() -> tuple[int, bool]:
            await service.aget_status(service.enqueue(tasks.add, 1, 2))
            opened = _connections(client)
            await service.stop()
            closed = _no_async_connections_left(client)
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
            return _no_async_connections_left(client)

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
