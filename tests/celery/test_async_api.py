"""The async verbs of the Celery backend, on a real Redis and a real worker: the same as the sync verbs.

They write exactly what the sync verbs write (byte for byte), answer with the same results and
errors, batch concurrent enqueues into one round trip, and ``wait``/``await_result`` are woken by
the task's result channel instead of polling. Event loops, a slow Redis and outages are in
``test_async_loops``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from backends.celery.service import CeleryTaskService
from taskservice import TaskConflict, TaskNotFound, TaskStatus
from taskservice.errors import TaskStillActive
from taskservice.service import TaskService
from tests import tasks
from tests.celery.async_support import Cluster, async_connections, cluster_in, run, settings_at

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_in(tmp_path_factory.mktemp("async-api")) as started:
        yield started


# --- the same records, results and errors as the sync verbs ------------------------------------


def test_aenqueue_writes_the_record_and_message_enqueue_writes(cluster: Cluster) -> None:
    """One call, written once through each path into two empty databases: byte for byte the same."""
    service = cluster.service
    sync_side = CeleryTaskService(settings_at(cluster.redis.url[:-1] + "5"))
    async_side = CeleryTaskService(settings_at(cluster.redis.url[:-1] + "6"))
    try:
        for run_at in (None, datetime.now(UTC) + timedelta(hours=1)):
            prepared = service._prepare(tasks.add.options(unique_key="k", timeout=9), run_at, (1,), {"b": 2})
            call = dataclasses.replace(prepared, headers={"traceparent": "00-ab-cd-01"})
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
            return outcomes, async_connections(client)

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
