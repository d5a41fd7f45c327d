"""The async verbs give the same results and raise the same errors as the sync ones, on every backend.

Each test drives the service from a fresh event loop (``asyncio.run``), as an async script or an
async test would; inside a FastAPI app the loop is the app's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from taskservice import TaskConflict, TaskNotFound, TaskService, TaskStatus, TaskStillActive
from taskservice.testing.contract import tasks

T = TypeVar("T")


def run(coroutine_function: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coroutine_function()

    return asyncio.run(main())


def test_aenqueue_and_await_result_run_a_task(task_service: TaskService) -> None:
    async def flow() -> Any:
        task_id = await task_service.aenqueue(tasks.add, 2, 3)
        return await task_service.await_result(task_id, timeout_s=20)

    result = run(flow)
    assert (result.status, result.result, result.attempts) == (TaskStatus.SUCCEEDED, 5, 1)
    assert task_service.get_status(result.id) == result, "the same record the sync verbs read"


def test_the_async_verbs_match_the_sync_ones(task_service: TaskService) -> None:
    async def flow() -> dict[str, Any]:
        failed_id = await task_service.aenqueue(tasks.fail, "async boom")
        failed = await task_service.await_result(failed_id, timeout_s=20)
        later_id = await task_service.aschedule(tasks.add, timedelta(hours=1), 1, 1)
        snapshot = await task_service.aget_status(later_id)
        listed = await task_service.alist_tasks(name="contract.fail", limit=5)
        cancelled = await task_service.acancel(later_id)
        again = await task_service.acancel(later_id)
        retried_id = await task_service.aretry(failed_id)
        retried = await task_service.await_result(retried_id, timeout_s=20)
        stats = await task_service.astats()
        return {
            "failed": failed, "snapshot": snapshot, "listed": listed, "cancelled": cancelled, "again": again,
            "retried": retried, "stats": stats, "later_id": later_id,
        }  # fmt: skip

    seen = run(flow)
    assert seen["failed"].error == "ValueError: async boom"
    assert seen["snapshot"].status == TaskStatus.SCHEDULED and seen["snapshot"].run_at is not None
    assert seen["failed"].id in {r.id for r in seen["listed"]}
    assert (seen["cancelled"], seen["again"]) == (True, False)
    assert task_service.get_status(seen["later_id"]).status == TaskStatus.CANCELLED
    assert seen["retried"].retry_of == seen["failed"].id and seen["retried"].error == "ValueError: async boom"
    assert seen["stats"].counts[TaskStatus.CANCELLED] >= 1


def test_async_verbs_refuse_what_the_sync_ones_refuse(task_service: TaskService) -> None:
    key = f"async:{uuid.uuid4()}"

    async def flow() -> None:
        with pytest.raises(TypeError, match=r"argument 'b' of task 'contract.add'"):
            await task_service.aenqueue(tasks.add, 1, {2})
        with pytest.raises(TypeError, match="@task"):
            await task_service.aenqueue(tasks.not_a_task, 1)
        with pytest.raises(ValueError, match="naive"):
            await task_service.aschedule(tasks.add, datetime.now() + timedelta(minutes=1), 1, 2)
        with pytest.raises(TaskNotFound):
            await task_service.aget_status("00000000-0000-0000-0000-000000000000")
        with pytest.raises(TaskNotFound):
            await task_service.acancel("00000000-0000-0000-0000-000000000000")
        holder = await task_service.aschedule(tasks.add.options(unique_key=key), timedelta(hours=1), 1, 1)
        with pytest.raises(TaskConflict):
            await task_service.aenqueue(tasks.add.options(unique_key=key), 1, 1)
        with pytest.raises(TaskStillActive):
            await task_service.aretry(holder)
        await task_service.acancel(holder)

    run(flow)


@pytest.mark.usefixtures("in_background")
def test_await_result_gives_up_after_its_timeout(task_service: TaskService) -> None:
    async def flow() -> None:
        later = await task_service.aschedule(tasks.add, datetime.now(UTC) + timedelta(hours=1), 1, 1)
        try:
            with pytest.raises(TimeoutError, match="still scheduled"):
                await task_service.await_result(later, timeout_s=0.2)
        finally:
            await task_service.acancel(later)

    run(flow)


def test_async_enqueues_from_many_coroutines_at_once(task_service: TaskService) -> None:
    async def flow() -> list[Any]:
        ids = await asyncio.gather(*(task_service.aenqueue(tasks.add, n, n) for n in range(50)))
        return list(await asyncio.gather(*(task_service.await_result(task_id, timeout_s=30) for task_id in ids)))

    results = run(flow)
    assert [r.result for r in results] == [2 * n for n in range(50)]
    assert len({r.id for r in results}) == 50
