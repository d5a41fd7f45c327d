"""schedule() and cancel(): later means later, cancelled means never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskservice import TaskNotFound, TaskService, TaskStatus
from taskservice.testing.contract import tasks
from taskservice.testing.contract.gates import Gate
from taskservice.testing.contract.helpers import wait_for_status


@pytest.mark.usefixtures("in_background")
def test_schedule_with_a_delay_runs_later(task_service: TaskService) -> None:
    task_id = task_service.schedule(tasks.add, timedelta(seconds=1.5), 1, 2)

    scheduled = task_service.get_status(task_id)
    assert scheduled.status == TaskStatus.SCHEDULED
    assert scheduled.run_at is not None and scheduled.started_at is None

    result = task_service.wait(task_id)
    assert (result.status, result.result) == (TaskStatus.SUCCEEDED, 3)
    assert result.started_at is not None and result.started_at >= scheduled.run_at - timedelta(milliseconds=50)


@pytest.mark.usefixtures("in_background")
def test_schedule_at_an_aware_datetime(task_service: TaskService) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    task_id = task_service.schedule(tasks.async_add, run_at, 1, 1)

    result = task_service.wait(task_id)
    assert result.status == TaskStatus.SUCCEEDED
    assert result.run_at is not None and abs((result.run_at - run_at).total_seconds()) < 0.01


def test_schedule_in_the_past_runs_now(task_service: TaskService) -> None:
    task_id = task_service.schedule(tasks.add, datetime.now(UTC) - timedelta(hours=1), 2, 2)
    assert task_service.wait(task_id, timeout_s=10).result == 4


def test_schedule_refuses_a_naive_datetime(task_service: TaskService) -> None:
    before = {result.id for result in task_service.list_tasks(limit=1000)}
    with pytest.raises(ValueError, match="naive"):
        task_service.schedule(tasks.add, datetime.now() + timedelta(minutes=1), 1, 2)
    assert {result.id for result in task_service.list_tasks(limit=1000)} == before


@pytest.mark.usefixtures("in_background")
def test_cancelled_scheduled_task_never_runs(task_service: TaskService, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    task_id = task_service.schedule(tasks.touch, timedelta(seconds=1), str(marker))

    assert task_service.cancel(task_id) is True
    assert task_service.get_status(task_id).status == TaskStatus.CANCELLED

    wait_for_status(task_service, task_service.schedule(tasks.add, timedelta(seconds=1.5), 0, 0), TaskStatus.SUCCEEDED)
    assert not marker.exists(), "a cancelled task ran"
    final = task_service.get_status(task_id)
    assert final.status == TaskStatus.CANCELLED
    assert final.finished_at is not None
    assert task_service.cancel(task_id) is False, "cancelling twice reports nothing new"


def test_far_future_schedule_can_be_cancelled(task_service: TaskService, tmp_path: Path) -> None:
    task_id = task_service.schedule(tasks.touch, timedelta(days=3), str(tmp_path / "ran"))
    assert task_service.get_status(task_id).status == TaskStatus.SCHEDULED
    assert task_service.cancel(task_id) is True
    assert task_service.get_status(task_id).status == TaskStatus.CANCELLED


def test_cancel_of_a_finished_task_returns_false(task_service: TaskService) -> None:
    task_id = task_service.enqueue(tasks.add, 1, 1)
    task_service.wait(task_id)
    assert task_service.cancel(task_id) is False
    assert task_service.get_status(task_id).status == TaskStatus.SUCCEEDED


@pytest.mark.usefixtures("in_background")
def test_cancel_of_a_running_task(task_service: TaskService, tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    task_id = task_service.enqueue(tasks.wait_for_gate, gate.path)
    gate.wait_started()
    try:
        if not task_service.cancels_running_tasks:
            assert task_service.cancel(task_id) is False
            assert task_service.get_status(task_id).status == TaskStatus.RUNNING
        else:
            assert task_service.cancel(task_id) is True
            assert task_service.wait(task_id).status == TaskStatus.CANCELLED
    finally:
        gate.open()
    if not task_service.cancels_running_tasks:
        assert task_service.wait(task_id).status == TaskStatus.SUCCEEDED


def test_unknown_ids_raise_task_not_found(task_service: TaskService) -> None:
    for unknown in ("00000000-0000-0000-0000-000000000000", "not-an-id", ""):
        with pytest.raises(TaskNotFound):
            task_service.get_status(unknown)
        with pytest.raises(TaskNotFound):
            task_service.cancel(unknown)
