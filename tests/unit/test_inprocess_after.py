"""``after=``: task B waits for task A to end, on both in-process stores (and across a restart with SQLite)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backends.inprocess.service import FastAPITaskService
from taskservice import TaskConflict, TaskNotFound, TaskSettings, TaskStatus, task
from taskservice.attempts import dependency_error
from taskservice.hooks import TaskFinished, on_task_finished, remove_hook
from tests.unit.test_inprocess_lifecycle import wait_for


@task(name="tests.inprocess.after.step")
async def step(seconds: float, fail: bool = False) -> float:
    await asyncio.sleep(seconds)
    if fail:
        raise RuntimeError("this step fails")
    return time.time()


@task(name="tests.inprocess.after.sync_step")
def sync_step(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()


def settings_for(store: str, tmp_path: Path, **overrides: object) -> TaskSettings:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'tasks.db'}"
    return TaskSettings(store_url=url, modules="", shutdown_grace_s=0.5, **overrides)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FastAPITaskService]:
    started = FastAPITaskService(settings_for(request.param, tmp_path))
    yield started
    started.close()


def test_b_runs_once_a_has_succeeded(service: FastAPITaskService) -> None:
    a = service.enqueue(step, 0.3)
    b = service.enqueue(sync_step.options(after=a), 0)
    assert service.get_status(b).status == TaskStatus.PENDING, "waiting is pending"
    first, second = service.wait(a), service.wait(b)
    assert (first.status, second.status) == (TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED)
    assert second.result >= first.result, "B's body ran after A's"
    assert second.attempts == 1


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_b_fails_without_running_when_a_does_not_succeed(
    service: FastAPITaskService, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[TaskFinished] = []
    on_task_finished(finished.append)
    try:
        a = service.enqueue(step, 0.2, True) if how == "failed" else service.schedule(step, timedelta(hours=1), 0)
        b = service.enqueue(step.options(after=a), 0)
        if how == "cancelled":
            assert service.cancel(a) is True
        result = service.wait(b)
    finally:
        remove_hook(finished.append)
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 0)
    assert result.error == dependency_error(a, how)
    assert result.started_at is None and result.finished_at is not None
    hooked = [event for event in finished if event.task_id == b]
    assert [(event.status, event.error) for event in hooked] == [(TaskStatus.FAILED, result.error)]
    logged = [record for record in caplog.records if getattr(record, "task_id", None) == b]
    assert [record.levelno for record in logged] == [logging.ERROR]


def test_an_unknown_dependency_is_refused_and_nothing_is_enqueued(service: FastAPITaskService) -> None:
    before = len(service.list_tasks(limit=1000))
    with pytest.raises(TaskNotFound):
        service.enqueue(step.options(after=str(uuid.uuid4())), 0)
    with pytest.raises(TaskNotFound):
        service.enqueue(step.options(after=str(uuid.uuid4()), unique_key="never-taken"), 0)
    assert len(service.list_tasks(limit=1000)) == before
    service.wait(service.enqueue(step.options(unique_key="never-taken"), 0))  # the key was not taken


def test_a_dependency_that_already_ended_decides_at_once(service: FastAPITaskService) -> None:
    done = service.wait(service.enqueue(step, 0)).id
    broken = service.wait(service.enqueue(step, 0, True)).id
    assert service.wait(service.enqueue(step.options(after=done), 0)).status == TaskStatus.SUCCEEDED
    failed = service.enqueue(step.options(after=broken), 0)
    result = service.get_status(failed)  # decided by the enqueue itself
    assert (result.status, result.error, result.attempts) == (TaskStatus.FAILED, dependency_error(broken, "failed"), 0)


def test_a_waiting_task_holds_its_key_can_be_cancelled_and_is_drained(service: FastAPITaskService) -> None:
    a = service.enqueue(step, 0.5)
    b = service.enqueue(step.options(after=a, unique_key="b-key"), 0)
    with pytest.raises(TaskConflict):
        service.enqueue(step.options(unique_key="b-key"), 0)
    c = service.enqueue(step.options(after=a), 0)
    assert service.cancel(b) is True
    started = time.monotonic()
    service.drain(timeout_s=10)  # waits for A, then for C, which waited on it
    assert time.monotonic() - started >= 0.3
    assert service.get_status(c).status == TaskStatus.SUCCEEDED
    assert service.get_status(b).status == TaskStatus.CANCELLED, "a cancelled waiter never runs"


def test_a_chain_fails_all_the_way_down(service: FastAPITaskService) -> None:
    a = service.enqueue(step, 0.2, True)
    b = service.enqueue(step.options(after=a), 0)
    c = service.enqueue(step.options(after=b), 0)
    assert service.wait(c).error == dependency_error(b, "failed")
    assert service.get_status(b).error == dependency_error(a, "failed")


def test_a_scheduled_waiter_runs_at_its_run_at_when_that_is_later(service: FastAPITaskService) -> None:
    a = service.enqueue(step, 0)
    b = service.schedule(step.options(after=a), timedelta(seconds=0.6), 0)
    assert service.get_status(b).status == TaskStatus.SCHEDULED
    result = service.wait(b)
    assert result.status == TaskStatus.SUCCEEDED
    assert result.run_at is not None and result.started_at is not None and result.started_at >= result.run_at


def test_aenqueue_takes_after_too(service: FastAPITaskService) -> None:
    async def caller() -> tuple[str, str]:
        a = await service.aenqueue(step, 0.1)
        return a, await service.aenqueue(step.options(after=a), 0)

    a, b = asyncio.run(caller())
    assert service.wait(b).status == TaskStatus.SUCCEEDED
    assert service.get_status(b).started_at >= service.get_status(a).finished_at  # type: ignore[operator]


# -- across restarts (SQLite) --------------------------------------------------------------


def test_a_stop_keeps_a_waiting_pair_and_the_next_run_finishes_it(tmp_path: Path) -> None:
    first = FastAPITaskService(settings_for("sqlite", tmp_path, async_concurrency=1))
    blocker = first.enqueue(step, 30)  # the one slot is taken: A stays pending
    a = first.enqueue(step, 0)
    b = first.enqueue(step.options(after=a), 0)
    wait_for(first, blocker, TaskStatus.RUNNING)
    first.close()
    assert [first.get_status(task_id).status for task_id in (a, b)] == [TaskStatus.PENDING] * 2

    second = FastAPITaskService(settings_for("sqlite", tmp_path))
    try:
        assert second.wait(b).status == TaskStatus.SUCCEEDED
        assert second.get_status(a).status == TaskStatus.SUCCEEDED
    finally:
        second.close()


def test_a_waiter_whose_dependency_ended_while_no_process_ran_is_decided_at_the_next_start(tmp_path: Path) -> None:
    first = FastAPITaskService(settings_for("sqlite", tmp_path))
    a = first.schedule(step, timedelta(hours=1), 0)
    b = first.enqueue(step.options(after=a), 0)
    first.close()
    # Another program (or an older taskservice) ends A behind the store's back: nothing decided B.
    conn = sqlite3.connect(tmp_path / "tasks.db")
    conn.execute("UPDATE tasks SET status = 'cancelled', finished_at = 1 WHERE id = ?", (a,))
    conn.commit()
    conn.close()

    second = FastAPITaskService(settings_for("sqlite", tmp_path))
    try:
        result = second.wait(b, timeout_s=5)
    finally:
        second.close()
    assert (result.status, result.error) == (TaskStatus.FAILED, dependency_error(a, "cancelled"))
