"""Failures that must not stop the in-process runner: odd exceptions, outcomes the store cannot write.

On a real SQLite file; every test ends by proving that later tasks still run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.inprocess.runner import UNDECIDED
from backends.inprocess.service import FastAPITaskService
from taskservice import TaskSettings, TaskStatus, task
from taskservice.hooks import TaskFinished, on_task_finished, remove_hook
from tests.unit.test_inprocess_runner import sync_where


class UnprintableError(Exception):
    """An exception whose ``str()`` raises (a buggy ``__str__`` of a library's error)."""

    def __str__(self) -> str:
        raise ValueError("__str__ is broken")


class VeryUnprintableError(Exception):
    """Worse: its ``str()`` raises something that is not even an ``Exception``."""

    def __str__(self) -> str:
        raise KeyboardInterrupt("__str__ is broken")


ERRORS: dict[str, type[Exception]] = {"unprintable": UnprintableError, "very": VeryUnprintableError}


@task(name="tests.inprocess.failures.raise_unprintable")
def raise_unprintable(kind: str) -> None:
    raise ERRORS[kind]()


@task(name="tests.inprocess.failures.async_raise_unprintable")
async def async_raise_unprintable(kind: str) -> None:
    raise ERRORS[kind]()


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FastAPITaskService]:
    monkeypatch.setenv("TASK_THREAD_CONCURRENCY", "2")
    monkeypatch.setenv("TASK_STORE_URL", f"sqlite:///{tmp_path / 'tasks.db'}")
    started = FastAPITaskService(TaskSettings(modules="", shutdown_grace_s=1))
    assert started.settings.thread_concurrency == 2
    yield started
    started.close()


def wait_all(service: FastAPITaskService, ids: list[str], timeout_s: float = 10) -> list[Any]:
    return [service.wait(task_id, timeout_s=timeout_s) for task_id in ids]


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_an_exception_whose_str_raises_fails_its_task_and_later_tasks_still_run(
    service: FastAPITaskService, kind: str
) -> None:
    ids = [service.enqueue(raise_unprintable, kind) for _ in range(2)]  # as many as TASK_THREAD_CONCURRENCY
    ids += [service.enqueue(async_raise_unprintable, kind) for _ in range(2)]
    for result in wait_all(service, ids):
        assert result.status == TaskStatus.FAILED
        assert result.error is not None and result.error.startswith(ERRORS[kind].__name__)
    later = [service.enqueue(sync_where) for _ in range(4)]
    assert [result.status for result in wait_all(service, later)] == [TaskStatus.SUCCEEDED] * 4


def test_when_deciding_an_outcome_itself_raises_the_task_fails_and_frees_its_slot(service: FastAPITaskService) -> None:
    def rude_hook(event: TaskFinished) -> None:
        if event.name == raise_unprintable.name:
            raise SystemExit("a hook that exits")  # hooks' Exceptions are caught; this is not one

    on_task_finished(rude_hook)
    try:
        ids = [service.enqueue(raise_unprintable, "unprintable") for _ in range(2)]
        for result in wait_all(service, ids):
            assert (result.status, result.error) == (TaskStatus.FAILED, UNDECIDED)
    finally:
        remove_hook(rude_hook)
    later = [service.enqueue(sync_where) for _ in range(4)]
    assert [result.status for result in wait_all(service, later)] == [TaskStatus.SUCCEEDED] * 4
