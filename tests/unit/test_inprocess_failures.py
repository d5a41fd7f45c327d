"""Failures that must not stop the in-process runner: odd exceptions, outcomes the store cannot write.

On a real SQLite file; every test ends by proving that later tasks still run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.inprocess.runner import UNDECIDED
from backends.inprocess.service import FastAPITaskService
from backends.inprocess.store.base import NOT_STORED
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


# -- outcomes the store refuses ------------------------------------------------------------

REFUSED_RESULT = "the store refuses this result"


@task(name="tests.inprocess.failures.returns")
async def returns(value: str) -> str:
    return value


@task(name="tests.inprocess.failures.sync_returns")
def sync_returns(value: str) -> str:
    return value


def refuse_in_sqlite(path: Path, when: str) -> None:
    """A real trigger in the store's file: SQLite itself refuses the write (as a constraint would)."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse_outcome BEFORE UPDATE OF status ON tasks "
        f"WHEN {when} BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    )
    conn.commit()
    conn.close()


def database_of(service: FastAPITaskService) -> Path:
    assert service.settings.sqlite_path is not None
    return Path(service.settings.sqlite_path)


def test_an_outcome_the_store_refuses_is_recorded_failed_and_the_others_are_recorded(
    service: FastAPITaskService,
) -> None:
    service.wait(service.enqueue(sync_where))  # the file exists, the run has begun
    refuse_in_sqlite(database_of(service), f"NEW.result = '\"{REFUSED_RESULT}\"'")
    values = [f"fine {index}" for index in range(40)]
    values[7] = values[23] = REFUSED_RESULT
    ids = [service.enqueue(returns.options(unique_key=f"key-{index}"), value) for index, value in enumerate(values)]
    ids += [service.enqueue(sync_returns, REFUSED_RESULT), service.enqueue(sync_returns, "fine sync")]
    results = wait_all(service, ids)
    for result, value in zip(results, [*values, REFUSED_RESULT, "fine sync"], strict=True):
        if value == REFUSED_RESULT:
            assert result.status == TaskStatus.FAILED and result.result is None
            assert result.error is not None and result.error.startswith(NOT_STORED), result.error
            assert "refused by a trigger" in result.error
        else:
            assert (result.status, result.result) == (TaskStatus.SUCCEEDED, value), "one refusal sinks nothing else"
    again = [service.enqueue(returns.options(unique_key=f"key-{index}"), "again") for index in range(40)]
    assert all(result.status == TaskStatus.SUCCEEDED for result in wait_all(service, again)), "every key is free"


def test_a_task_whose_every_outcome_is_refused_blocks_nothing(service: FastAPITaskService) -> None:
    service.wait(service.enqueue(sync_where))
    refuse_in_sqlite(database_of(service), f"OLD.name = '{sync_returns.name}' AND NEW.status <> 'running'")
    stuck = service.enqueue(sync_returns, "never recorded")
    fine = [service.enqueue(returns, f"fine {index}") for index in range(10)]
    fine += [service.enqueue(sync_where) for _ in range(4)]  # TASK_THREAD_CONCURRENCY=2: threads are not held
    assert all(result.status == TaskStatus.SUCCEEDED for result in wait_all(service, fine))
    time.sleep(0.3)
    assert service.get_status(stuck).status == TaskStatus.RUNNING, "its record is left as it was"
    service.drain(timeout_s=5)  # and it does not keep drain() waiting


@task(name="tests.inprocess.failures.returns_and_counts")
async def returns_and_counts(value: str, counter: str) -> str:
    with open(counter, "a") as out:
        out.write("x")
    return value


def test_at_a_stop_the_outcomes_are_recorded_not_interrupted(tmp_path: Path) -> None:
    service = FastAPITaskService(
        TaskSettings(store_url=f"sqlite:///{tmp_path / 'tasks.db'}", modules="", shutdown_grace_s=1)
    )
    service.wait(service.enqueue(sync_where))
    refuse_in_sqlite(database_of(service), f"NEW.result = '\"{REFUSED_RESULT}\"'")
    counter = tmp_path / "ran"
    ids = [
        service.enqueue(returns_and_counts, REFUSED_RESULT if index == 3 else "fine", str(counter))
        for index in range(20)
    ]
    deadline = time.monotonic() + 10
    while not counter.exists() or len(counter.read_text()) < 20:  # every body has returned
        assert time.monotonic() < deadline
        time.sleep(0.001)
    service.close()  # at once: some outcomes are still on their way to the store
    results = [service.get_status(task_id) for task_id in ids]
    assert [result.status for result in results].count(TaskStatus.SUCCEEDED) == 19, [r.error for r in results]
    assert results[3].error is not None and results[3].error.startswith(NOT_STORED)


def test_a_claim_the_store_refuses_does_not_stop_the_others(service: FastAPITaskService) -> None:
    service.wait(service.enqueue(sync_where))
    refuse_in_sqlite(database_of(service), f"NEW.status = 'running' AND OLD.name = '{sync_returns.name}'")
    never = service.enqueue(sync_returns, "cannot start")
    fine = [service.enqueue(returns, f"fine {index}") for index in range(10)]
    assert all(result.status == TaskStatus.SUCCEEDED for result in wait_all(service, fine))
    assert service.get_status(never).status == TaskStatus.PENDING
