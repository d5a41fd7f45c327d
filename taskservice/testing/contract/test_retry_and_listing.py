"""``retry()`` makes a linked copy of a finished task; ``list_tasks`` filters and pages; ``stats`` counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskservice import TaskConflict, TaskNotFound, TaskService, TaskStatus, TaskStillActive
from taskservice.testing.contract import tasks


def test_retry_makes_a_new_task_with_the_same_call_linked_both_ways(task_service: TaskService, tmp_path: Path) -> None:
    once = tasks.flaky.options(max_retries=0, timeout=30)
    failed = task_service.wait(task_service.enqueue(once, str(tmp_path), 1))
    assert failed.status == TaskStatus.FAILED

    retry_id = task_service.retry(failed.id)

    assert retry_id != failed.id
    retried = task_service.wait(retry_id)
    assert (retried.status, retried.result, retried.attempts) == (TaskStatus.SUCCEEDED, 2, 1)
    assert (retried.name, retried.args, retried.kwargs) == (failed.name, failed.args, failed.kwargs)
    assert retried.args == [str(tmp_path), 1]
    assert retried.retry_of == failed.id
    assert task_service.get_status(failed.id).retried_as == [retry_id]
    assert task_service.get_status(failed.id).status == TaskStatus.FAILED, "the original stays as it ended"


def test_a_cancelled_task_can_be_retried_and_each_retry_is_recorded(task_service: TaskService) -> None:
    later = task_service.schedule(tasks.add, timedelta(hours=1), 2, 3)
    assert task_service.cancel(later)

    first = task_service.retry(later)
    assert task_service.wait(first).result == 5
    second = task_service.retry(later)
    assert task_service.wait(second).result == 5
    assert task_service.get_status(later).retried_as == [first, second]


def test_retry_is_refused_for_an_active_or_unknown_task(task_service: TaskService) -> None:
    later = task_service.schedule(tasks.add, timedelta(hours=1), 1, 1)
    with pytest.raises(TaskStillActive, match="still scheduled"):
        task_service.retry(later)
    assert task_service.get_status(later).retried_as == []
    with pytest.raises(TaskNotFound):
        task_service.retry("00000000-0000-0000-0000-000000000000")
    task_service.cancel(later)


def test_a_retry_keeps_the_unique_key_and_its_rules(task_service: TaskService) -> None:
    key = f"retry:{uuid.uuid4()}"
    failed = task_service.wait(task_service.enqueue(tasks.fail.options(unique_key=key), "boom"))
    holder = task_service.schedule(tasks.add.options(unique_key=key), timedelta(hours=1), 1, 1)
    with pytest.raises(TaskConflict):
        task_service.retry(failed.id)
    task_service.cancel(holder)
    again = task_service.wait(task_service.retry(failed.id))
    assert again.error == "ValueError: boom", "the same call, so the same failure"


def test_list_tasks_filters_by_name_and_time_and_pages_with_a_cursor(task_service: TaskService) -> None:
    started = datetime.now(UTC)
    ids = [task_service.enqueue(tasks.echo, index) for index in range(7)]
    for task_id in ids:
        task_service.wait(task_id)
    other = task_service.enqueue(tasks.add, 1, 1)
    task_service.wait(other)

    mine = task_service.list_tasks(name="contract.echo", enqueued_after=started, limit=100)
    assert [r.id for r in mine] == list(reversed(ids)), "newest first, only that task's name, only since then"

    pages: list[str] = []
    cursor: str | None = None
    while True:
        page = task_service.list_tasks(name="contract.echo", enqueued_after=started, limit=3, cursor=cursor)
        pages += [r.id for r in page]
        if len(page) < 3:
            break
        cursor = page[-1].cursor
    assert pages == list(reversed(ids)), "pages cover every task once"

    before_third = task_service.list_tasks(
        name="contract.echo", enqueued_after=started, enqueued_before=mine[4].enqueued_at
    )
    assert [r.id for r in before_third] == [r.id for r in mine[5:]]
    with pytest.raises(ValueError, match="cursor"):
        task_service.list_tasks(cursor="not a cursor")
    with pytest.raises(ValueError, match="naive"):
        task_service.list_tasks(enqueued_after=datetime.now())


def test_stats_count_tasks_by_status(task_service: TaskService) -> None:
    before = task_service.stats()
    later = task_service.schedule(tasks.add, timedelta(hours=1), 1, 1)
    failed = task_service.enqueue(tasks.fail, "counted")
    task_service.wait(failed)

    after = task_service.stats()
    assert set(after.counts) == set(TaskStatus)
    assert after.counts[TaskStatus.SCHEDULED] == before.counts[TaskStatus.SCHEDULED] + 1
    assert after.counts[TaskStatus.FAILED] == before.counts[TaskStatus.FAILED] + 1
    task_service.cancel(later)
    assert task_service.stats().counts[TaskStatus.CANCELLED] == before.counts[TaskStatus.CANCELLED] + 1
