"""Tasks run, and their snapshots say what happened, the same way on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taskservice import TaskService, TaskStatus
from taskservice.testing.contract import tasks
from taskservice.testing.contract.gates import Gate
from taskservice.testing.contract.helpers import wait_for_status


def test_sync_task_runs_and_its_result_is_recorded(task_service: TaskService) -> None:
    before = datetime.now(UTC)
    task_id = task_service.enqueue(tasks.add, 2, 3)

    result = task_service.wait(task_id)

    assert result.status == TaskStatus.SUCCEEDED
    assert result.result == 5
    assert result.id == task_id
    assert result.name == "contract.add"
    assert result.attempts == 1
    assert result.error is None and result.traceback is None
    assert result.run_at is None
    assert result.started_at is not None and result.finished_at is not None
    assert before <= result.enqueued_at <= result.started_at <= result.finished_at


def test_async_task_runs(task_service: TaskService) -> None:
    result = task_service.wait(task_service.enqueue(tasks.async_add, 20, 22))
    assert (result.status, result.result, result.attempts) == (TaskStatus.SUCCEEDED, 42, 1)


def test_keyword_arguments_and_task_names(task_service: TaskService) -> None:
    by_name = task_service.enqueue("contract.add", a=1, b=2)
    assert task_service.wait(by_name).result == 3


def test_ids_are_fresh_and_unguessable(task_service: TaskService) -> None:
    ids = {task_service.enqueue(tasks.add, 1, 1) for _ in range(5)}
    assert len(ids) == 5
    assert all(len(task_id) >= 32 for task_id in ids)
    for task_id in ids:
        task_service.wait(task_id)


def test_task_gets_decoded_copies_of_its_arguments(task_service: TaskService) -> None:
    data = {"name": "original"}
    items = [1, 2]
    task_id = task_service.enqueue(tasks.mutate, data, items)

    result = task_service.wait(task_id)

    assert result.result == {"data": {"name": "original", "changed": True}, "items": [1, 2, 99]}
    assert data == {"name": "original"} and items == [1, 2], "the caller's objects must not be touched"


def test_results_come_back_as_json_would_carry_them(task_service: TaskService) -> None:
    result = task_service.wait(task_service.enqueue(tasks.returns_pair))
    assert result.status == TaskStatus.SUCCEEDED
    assert result.result == [1, 2]


def test_a_result_json_cannot_carry_fails_the_task(task_service: TaskService) -> None:
    result = task_service.wait(task_service.enqueue(tasks.returns_object))
    assert result.status == TaskStatus.FAILED
    assert result.error is not None and result.error.startswith("TypeError: ")
    assert "JSON" in result.error


def test_a_task_can_enqueue_another(task_service: TaskService) -> None:
    for parent in (tasks.enqueue_child, tasks.async_enqueue_child):
        parent_result = task_service.wait(task_service.enqueue(parent, 4, 5))
        assert parent_result.status == TaskStatus.SUCCEEDED, parent_result.error
        child = task_service.wait(parent_result.result)
        assert (child.status, child.result) == (TaskStatus.SUCCEEDED, 9)


@pytest.mark.usefixtures("in_background")
def test_tasks_run_concurrently(task_service: TaskService, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    gates = [Gate(tmp_path_factory.mktemp("gate")) for _ in range(2)]
    ids = [
        task_service.enqueue(tasks.wait_for_gate, gates[0].path),
        task_service.enqueue(tasks.async_wait_for_gate, gates[1].path),
    ]
    for gate in gates:
        gate.wait_started()  # both started while neither has finished
    for task_id in ids:
        assert task_service.get_status(task_id).status == TaskStatus.RUNNING
    for gate in gates:
        gate.open()
    assert [task_service.wait(task_id).result for task_id in ids] == ["released", "released"]


@pytest.mark.usefixtures("in_background")
def test_running_task_reports_progress(task_service: TaskService, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    for gated in (tasks.wait_for_gate, tasks.async_wait_for_gate):
        gate = Gate(tmp_path_factory.mktemp("gate"))
        task_id = task_service.enqueue(gated, gate.path, 40, "halfway there")
        gate.wait_started()

        running = wait_for_status(task_service, task_id, TaskStatus.RUNNING)
        assert running.progress == 40
        assert running.progress_message == "halfway there"
        assert running.started_at is not None and running.finished_at is None

        gate.open()
        assert task_service.wait(task_id).status == TaskStatus.SUCCEEDED


def test_recent_tasks_are_listed_newest_first_and_filtered(task_service: TaskService) -> None:
    first = task_service.enqueue(tasks.add, 1, 2)
    task_service.wait(first)
    failed = task_service.enqueue(tasks.fail, "listed")
    task_service.wait(failed)

    recent = [result.id for result in task_service.list_tasks(limit=50)]
    assert recent.index(failed) < recent.index(first)
    only_failed = task_service.list_tasks(status=TaskStatus.FAILED, limit=50)
    assert failed in {result.id for result in only_failed}
    assert all(result.status == TaskStatus.FAILED for result in only_failed)
