"""Order: separate enqueues run concurrently; ``after=`` says "B after A", the same way on every backend.
And ``drain()`` waits for all of it, including tasks that tasks enqueue."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from taskservice import TaskConflict, TaskNotFound, TaskService, TaskStatus
from taskservice.attempts import dependency_error
from taskservice.testing.contract import tasks


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.usefixtures("in_background")
def test_separate_enqueues_run_concurrently(task_service: TaskService, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    slow = task_service.enqueue(tasks.append_line, str(out), "first enqueued, slow", 1.0)
    fast = task_service.enqueue(tasks.append_line, str(out), "second enqueued, fast", 0.0)
    task_service.wait(slow)
    task_service.wait(fast)
    assert _lines(out) == ["second enqueued, fast", "first enqueued, slow"], "no order between separate enqueues"


def test_after_runs_b_once_a_succeeded(task_service: TaskService, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    first = task_service.enqueue(tasks.append_line, str(out), "A", 0.5)
    second = task_service.enqueue(tasks.async_append_line.options(after=first), str(out), "B", 0.0)

    b = task_service.wait(second, timeout_s=20)
    a = task_service.get_status(first)

    assert (a.status, b.status) == (TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED)
    assert _lines(out) == ["A", "B"]
    assert a.finished_at is not None and b.started_at is not None and b.started_at >= a.finished_at


def test_a_chain_of_three_runs_in_order(task_service: TaskService, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    previous = None
    ids = []
    for index, delay_s in enumerate((0.4, 0.2, 0.0)):
        step = tasks.append_line if previous is None else tasks.append_line.options(after=previous)
        previous = task_service.enqueue(step, str(out), f"step {index}", delay_s)
        ids.append(previous)
    assert task_service.wait(ids[-1], timeout_s=20).status == TaskStatus.SUCCEEDED
    assert _lines(out) == ["step 0", "step 1", "step 2"]


def test_b_does_not_run_when_a_fails_and_says_why(task_service: TaskService, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    first = task_service.enqueue(tasks.fail, "A broke")
    second = task_service.enqueue(tasks.append_line.options(after=first), str(out), "B", 0.0)

    b = task_service.wait(second, timeout_s=20)

    assert (b.status, b.attempts, b.started_at) == (TaskStatus.FAILED, 0, None)
    assert b.error == dependency_error(first, "failed")
    assert not out.exists(), "B never ran"


def test_b_does_not_run_when_a_is_cancelled(task_service: TaskService, tmp_path: Path) -> None:
    first = task_service.schedule(tasks.add, timedelta(hours=1), 1, 1)
    second = task_service.enqueue(tasks.append_line.options(after=first), str(tmp_path / "out.txt"), "B", 0.0)
    assert task_service.get_status(second).status == TaskStatus.PENDING, "waiting for A"

    assert task_service.cancel(first)
    b = task_service.wait(second, timeout_s=20)
    assert (b.status, b.error) == (TaskStatus.FAILED, dependency_error(first, "cancelled"))


def test_after_a_task_that_already_ended(task_service: TaskService, tmp_path: Path) -> None:
    done = task_service.enqueue(tasks.add, 1, 1)
    task_service.wait(done)
    after_success = task_service.enqueue(tasks.add.options(after=done), 2, 2)
    assert task_service.wait(after_success).result == 4

    failed = task_service.enqueue(tasks.fail, "early")
    task_service.wait(failed)
    after_failure = task_service.enqueue(tasks.add.options(after=failed), 3, 3)
    assert task_service.wait(after_failure).error == dependency_error(failed, "failed")


def test_after_an_unknown_task_is_refused_and_nothing_is_enqueued(task_service: TaskService) -> None:
    before = {r.id for r in task_service.list_tasks(limit=1000)}
    with pytest.raises(TaskNotFound):
        task_service.enqueue(tasks.add.options(after="00000000-0000-0000-0000-000000000000"), 1, 1)
    assert {r.id for r in task_service.list_tasks(limit=1000)} == before


def test_a_waiting_task_holds_its_key_and_can_be_cancelled(task_service: TaskService) -> None:
    key = f"chain:{uuid.uuid4()}"
    first = task_service.schedule(tasks.add, timedelta(hours=1), 1, 1)
    waiting = task_service.enqueue(tasks.add.options(after=first, unique_key=key), 2, 2)
    with pytest.raises(TaskConflict):
        task_service.enqueue(tasks.add.options(unique_key=key), 3, 3)

    assert task_service.cancel(waiting) is True
    assert task_service.get_status(waiting).status == TaskStatus.CANCELLED
    assert task_service.wait(task_service.enqueue(tasks.add.options(unique_key=key), 3, 3)).result == 6
    task_service.cancel(first)


def test_drain_waits_for_tasks_enqueued_by_tasks_and_for_waiting_ones(
    task_service: TaskService, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    parent = task_service.enqueue(tasks.enqueue_child, 20, 22)
    first = task_service.enqueue(tasks.append_line, str(out), "A", 0.3)
    task_service.enqueue(tasks.append_line.options(after=first), str(out), "B", 0.0)

    task_service.drain(timeout_s=30)

    child_id = task_service.get_status(parent).result
    assert task_service.get_status(child_id).status == TaskStatus.SUCCEEDED
    assert _lines(out) == ["A", "B"]


@pytest.mark.usefixtures("in_background")
def test_drain_names_what_is_left_when_it_times_out(task_service: TaskService, tmp_path: Path) -> None:
    slow = task_service.enqueue(tasks.sleep_for, 2)
    with pytest.raises(TimeoutError, match=slow):
        task_service.drain(timeout_s=0.3)
    task_service.drain(timeout_s=30)
    assert task_service.get_status(slow).status == TaskStatus.SUCCEEDED
