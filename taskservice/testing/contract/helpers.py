"""Helpers for contract tests: polling a service without sleeping blindly, and capability checks.

A behaviour a backend cannot offer is a declared capability on its class (``runs_in_background``,
``waits_between_retries``, ``cancels_running_tasks``, ...) and the test that needs it is skipped
with that reason, never silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from taskservice import TaskResult, TaskService, TaskStatus
from taskservice.testing.fake import installed_task_service


def wait_until(
    service: TaskService, task_id: str, predicate: Callable[[TaskResult], bool], timeout_s: float = 20.0
) -> TaskResult:
    """Poll until ``predicate`` holds for the task's snapshot; fail with the last snapshot otherwise."""
    deadline = time.monotonic() + timeout_s
    result = service.get_status(task_id)
    while not predicate(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout_s} s; last snapshot: {result!r}")
        time.sleep(0.01)
        result = service.get_status(task_id)
    return result


def wait_for_status(service: TaskService, task_id: str, status: TaskStatus, timeout_s: float = 20.0) -> TaskResult:
    return wait_until(service, task_id, lambda result: result.status == status, timeout_s)


def require(service: TaskService, capability: str) -> None:
    """Skip, saying why, unless the backend declares ``capability`` (a class attribute) true."""
    if not getattr(service, capability, False):
        pytest.skip(f"{type(service).__name__} declares {capability} = False")


@pytest.fixture(autouse=True)
def process_wide_task_service(task_service: TaskService) -> Iterator[TaskService]:
    """The service under test is also ``get_task_service()`` here: the suite's tasks enqueue and read through it."""
    with installed_task_service(task_service):
        yield task_service


@pytest.fixture
def in_background(task_service: TaskService) -> TaskService:
    """The service, for tests that need tasks to run while the test waits (not the fake)."""
    require(task_service, "runs_in_background")
    return task_service
