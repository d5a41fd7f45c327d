"""unique_key: one active task per key, freed as soon as the task ends, however it ends."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from taskservice import TaskConflict, TaskService, TaskStatus
from taskservice.testing.contract import tasks
from taskservice.testing.contract.gates import Gate


def _key() -> str:
    return f"project:{uuid.uuid4()}"


def _enqueue_when_free(service: TaskService, task: object, *args: object, timeout_s: float = 3.0) -> str:
    """The key must free itself within a second or two of the task ending."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return service.enqueue(task, *args)
        except TaskConflict:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.usefixtures("in_background")
def test_second_enqueue_with_an_active_key_conflicts(task_service: TaskService, tmp_path: Path) -> None:
    key = _key()
    gate = Gate(tmp_path)
    first = task_service.enqueue(tasks.wait_for_gate.options(unique_key=key), gate.path)
    gate.wait_started()

    with pytest.raises(TaskConflict) as caught:
        task_service.enqueue(tasks.add.options(unique_key=key), 1, 2)
    assert caught.value.unique_key == key
    assert task_service.enqueue(tasks.add.options(unique_key=_key()), 1, 2)  # other keys are free

    gate.open()
    assert task_service.wait(first).status == TaskStatus.SUCCEEDED
    again = _enqueue_when_free(task_service, tasks.add.options(unique_key=key), 1, 2)
    assert task_service.wait(again).result == 3


def test_pending_and_scheduled_tasks_hold_their_key(task_service: TaskService) -> None:
    key = _key()
    later = task_service.schedule(tasks.add.options(unique_key=key), timedelta(hours=1), 1, 2)
    with pytest.raises(TaskConflict):
        task_service.enqueue(tasks.add.options(unique_key=key), 1, 2)
    assert task_service.cancel(later) is True
    again = _enqueue_when_free(task_service, tasks.add.options(unique_key=key), 3, 4)
    assert task_service.wait(again).result == 7


def test_key_frees_when_the_task_fails(task_service: TaskService) -> None:
    key = _key()
    failed = task_service.enqueue(tasks.fail.options(unique_key=key), "boom")
    assert task_service.wait(failed).status == TaskStatus.FAILED
    again = _enqueue_when_free(task_service, tasks.add.options(unique_key=key), 1, 1)
    assert task_service.wait(again).status == TaskStatus.SUCCEEDED


def test_key_frees_when_the_task_times_out(task_service: TaskService) -> None:
    key = _key()
    # 2.5 s: an in-process sync body cannot be stopped, so its key stays held until it returns
    timed_out = task_service.enqueue(tasks.sleep_for.options(unique_key=key, timeout=1), 2.5)
    assert task_service.wait(timed_out).status == TaskStatus.FAILED
    again = _enqueue_when_free(task_service, tasks.add.options(unique_key=key), 1, 1)
    assert task_service.wait(again).status == TaskStatus.SUCCEEDED


def test_a_refused_duplicate_leaves_no_task(task_service: TaskService, tmp_path: Path) -> None:
    key = _key()
    gate = Gate(tmp_path)
    first = task_service.enqueue(tasks.wait_for_gate.options(unique_key=key), gate.path)
    before = {result.id for result in task_service.list_tasks(limit=1000)}
    with pytest.raises(TaskConflict):
        task_service.enqueue(tasks.add.options(unique_key=key), 1, 2)
    assert {result.id for result in task_service.list_tasks(limit=1000)} == before
    gate.open()
    task_service.wait(first)
